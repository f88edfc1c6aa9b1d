"""The fast analyze path: raw tables and their CSV, no pandas, quick kernel loads, recycled stores, pend pool.

``analyze`` builds its tables as numpy columns (``analyzer.table.Table``) and writes CSV from Arrow buffers;
these tests check that every route gives the same bytes and values as the DataFrame route, that the route
really avoids pandas and numba's context refresh, and that the engine's memory-saving pools change nothing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import analyzer
from analyzer import schema
from analyzer.decode import PacketReader
from analyzer.report import Report, summarise
from analyzer.report.writers import _write_csv
from analyzer.table import Masked, Table, _arrow_strings
from analyzer.tcp import Engine

from .synthetic_tcp import lossy_upload
from .tcpbuild import MS, Capture

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "captures" / "demo.pcap"
REAL = ROOT.parent / "shared" / "captures" / "real"
CLI = Path(sys.executable).with_name("tcp-analyzer")
MIXED = (schema.Column("n", "int64", ""), schema.Column("i", "Int64", ""), schema.Column("f", "float64", ""),
         schema.Column("g", "Float64", ""), schema.Column("b", "bool", ""), schema.Column("nb", "boolean", ""),
         schema.Column("s", "str", ""), schema.Column("u", "uint16", ""))


def _mixed(n_missing: bool = True) -> Table:
    m = np.array([False, True, False, False]) if n_missing else np.zeros(4, dtype=bool)
    return Table(MIXED, {
        "n": np.array([1, -2, 3, 2**40]), "i": Masked(np.array([5, 0, -7, 9]), m),
        "f": np.array([0.5, np.nan, 1e-05, 1795709895.11625]), "g": Masked(np.array([0.000027711, 0.0, 2.5, 3.0]), m),
        "b": np.array([True, False, True, False]), "nb": Masked(np.array([True, False, False, True]), m),
        "s": np.array(["plain", "12 µs, \"quoted\", comma", None, ""], dtype=object),
        "u": np.array([0, 65535, 80, 443], dtype=np.uint16)})


@pytest.mark.parametrize("missing", [True, False])
def test_raw_table_csv_equals_the_dataframe_csv(tmp_path, missing):
    """The Arrow-buffer CSV of a raw table is byte for byte the CSV written from its DataFrame."""
    t = _mixed(missing)
    _write_csv(t, tmp_path / "raw.csv")
    _write_csv(t.to_pandas(), tmp_path / "df.csv")
    raw = (tmp_path / "raw.csv").read_bytes()
    assert raw == (tmp_path / "df.csv").read_bytes()
    assert raw.splitlines()[0] == b"n,i,f,g,b,nb,s,u"
    assert b"12 \xc2\xb5s" in raw  # UTF-8


def test_to_pandas_has_the_declared_dtypes_and_missing_values():
    df = _mixed().to_pandas()
    assert [str(t) for t in df.dtypes] == ["int64", "Int64", "float64", "Float64", "bool", "boolean", "object",
                                           "uint16"]
    assert df["i"].isna().tolist() == [False, True, False, False]
    assert df["nb"].isna().tolist() == [False, True, False, False]
    assert df["s"].tolist()[2] is None


def test_arrow_strings_match_pyarrow():
    cases = [["a", "bc", ""], ["µs", None, "x"], [], [None, None], ["é" * 1000, "plain"]]
    for values in cases:
        got = _arrow_strings(np.array(values, dtype=object))
        assert got.equals(pa.array(values, type=pa.string())), values
        assert got.null_count == sum(v is None for v in values)


def test_empty_tables_write_a_header_only(tmp_path):
    for cols in (schema.CONNECTION_COLUMNS, schema.HANDSHAKE_COLUMNS, schema.RETRANSMISSION_COLUMNS):
        _write_csv(Table.empty(cols), tmp_path / "t.csv")
        assert (tmp_path / "t.csv").read_text() == ",".join(c.name for c in cols) + "\n"
        assert list(Table.empty(cols).to_pandas().columns) == [c.name for c in cols]


def test_report_from_raw_tables_equals_report_from_dataframes(tmp_path):
    """Summary and CSV files are the same whether the report holds raw tables or DataFrames."""
    raw = analyzer.analyze(str(DEMO))
    frames = Report(raw.capture, raw.connections, raw.handshakes, raw.retransmissions, raw.stats, events=raw.events)
    again = analyzer.analyze(str(DEMO))
    assert summarise(again) == summarise(frames)
    assert summarise(again)["retransmissions"] == {"retransmission": 6, "syn_retransmission": 4}
    again.write(tmp_path / "raw")
    frames.write(tmp_path / "df")
    for name in ("connections", "handshakes", "retransmissions", "events"):
        assert (tmp_path / "raw" / f"{name}.csv").read_bytes() == (tmp_path / "df" / f"{name}.csv").read_bytes()


def test_report_tables_can_be_replaced():
    r = analyzer.analyze(str(DEMO))
    r.retransmissions = r.retransmissions.iloc[:2]
    assert len(r.retransmissions) == 2 and summarise(r)["retransmissions"] == {"retransmission": 2}
    r.packets = pd.DataFrame({"frame": [1]})
    assert r.packets is not None
    r.packets = None
    assert r.packets is None and "packets" not in r.tables()


def _run(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_analyze_command_runs_without_pandas_and_without_numba_refresh(tmp_path):
    """The analyze path imports neither pandas nor numba's lowering tables (imported by its context refresh)."""
    code = (f"import sys; from analyzer.commands.cli import main; code = main(['analyze', {str(DEMO)!r}, '-o', {str(tmp_path)!r}]);"
            "print('pandas' in sys.modules, 'numba.cpython.unicode' in sys.modules, code)")
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-3:] == ["False", "False", "0"], out.stdout
    assert "Tables written to" in out.stdout


