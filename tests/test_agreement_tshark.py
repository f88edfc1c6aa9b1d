"""Agreement with tshark 4.0.17 on the 28 real captures of ../shared/captures/real (truth CSVs made by
tshark), measured by ../shared/tools/agreement.py, and every remaining difference listed with its reason.

Skips when ../shared is absent (a fresh clone has no ../shared; the captures are not ours to copy).
"""
from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

import analyzer
from analyzer.tcp import analyze_batches

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL = SHARED / "captures" / "real"
TRUTH = REAL / "truth"
AGREEMENT = SHARED / "tools" / "agreement.py"

pytestmark = pytest.mark.skipif(not (AGREEMENT.exists() and TRUTH.is_dir()),
                                reason=f"{SHARED} is absent: the real captures and tshark truth live outside the repo")

# Frames tshark flags tcp.analysis.retransmission that we label `duplicate`: the same IP datagram
# captured more than once (identical IP ID, seq, ack, flags, TSval; at most 5 ms apart). Not resends.
DUPLICATES = {
    "ndpi_dnp3.pcap": 230,              # every frame captured three times, identical timestamps
    "tcpdump_pptp.pcap": 4,             # data segments captured twice, 100-240 us apart
    "zeek_vlan-pcp-dei.pcapng": 4,      # each frame on VLAN 10+20, VLAN 20 and untagged
    "ndpi_mongodb.pcap": 4,             # SYN/ACK copies routed from VLAN 300 to VLAN 50 (TTL - 1)
    "cs_nowebaccess3.pcapng": 1,        # a SYN copy 5.0 ms later with the same IP ID 6026
}
# Streams whose handshake_rtt differs from tshark's initial_rtt although we see no SYN retry: the
# client's SYN was captured twice (VLAN 300, then VLAN 50 after a router); tshark measures from the
# later copy, we from the first, on the same capture point as the ACK. Difference in seconds.
RTT_DIFFERENCES = {"ndpi_mongodb.pcap": {0: 16e-6, 1: 14e-6, 4: 17e-6}}


def test_agreement_totals():
    cmd = [sys.executable, str(AGREEMENT), "--analyzer", f"{sys.executable} -m analyzer",
           "--captures", str(REAL), "--truth", str(TRUTH), "--quiet"]
    total = subprocess.run(cmd, capture_output=True, text=True, timeout=1200).stdout.strip().splitlines()[-1]
    num = lambda key: float(re.search(rf"{key}=([0-9.]+)", total).group(1))  # noqa: E731
    pair = lambda key: tuple(map(int, re.search(rf"{key}=(\d+)/(\d+)", total).groups()))  # noqa: E731
    assert "failed=0" in total and "exit_nonzero=0" in total, total
    # wireshark_kind is tshark's label: no frame set apart, every label the finest one tshark gives
    assert num("f1") == num("class_agree") == num("kind_agree") == 1.0, total
    assert num("duplicates_tshark_calls_retrans") == 0, total
    for key in ("handshakes", "handshakes_by_syn", "ws_irtt_within_1us"):
        ok, n = pair(key)
        assert ok == n > 0, (key, total)
    rtt_ok, rtt_all = pair("rtt_within_1us")
    assert rtt_all - rtt_ok == sum(len(v) for v in RTT_DIFFERENCES.values()), total


def _finest(row: dict) -> str:
    for label in ("spurious_retransmission", "fast_retransmission", "retransmission", "out_of_order"):
        if row[f"tcp.analysis.{label}"] == "1":
            return label
    return ""


@pytest.mark.parametrize("name", sorted(p.name for p in REAL.glob("*.pcap*")) if REAL.is_dir() else [])
def test_wireshark_kind_is_tsharks_label(name):
    """Frame by frame: wireshark_kind is tshark's finest label; stream ids and Wireshark's iRTT are tshark's;
    our own handshake RTT differs only where documented; and the frames kind calls duplicates are the
    documented ones."""
    truth = list(csv.DictReader(open(TRUTH / f"{name}.csv", newline="")))
    t = analyze_batches(analyzer.iter_packets(str(REAL / name)))
    rx = t.retransmissions
    theirs = {int(r["frame.number"]): _finest(r) for r in truth if _finest(r)}
    assert dict(zip(rx.frame[rx.wireshark_kind != ""], rx.wireshark_kind[rx.wireshark_kind != ""])) == theirs
    dup = set(rx.frame[rx.kind == "duplicate"]) & set(theirs)
    assert len(dup) == DUPLICATES.get(name, 0)
    # stream ids, per frame: the engine's stream for each TCP frame equals tcp.stream; the row's time is
    # exactly tshark's frame.time_epoch (the nearest double), so the two join
    streams = {int(r["frame.number"]): int(r["tcp.stream"]) for r in truth}
    assert all(streams[f] == s for f, s in zip(rx.frame, rx.stream))
    epoch = {int(r["frame.number"]): float(r["frame.time_epoch"]) for r in truth}
    assert all(epoch[f] == ts for f, ts in zip(rx.frame, rx.ts))
    irtt = {int(r["tcp.stream"]): float(r["tcp.analysis.initial_rtt"]) for r in truth if r["tcp.analysis.initial_rtt"]}
    hs = t.handshakes[(t.handshakes.outcome == "established") & (t.handshakes.syn_retries == 0)]
    off = {int(s): round(float(h) - irtt[int(s)], 6) for s, h in zip(hs.stream, hs.handshake_rtt)
           if int(s) in irtt and abs(float(h) - irtt[int(s)]) > 1e-6}
    assert off == RTT_DIFFERENCES.get(name, {})
    # Wireshark's own iRTT is reproduced exactly on every stream
    ws = t.handshakes.set_index("stream").wireshark_irtt
    assert all(abs(float(ws[s]) - v) <= 1e-9 for s, v in irtt.items())
