"""The scale benchmark's generator (``benchmarks/many.py``): seeded, the traffic it promises, clean tables."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import analyzer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import many  # noqa: E402

CONNECTIONS = 3000


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("many") / "many.pcap"
    meta = many.generate(str(path), CONNECTIONS, seed=7)
    return path, meta


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_seeded_and_written_block_by_block(capture, tmp_path, monkeypatch):
    """The same seed gives the same bytes, also when written in blocks smaller than the run's (frames of a
    block's connections that end after the next block starts wait for it); another seed other bytes."""
    path, meta = capture
    assert meta["frames"] == CONNECTIONS * many.FRAMES_PER_CONNECTION and meta["bytes"] == path.stat().st_size
    again = tmp_path / "again.pcap"
    many.generate(str(again), CONNECTIONS, seed=7)
    assert digest(again) == digest(path)
    monkeypatch.setattr(many, "BLOCK", 500)
    blocks = tmp_path / "blocks.pcap"
    many.generate(str(blocks), CONNECTIONS, seed=7)
    df, ref = analyzer.read_packets(blocks), analyzer.read_packets(path)
    assert len(df) == len(ref) and df["ts_ns"].is_monotonic_increasing
    many.generate(str(tmp_path / "other.pcap"), CONNECTIONS, seed=8)
    assert digest(tmp_path / "other.pcap") != digest(path)


def test_every_connection_is_clean_and_ten_frames(capture):
    """All handshakes established, every connection closed by both FINs, ten frames, no retransmission."""
    path, _ = capture
    report = analyzer.analyze(path)
    conns, hs = report.connections, report.handshakes
    assert len(conns) == len(hs) == CONNECTIONS
    assert (hs["outcome"] == "established").all() and (conns["conn_state"] == "SF").all()
    assert ((conns["client_pkts"] == 6) & (conns["server_pkts"] == 4)).all()
    assert len(report.retransmissions) == 0
    assert not report.stats.get("problems") and not report.stats.get("skipped")


def test_realistic_fields(capture):
    """About 400 connections open at once; IP IDs counting up per direction; TSecr echoing the peer's TSval;
    SYN options (MSS 1460, window scale 7, SACK-permitted, timestamps); no 4-tuple used twice."""
    path, _ = capture
    report = analyzer.analyze(path)
    conns = report.connections
    spans = conns["first_ts"].to_numpy(), conns["last_ts"].to_numpy()
    start, end = spans[0].min(), spans[1].max()
    at = np.linspace(start + 0.3 * (end - start), end - 0.3 * (end - start), 9)  # away from the ramps
    open_at_once = [int(((spans[0] <= t) & (t <= spans[1])).sum()) for t in at]
    assert 300 <= np.median(open_at_once) <= 500, open_at_once
    assert not conns.duplicated(["client", "client_port", "server", "server_port"]).any()
    p = analyzer.read_packets(path)
    key = (p["src"].astype(str) + ":" + p["sport"].astype(str) + ">" + p["dst"].astype(str) + ":"
           + p["dport"].astype(str))
    steps = p.groupby(key, sort=False)["ip_id"].diff().dropna()
    assert ((steps == 1) | (steps == -65535)).all()
    syn = p[(p["flags"] & 0x02) != 0]  # SYN and SYN-ACK
    assert (syn["mss"] == 1460).all() and (syn["wscale"] == 7).all() and syn["sack_permitted"].all()
    assert (p["tsval"] >= 0).all() and (p.loc[(p["flags"] & 0x12) != 0x02, "tsecr"] > 0).all()


@pytest.mark.tshark
def test_tshark_reads_it_cleanly(capture):
    """Valid IPv4 and TCP checksums, no malformed packet, no frame tshark flags (payloads decoded as data)."""
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    path, _ = capture
    cmd = ["tshark", "-n", "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
           "-Y", "_ws.expert.severity >= error || tcp.analysis.flags || tcp.checksum.status == 0 || "
                 "ip.checksum.status == 0", "-T", "fields", "-e", "frame.number"]
    for port in sorted(set(many.gen.SERVER_PORTS.tolist())):
        cmd += ["-d", f"tcp.port=={port},data"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == []
