"""Memory flat in the number of connections (issue 14): rows of ended connections wait on disk
(``report.rows``), the 4-tuples of ended connections are forgotten (``flows.TupleTable.forget``), the
retransmissions and events tables are built a part at a time (``table.LazyRows``), and none of it
changes a byte of the tables."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analyzer
from analyzer import schema
from analyzer.report import rows as rows_module
from analyzer.report.rows import DiskSink
from analyzer.table import LazyRows
from analyzer.tcp import Engine
from analyzer.tcp import engine as engine_module
from analyzer.tcp.engine import TIME_WAIT, RowSink
from analyzer.tcp.flows import TupleTable
from tests.tcpbuild import MS, Capture
from tests.test_engine_batches import tables_equal
from tests.test_engine_expiry import closed_connection

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "captures" / "real"
REAL_CAPTURES = sorted(p for p in REAL.glob("*.pcap*")) if REAL.is_dir() else []


def _write_all(report, folder: Path, fmt: str) -> dict[str, bytes]:
    report.write(folder, format=fmt)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---- the row sink on disk ----------------------------------------------------------------------------
@pytest.fixture
def tiny_buckets(monkeypatch):
    """Buckets of 3 streams, flushed every 2 rows: every table spans many buckets and pieces, and rows of
    one bucket arrive out of order."""
    monkeypatch.setattr(rows_module, "BUCKET", 3)
    monkeypatch.setattr(rows_module, "FLUSH_ROWS", 2)
    monkeypatch.setattr(rows_module, "HELD_ROWS", 5)
    monkeypatch.setattr(LazyRows, "ROWS", 7)


@pytest.mark.skipif(not REAL_CAPTURES, reason="the shared real captures are not here")
@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_tables_on_disk_equal_the_tables_in_memory(tmp_path, tiny_buckets, monkeypatch, fmt):
    """Every real capture: the files written from the disk sink (tiny buckets, lazily built tables) are
    byte for byte those of the engine's in-memory sink (Parquet: the same values; its row groups follow
    the chunks)."""
    for capture in REAL_CAPTURES[::3]:
        on_disk = analyzer.analyze(capture)
        monkeypatch.setattr(analyzer.report.pipeline, "DiskSink", lambda columns: RowSink())
        in_memory = analyzer.analyze(capture)
        monkeypatch.undo()
        monkeypatch.setattr(rows_module, "BUCKET", 3)
        monkeypatch.setattr(rows_module, "FLUSH_ROWS", 2)
        monkeypatch.setattr(rows_module, "HELD_ROWS", 5)
        monkeypatch.setattr(LazyRows, "ROWS", 7)
        assert type(on_disk._tables["connections"]).__name__ == "SpilledTable"
        a = _write_all(on_disk, tmp_path / "disk" / capture.name, fmt)
        b = _write_all(in_memory, tmp_path / "memory" / capture.name, fmt)
        assert a.keys() == b.keys()
        for name in a:
            if fmt == "parquet":
                pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "disk" / capture.name / name),
                                              pd.read_parquet(tmp_path / "memory" / capture.name / name))
            else:
                assert a[name] == b[name], (capture.name, name)
        assert on_disk.summary() == in_memory.summary()
        assert on_disk.stats == in_memory.stats


def test_spilled_table_reads_in_stream_order(tmp_path, tiny_buckets):
    """Rows given out of stream order, across buckets: ``chunks``, ``values`` (numbers, nullable numbers,
    text) and ``to_pandas`` all give them sorted by stream, the same as the table in memory."""
    rng = np.random.default_rng(7)
    n = 40
    sink = DiskSink((schema.CONNECTION_COLUMNS, schema.HANDSHAKE_COLUMNS))
    # real rows to shuffle: a built capture's connections and handshakes
    cap = Capture()
    for k in range(n):
        f = cap.flow(cport=20000 + k)
        f.handshake(dt=MS)
        if k % 3:
            f.c("PA", 10 + k, dt=MS); f.s("A", dt=MS)
        if k % 4:
            f.close()
    tables = analyzer.tcp.analyze_batches([cap.packets(tmp_path)])
    conns, hs = tables.raw["connections"], tables.raw["handshakes"]  # (the in-memory sink)
    order = rng.permutation(n)
    for part in np.array_split(order, 9):  # groups in stream order inside, not across
        part = np.sort(part)
        sink.add(_rows(conns, part), _rows(hs, part))
    got_c, got_h = sink.tables()
    assert len(got_c) == n and len(got_h) == n
    for got, want in ((got_c, conns), (got_h, hs)):
        assert got.values("stream").tolist() == list(range(n))
        for c in want.columns:
            a, b = got.values(c.name), want.values(c.name)
            assert len(a) == len(b)
            assert pd.Series(a).equals(pd.Series(b)), c.name
        pd.testing.assert_frame_equal(got.to_pandas(), want.to_pandas())
        assert sum(len(chunk) for chunk in got.chunks()) == n


def _rows(table, idx):
    return table.take(idx)


def test_no_path_for_the_rows_file(tmp_path):
    """The rows wait in a file with no name (nothing another user could plant or redirect) that is gone
    with the process."""
    sink = DiskSink((schema.CONNECTION_COLUMNS, schema.HANDSHAKE_COLUMNS))
    fd = sink._spill._file.fileno()
    target = os.readlink(f"/proc/self/fd/{fd}")
    assert "(deleted)" in target or not Path(target).exists()


def test_no_room_for_the_rows_is_one_line(tmp_path, monkeypatch, capsys):
    """A temporary folder that is full or cannot be written: one line naming it, exit 1, no traceback."""
    import errno
    import tempfile
    from types import SimpleNamespace

    from analyzer.commands.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rows_module, "tempfile", SimpleNamespace(TemporaryFile=full, gettempdir=tempfile.gettempdir))
    code = main(["analyze", str(ROOT / "captures" / "demo.pcap"), "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "temporary file" in err and "No space left on device" in err
    assert "Traceback" not in err


# ---- the 4-tuple table ---------------------------------------------------------------------------------
def test_forgotten_tuples_leave_the_table_and_their_ids_are_reused():
    """Random adds and forgets against a dict: ids stay those of the pairs held, a forgotten pair that
    comes back gets an id again (one given back first), and the table holds only the pairs in use."""
    rng = np.random.default_rng(3)
    table = TupleTable()
    held: dict[tuple[int, int], int] = {}
    most = 0
    for round_ in range(60):
        n = int(rng.integers(1, 400))
        ports = rng.integers(1, 3000, size=n)
        other = rng.integers(1, 50, size=n)
        codes = np.zeros(n, dtype=np.int32)
        src = _codes(["10.0.0.1"], codes)
        dst = _codes(["10.0.0.2"], codes)
        ids, is_lo = table.assign(src, ports.astype(np.uint16), dst, other.astype(np.uint16))
        for p, q, t in zip(ports.tolist(), other.tolist(), ids.tolist()):
            key = (p, q)
            if key in held:
                assert held[key] == t
            else:
                assert t not in held.values()
                held[key] = t
        most = max(most, len(held))
        forget = [k for k in held if rng.random() < 0.5]
        table.forget(np.array([held.pop(k) for k in forget], dtype=np.int64))
        assert int(table._count[2]) == len(held)
        assert len(table) == most  # ids reused: as many as pairs held at once, not one per pair ever seen
    # what is held still maps to the same ids
    keys = list(held)
    src = _codes(["10.0.0.1"], np.zeros(len(keys), dtype=np.int32))
    dst = _codes(["10.0.0.2"], np.zeros(len(keys), dtype=np.int32))
    ids, _ = table.assign(src, np.array([k[0] for k in keys], np.uint16), dst, np.array([k[1] for k in keys], np.uint16))
    assert ids.tolist() == [held[k] for k in keys]


def _codes(categories, codes):
    return pd.Categorical.from_codes(codes, categories=categories)


def _straggler_capture(gap: float) -> Capture:
    """A connection closes; ``gap`` seconds after its last packet a stray ACK on its 4-tuple comes."""
    cap = Capture()
    a = closed_connection(cap)
    other = cap.flow(cport=42000)  # traffic in between, so the end is seen at a batch boundary
    other.handshake(dt=10.0)
    other.close()
    a.c("A", dt=gap - 10.0, seq=502, ack=None, advance=False)
    return cap


@pytest.mark.parametrize("gap, late", [(30.0, True), (5.0 + TIME_WAIT + 20.0, False)])
def test_a_straggler_is_late_within_time_wait_and_a_new_connection_after(tmp_path, gap, late):
    """Within TIME_WAIT after its connection ended, a stray packet is counted late under the old stream;
    after it, the 4-tuple is free (forgotten) and the packet opens a new connection, as in Zeek. The same
    whatever the batches."""
    df = _straggler_capture(gap).packets(tmp_path)
    results = []
    for size in (len(df), 1, 3):
        engine = Engine()
        got = [engine.feed(df.iloc[i:i + size]).streams.copy() for i in range(0, len(df), size)]
        tables = engine.finish()
        results.append((np.concatenate(got).tolist(), tables))
        assert tables.stats["late_packets"] == (1 if late else 0)
        assert len(tables.connections) == (2 if late else 3)
        assert np.concatenate(got)[-1] == (0 if late else 2)
    for streams, tables in results[1:]:
        assert streams == results[0][0]
        tables_equal(tables, results[0][1])


def test_the_tuple_table_holds_the_connections_in_use(tmp_path, monkeypatch):
    """3,000 short connections one after another over 40 minutes: the tuple table holds those of the last
    TIME_WAIT only (and of the ended connections waiting to be freed, at most RETIRE_AT, 50 here); the
    tables are those of a run that forgets nothing (the gaps are long: no straggler)."""
    monkeypatch.setattr(engine_module, "RETIRE_AT", 50)
    cap = Capture()
    for k in range(3000):
        f = cap.flow(cport=10000 + k)
        f.handshake(dt=0.8)
        f.c("PA", 100, dt=MS); f.s("A", dt=MS)
        f.close()
    df = cap.packets(tmp_path)
    engine = Engine()
    for i in range(0, len(df), 500):
        engine.feed(df.iloc[i:i + 500])
    held = int(engine._tuples._count[2])
    assert held < 200  # ~ (5 s + 60 s) / 0.8 s + 50, not 3,000
    assert len(engine._tuples) < 400  # ids given back are reused
    tables = engine.finish()
    assert len(tables.connections) == 3000
    assert (tables.connections.handshake == "established").all()
    assert tables.connections.client_port.tolist() == list(range(10000, 13000))


# ---- peak memory, measured in a child process ------------------------------------------------------------
def _peak_rss_mb(capture: Path, out: Path) -> tuple[float, dict]:
    code = ("import sys, json, analyzer, analyzer.tcp.engine as engine\n"
            "engine.TIME_WAIT = 1.0\n"  # (a steady state within the first seconds of the capture)
            "r = analyzer.analyze(sys.argv[1], close_delay=0.5); r.write(sys.argv[2]); s = r.summary()\n"
            "hwm = [int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')][0]\n"
            "print(json.dumps({'hwm_kb': hwm, 'connections': s['connections'], 'handshakes': s['handshakes']}))\n")
    done = subprocess.run([sys.executable, "-c", code, str(capture), str(out)], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return got["hwm_kb"] / 1024, got


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS read from /proc")
def test_peak_memory_does_not_follow_the_connection_count(tmp_path):
    """Many short connections (benchmarks/many.py, ~3,900 a second, ~400 open at once), 100k against 300k:
    three times the connections, the same peak memory give or take; every handshake established. (A close
    delay of 0.5 s and a TIME_WAIT of 1 s, so that both runs reach the steady state of what is kept for
    ended connections in their first seconds; with the defaults, that takes 65 s of traffic: benchmarks/
    scale.py measures 200k against 2M connections.)"""
    many = ROOT / "benchmarks" / "many.py"
    peaks = {}
    for n in (100_000, 300_000):
        capture = tmp_path / f"many-{n}.pcap"
        subprocess.run([sys.executable, str(many), "--connections", str(n), "--seed", "1", "-o", str(capture)],
                       check=True, cwd=ROOT, capture_output=True)
        peaks[n], got = _peak_rss_mb(capture, tmp_path / f"out-{n}")
        assert got["connections"] == n and got["handshakes"] == {"established": n}
    assert peaks[300_000] < peaks[100_000] + 15, peaks  # (before: 7 KB a connection, +1.4 GB)
