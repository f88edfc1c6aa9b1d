"""Both engines' packet tables against tshark's ground truth, frame by frame, on the real captures.

The captures and their truth live outside the repository, in ``../shared/captures/real`` (see its
README: 28 captures written by other people; ``truth/<capture>.csv`` made by ``shared/tools/truth.sh``
with TShark 4.0.17: one row per frame with a TCP header, TCP headers quoted in ICMP errors left out).
A fresh clone has no ``../shared``: the whole module is skipped then, and says so.

For every capture and each engine (``native``: ``analyzer.read_packets(path)``; ``pyshark``:
``analyzer.read_packets(path, engine="pyshark")``, i.e. tshark's dissectors through pyshark):

- the table has exactly one row per truth row, in the same frame order;
- frame, sport, dport, seq_raw, ack_raw, flags, payload_len, window, src and dst equal tshark's
  frame.number, tcp.srcport, tcp.dstport, tcp.seq_raw, tcp.ack_raw, tcp.flags, tcp.len,
  tcp.window_size_value and ip.src/ipv6.src, ip.dst/ipv6.dst (``hdr_multi`` is 0 in this corpus, so the
  truth's innermost address is the only one);
- ts_ns, caplen and wirelen equal frame.time_epoch (exact to the ns), frame.cap_len and frame.len.

The pyshark cases need tshark; without it they skip, naming the fix. They take about 8 s for the 28
captures on a 2-core machine (tshark's start-up, ~0.2 s a file, is most of it).
"""
from __future__ import annotations

import ipaddress
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analyzer
from analyzer import schema
from analyzer.errors import AnalyzerError, EngineUnavailable

REPO = Path(__file__).resolve().parent.parent
REAL = REPO.parent / "shared" / "captures" / "real"
TRUTH = REAL / "truth"

if not TRUTH.is_dir():
    pytest.skip(f"real captures and tshark truth not found at {REAL} (they live outside the repository, "
                "in ../shared/captures/real); skipping the comparison with tshark",
                allow_module_level=True)

CAPTURES = sorted(p for p in REAL.iterdir()
                  if p.is_file() and p.name != "README.md" and not p.name.startswith("."))

# packet-table column -> truth CSV column
COMPARED = {
    "frame": "frame.number",
    "sport": "tcp.srcport",
    "dport": "tcp.dstport",
    "seq_raw": "tcp.seq_raw",
    "ack_raw": "tcp.ack_raw",
    "flags": "tcp.flags",
    "payload_len": "tcp.len",
    "window": "tcp.window_size_value",
    "src": "src",
    "dst": "dst",
}

ENGINES = ["native", pytest.param("pyshark", marks=pytest.mark.tshark)]

_tables: dict[tuple[str, str], pd.DataFrame] = {}


def _read_pyshark(path: str) -> pd.DataFrame:
    try:
        return analyzer.read_packets(path, engine="pyshark")
    except EngineUnavailable:
        raise
    except (TypeError, AnalyzerError) as exc:
        if "engine" not in str(exc):  # a real failure, not "this engine is not wired in yet"
            raise
    from analyzer.decode.tshark import read_packets_pyshark

    return read_packets_pyshark(path)


def table(engine: str, capture: Path) -> pd.DataFrame:
    """The engine's packet table for a capture, read once per test session."""
    key = (engine, capture.name)
    if key not in _tables:
        try:
            if engine == "native":
                _tables[key] = analyzer.read_packets(str(capture))
            else:
                _tables[key] = _read_pyshark(str(capture))
        except EngineUnavailable as exc:
            pytest.skip(f"{engine} engine unavailable here: {exc}")
    return _tables[key]


def _addr(text: str) -> str:
    return str(ipaddress.ip_address(text)) if text else ""


def _epoch_ns(text: str) -> int:
    return int(Decimal(text).scaleb(9))


_truth: dict[str, pd.DataFrame] = {}


