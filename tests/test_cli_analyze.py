"""`tcp-analyzer analyze` in process: every option and format, files read back equal the API's tables."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

import analyzer
from analyzer import schema
from analyzer.commands.cli import main
from analyzer.report import read_table

C, S = "10.1.0.1", "10.1.0.2"


def _capture(path):
    """A handshake, one data segment resent 300 ms later, and a refused second connection."""
    def pkt(src, dst, sport, dport, t, **kw):
        p = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, **kw)
        p.time = t
        return p
    frames = [
        pkt(C, S, 5555, 80, 1.000, flags="S", seq=100),
        pkt(S, C, 80, 5555, 1.010, flags="SA", seq=900, ack=101),
        pkt(C, S, 5555, 80, 1.012, flags="A", seq=101, ack=901),
        pkt(C, S, 5555, 80, 1.020, flags="PA", seq=101, ack=901) / (b"a" * 100),
        pkt(C, S, 5555, 80, 1.320, flags="PA", seq=101, ack=901) / (b"a" * 100),
        pkt(S, C, 80, 5555, 1.330, flags="A", seq=901, ack=201),
        pkt(C, S, 5556, 81, 2.000, flags="S", seq=7),
        pkt(S, C, 81, 5556, 2.001, flags="RA", seq=0, ack=8),
    ]
    wrpcap(str(path), frames)
    return path


@pytest.fixture(scope="module")
def cap(tmp_path_factory):
    return _capture(tmp_path_factory.mktemp("cli") / "two.pcap")


@pytest.mark.parametrize("fmt,suffix", [("csv", "csv"), ("parquet", "parquet"), ("json", "jsonl")])
def test_written_tables_equal_the_api(cap, tmp_path, fmt, suffix, capsys):
    assert main(["analyze", str(cap), "-o", str(tmp_path), "--format", fmt, "--packets"]) == 0
    report = analyzer.analyze(cap, packets=True)
    for name in ("connections", "handshakes", "retransmissions", "packets"):
        got = read_table(tmp_path / f"{name}.{suffix}", name)
        want = schema.conform(getattr(report, name), {"connections": schema.CONNECTION_COLUMNS,
                                                       "handshakes": schema.HANDSHAKE_COLUMNS,
                                                       "retransmissions": schema.RETRANSMISSION_COLUMNS,
                                                       "packets": schema.PACKET_COLUMNS}[name])
        assert list(got.columns) == [c.name for c in {"connections": schema.CONNECTION_COLUMNS,
                                                       "handshakes": schema.HANDSHAKE_COLUMNS,
                                                       "retransmissions": schema.RETRANSMISSION_COLUMNS,
                                                       "packets": schema.PACKET_COLUMNS}[name]]
        pd.testing.assert_frame_equal(got.astype({c: str for c in ("src", "dst") if c in got and name == "packets"}),
                                      want.astype({c: str for c in ("src", "dst") if c in want and name == "packets"}),
                                      check_dtype=False, check_categorical=False, check_exact=False, rtol=1e-12)
    out = capsys.readouterr().out
    assert "Handshakes" in out and "established" in out and "refused" in out


def test_report_content_is_what_the_capture_holds(cap):
    r = analyzer.analyze(cap)
    hs = r.handshakes.set_index("stream")
    assert hs.loc[0, "outcome"] == "established" and hs.loc[1, "outcome"] == "refused"
    assert hs.loc[0, "handshake_rtt"] == pytest.approx(0.012, abs=1e-9)
    (row,) = r.retransmissions.itertuples(index=False)
    assert (row.frame, row.kind, row.original_frame, row.overlap_bytes) == (5, "retransmission", 4, 100)
    assert row.wireshark_filter == "tcp.stream eq 0 && frame.number == 5"
    assert row.since_original == pytest.approx(0.3, abs=1e-9)


def test_json_summary(cap, tmp_path, capsys):
    assert main(["analyze", str(cap), "-o", str(tmp_path), "--json"]) == 0
    (s,) = json.loads(capsys.readouterr().out)
    assert s["connections"] == 2 and s["handshakes"] == {"established": 1, "refused": 1}
    assert s["retransmissions"] == {"retransmission": 1}
    assert s["handshake_rtt_seconds"]["p50"] == pytest.approx(0.012, abs=1e-9)
    assert s["top_retransmitting_connections"][0]["retransmitted_bytes"] == 100


def test_quiet_prints_nothing(cap, tmp_path, capsys):
    assert main(["analyze", str(cap), "-o", str(tmp_path), "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "handshakes.csv").exists()


def test_several_captures_one_folder_each(cap, tmp_path, capsys):
    other = _capture(tmp_path / "other.pcap")
    assert main(["analyze", str(cap), str(other), "-o", str(tmp_path / "out"), "-q"]) == 0
    for name in ("two.pcap", "other.pcap"):
        assert (tmp_path / "out" / name / "retransmissions.csv").exists()


@pytest.mark.tshark
def test_pyshark_engine_gives_the_same_report(cap, tmp_path):
    import shutil
    if not shutil.which("tshark"):
        pytest.skip("tshark is not installed (apt-get install tshark)")
    assert main(["analyze", str(cap), "-o", str(tmp_path / "n"), "-q"]) == 0
    assert main(["analyze", str(cap), "-o", str(tmp_path / "p"), "-q", "--engine", "pyshark"]) == 0
    for name in ("connections", "handshakes", "retransmissions"):
        a = read_table(tmp_path / "n" / f"{name}.csv", name)
        b = read_table(tmp_path / "p" / f"{name}.csv", name)
        pd.testing.assert_frame_equal(a, b)


def test_usage_errors_exit_2(capsys):
    assert main(["analyze"]) == 2
    assert main(["analyze", "x.pcap", "--format", "xml"]) == 2
    assert main(["no-such-command"]) == 2


def test_help_has_an_example(capsys):
    assert main(["analyze", "--help"]) == 0
    assert "tcp-analyzer analyze trace.pcap" in capsys.readouterr().out