def test_full_numba_load_gives_the_same_files(tmp_path):
    """Kernels loaded numba's normal way (context refresh) give byte-identical tables."""
    outs = {}
    for mode, env in (("quick", {}), ("full", {"TCP_ANALYZER_NUMBA_FULL_LOAD": "1"})):
        dest = tmp_path / mode
        code = (f"import sys; from analyzer.commands.cli import main; main(['analyze', '-q', {str(DEMO)!r}, '-o', {str(dest)!r}]);"
                "print('numba.cpython.unicode' in sys.modules)")
        out = _run(code, env)
        assert out.returncode == 0, out.stderr
        outs[mode] = out.stdout.split()[-1]
        for name in ("connections", "handshakes", "retransmissions"):
            assert (dest / f"{name}.csv").exists()
    assert outs == {"quick": "False", "full": "True"}  # the full load did refresh numba's context
    for name in ("connections", "handshakes", "retransmissions"):
        assert (tmp_path / "quick" / f"{name}.csv").read_bytes() == (tmp_path / "full" / f"{name}.csv").read_bytes()


@pytest.mark.skipif(not CLI.exists(), reason=f"console script not installed next to {sys.executable}")
def test_console_script_prints_everything_before_its_quick_exit(tmp_path):
    out = subprocess.run([str(CLI), "analyze", str(DEMO), "-o", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Handshakes" in out.stdout and out.stdout.rstrip().endswith(f"Tables written to {tmp_path}/")
    bad = subprocess.run([str(CLI), "analyze", str(tmp_path / "missing.pcap"), "-o", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "cannot open" in bad.stderr


def test_recycled_stores_are_reused_and_give_the_same_tables(tmp_path):
    path = tmp_path / "lossy.pcap"
    lossy_upload(path, streams=2)
    seen = []
    for store in PacketReader(str(path), batch_size=3).stores(recycle=2):
        seen.append(id(store))
    assert len(seen) > 4 and len(set(seen)) == 2  # two stores, filled in turn
    want = analyzer.analyze(str(path), batch_size=10**6)
    for size in (1, 3, 7):
        got = analyzer.analyze(str(path), batch_size=size)
        for name in ("connections", "handshakes", "retransmissions"):
            pd.testing.assert_frame_equal(getattr(got, name), getattr(want, name))


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent: the shared real captures live outside the repo")
@pytest.mark.parametrize("name", ["cs_tcp_retransmissions.pcapng", "ndpi_skype.pcap", "zeek_ftp-ipv6.pcap"])
def test_small_batches_equal_one_batch_on_real_captures(name):
    want = analyzer.analyze(str(REAL / name), batch_size=10**7)
    got = analyzer.analyze(str(REAL / name), batch_size=5)
    assert len(want.connections) > 0
    for table in ("connections", "handshakes", "retransmissions"):
        pd.testing.assert_frame_equal(getattr(got, table), getattr(want, table))


def _dsack_flow(cap: Capture, cport: int, answer: bool) -> None:
    """A handshake, two segments, a resend of the first; with ``answer``, the peer's D-SACK for it."""
    f = cap.flow(cport=cport)
    f.handshake(dt=MS)
    f.c("PA", 1000, dt=MS)
    f.c("PA", 1000, dt=MS)
    f.c("PA", 1000, dt=0.3, seq=1, advance=False)
    isn = f.ends["c"][2]
    if answer:
        f.s("A", dt=MS, ack=2001, options=[("NOP", None), ("NOP", None), ("SAck", (isn + 1, isn + 1001))])
    else:
        f.s("A", dt=MS, ack=2001)
    f.close()


def test_pend_pool_rows_go_back_to_the_pool_and_are_lent_again(tmp_path):
    """A D-SACK settles the only pending resend of a direction: its pool row is free for the next
    connection. A resend no evidence settles keeps its row."""
    cap = Capture()
    _dsack_flow(cap, 40001, answer=True)
    _dsack_flow(cap, 40002, answer=True)
    _dsack_flow(cap, 40003, answer=False)
    _dsack_flow(cap, 40004, answer=True)
    df = cap.packets(tmp_path)
    for size in (len(df), 4, 1):
        engine = Engine()
        for i in range(0, len(df), size):
            engine.feed(df.iloc[i:i + size])
        count = engine._state.count
        # rows lent: 0 (flow 1, returned), 0 again (flow 2, returned), 0 (flow 3, kept), 1 (flow 4, returned)
        assert int(count["pend_rows"]) == 2
        assert int(count["pend_free"]) == 1 and int(count["pending"]) == 1
        kinds = engine.finish().retransmissions.set_index("stream")["kind"].to_dict()
        assert kinds == {0: "spurious_retransmission", 1: "spurious_retransmission", 2: "retransmission",
                         3: "spurious_retransmission"}