def truth(capture: Path) -> pd.DataFrame:
    if capture.name not in _truth:
        t = pd.read_csv(TRUTH / f"{capture.name}.csv", dtype=str, keep_default_na=False)
        out = pd.DataFrame({
            "frame": t["frame.number"].astype(np.int64),
            "sport": t["tcp.srcport"].astype(np.int64),
            "dport": t["tcp.dstport"].astype(np.int64),
            "seq_raw": t["tcp.seq_raw"].astype(np.int64),
            "ack_raw": t["tcp.ack_raw"].astype(np.int64),
            "flags": t["tcp.flags"].map(lambda s: int(s, 16)).astype(np.int64),
            "payload_len": t["tcp.len"].astype(np.int64),
            "window": t["tcp.window_size_value"].astype(np.int64),
            # innermost address: IPv6 where the frame has one (no tunnels in this corpus: hdr_multi 0)
            "src": [_addr(v6 or v4) for v4, v6 in zip(t["ip.src"], t["ipv6.src"])],
            "dst": [_addr(v6 or v4) for v4, v6 in zip(t["ip.dst"], t["ipv6.dst"])],
            "ts_ns": t["frame.time_epoch"].map(_epoch_ns).astype(np.int64),
            "caplen": t["frame.cap_len"].astype(np.int64),
            "wirelen": t["frame.len"].astype(np.int64),
            "hdr_multi": t["hdr_multi"].astype(np.int64),
        })
        _truth[capture.name] = out
    return _truth[capture.name]


def _mismatches(got: pd.DataFrame, want: pd.DataFrame, columns: list[str], limit: int = 8) -> list[str]:
    out = []
    for col in columns:
        if col in ("src", "dst"):
            g = got[col].astype(str).to_numpy()
            w = want[col].to_numpy(dtype=object).astype(str)
        else:
            g = got[col].to_numpy().astype(np.int64)
            w = want[col].to_numpy().astype(np.int64)
        bad = np.flatnonzero(g != w)
        if len(bad):
            frames = want["frame"].to_numpy()
            shown = ", ".join(f"frame {frames[i]}: {g[i]} (tshark {w[i]})" for i in bad[:limit])
            out.append(f"{col}: {len(bad)} of {len(w)} rows differ; {shown}")
    return out


def _check_rows(df: pd.DataFrame, t: pd.DataFrame, engine: str) -> None:
    if len(df) != len(t) or not np.array_equal(df["frame"].to_numpy(np.int64), t["frame"].to_numpy()):
        got, want = set(df["frame"].tolist()), set(t["frame"].tolist())
        pytest.fail(f"{engine}: {len(df)} rows, tshark {len(t)}; frames only in ours: "
                    f"{sorted(got - want)[:10]}, only in tshark's: {sorted(want - got)[:10]}")


def test_every_capture_has_truth():
    assert CAPTURES, f"no captures in {REAL}"
    missing = [p.name for p in CAPTURES if not (TRUTH / f"{p.name}.csv").is_file()]
    assert not missing, f"captures without truth CSV in {TRUTH}: {missing}"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_tcp_fields_match_tshark(engine, capture):
    t = truth(capture)
    assert (t["hdr_multi"] == 0).all(), "truth has frames with several IP/TCP headers; compare rules needed"
    df = table(engine, capture)
    _check_rows(df, t, engine)
    problems = _mismatches(df, t, list(COMPARED))
    assert not problems, f"{engine} vs tshark on {capture.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_times_and_lengths_match_tshark(engine, capture):
    """ts_ns exact to the nanosecond (frame.time_epoch has 9 digits), caplen and wirelen."""
    t = truth(capture)
    df = table(engine, capture)
    _check_rows(df, t, engine)
    problems = _mismatches(df, t, ["ts_ns", "caplen", "wirelen"])
    assert not problems, f"{engine} vs tshark on {capture.name}:\n  " + "\n  ".join(problems)
    assert np.allclose(df["ts"].to_numpy(), t["ts_ns"].to_numpy() / 1e9, rtol=0, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_table_has_declared_columns(engine):
    """Exactly schema.PACKET_COLUMNS: names, order and dtypes (checked on a VLAN capture)."""
    df = table(engine, REAL / "zeek_http-qinq-0.pcap") if (REAL / "zeek_http-qinq-0.pcap").exists() \
        else table(engine, CAPTURES[0])
    assert list(df.columns) == list(schema.PACKET_COLUMN_NAMES)
    for c in schema.PACKET_COLUMNS:
        want = "category" if c.dtype == "category" else c.dtype
        assert str(df[c.name].dtype) == want, f"{engine}: {c.name} is {df[c.name].dtype}, declared {c.dtype}"


@pytest.mark.tshark
def test_pyshark_engine_names_the_fix_without_tshark(monkeypatch, tmp_path):
    import pyshark.tshark.tshark as pyshark_tshark

    from analyzer.decode import tshark as pyshark_engine

    def not_found(*args, **kwargs):
        raise pyshark_tshark.TSharkNotFoundException("TShark not found")

    monkeypatch.setattr(pyshark_tshark, "get_process_path", not_found)  # pyshark's search (config.ini...)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no tshark anywhere on PATH
    with pytest.raises(EngineUnavailable, match="apt-get install tshark"):
        pyshark_engine.read_packets_pyshark(str(CAPTURES[0]))
