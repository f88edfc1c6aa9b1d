"""Small TCP conversations built with scapy, with known retransmissions, for the compare and plot tests.

``lossy_upload`` is one connection (client 10.0.0.1 uploads 500 bytes to 10.0.0.2:443) whose timeline,
frame by frame, is::

     1  0.000  C SYN                     9  0.600  C seq 101 len 100  <- retransmission (timeout, 350 ms)
     2  0.050  S SYN-ACK                10  0.650  S ACK 301
     3  0.100  C ACK                    11  0.700  C seq 401 len 100
     4  0.200  C seq   1 len 100        12  0.7005 C seq 301 len 100  <- out_of_order (sent before frame 11: lower IP ID)
     5  0.201  C seq 101 len 100 (lost) 13  0.750  S ACK 501
     6  0.202  C seq 201 len 100        14  0.800  C FIN
     7  0.250  S ACK 101                15  0.850  S FIN-ACK
     8  0.251  S ACK 101, SACK 201-301  16  0.900  C ACK

``captured_twice=True`` repeats frame 4 right after itself (same bytes and IP ID: a duplicate), shifting
later frames by one. ``streams=2`` appends a second connection (client port + 1) with the same timeline
10 s later.
"""
from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"
T0 = 1_700_000_000.0
C_ISN, S_ISN = 1_000_000, 4_294_967_000  # the server's ISN wraps past 2**32 within its first bytes


def _timeline() -> list[tuple[float, bool, str, int, int, int, list]]:
    """(time, from_client, flags, rel seq, rel ack, payload length, SACK blocks (rel))."""
    return [
        (0.000, True, "S", 0, 0, 0, []),
        (0.050, False, "SA", 0, 1, 0, []),
        (0.100, True, "A", 1, 1, 0, []),
        (0.200, True, "PA", 1, 1, 100, []),
        (0.201, True, "PA", 101, 1, 100, []),
        (0.202, True, "PA", 201, 1, 100, []),
        (0.250, False, "A", 1, 101, 0, []),
        (0.251, False, "A", 1, 101, 0, [(201, 301)]),
        (0.600, True, "PA", 101, 1, 100, []),
        (0.650, False, "A", 1, 301, 0, []),
        (0.700, True, "PA", 401, 1, 100, []),
        (0.7005, True, "PA", 301, 1, 100, []),
        (0.750, False, "A", 1, 501, 0, []),
        (0.800, True, "FA", 501, 1, 0, []),
        (0.850, False, "FA", 1, 502, 0, []),
        (0.900, True, "A", 502, 2, 0, []),
    ]


LOST_FRAME = 5            # frame 5 never reached the server
REORDERED = 12            # frame 12 was sent before frame 11 (a lower IP ID) and delayed in the network
EXPECTED = {9: "retransmission", 12: "out_of_order"}   # our kinds, frame numbers of one connection


def _packets(cport: int, offset: float, ipid: list[int]):
    out = []
    for k, (t, from_client, flags, seq, ack, n, sack) in enumerate(_timeline(), 1):
        src, dst, sport, dport = (CLIENT, SERVER, cport, 443) if from_client else (SERVER, CLIENT, 443, cport)
        isn, peer = (C_ISN, S_ISN) if from_client else (S_ISN, C_ISN)
        opts = [("MSS", 1460), ("SAckOK", b"")] if "S" in flags else []
        if sack:
            opts = [("NOP", None), ("NOP", None), ("SAck", tuple((peer + x) % 2**32 for blk in sack for x in blk))]
        ipid[0] += 1
        # frame 12 (seq 301) was sent before frame 11 (seq 401) and delayed: it carries the earlier IP ID
        ident = ipid[0] + {REORDERED: -1, REORDERED - 1: 1}.get(k, 0)
        pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
               IP(src=src, dst=dst, id=ident) /
               TCP(sport=sport, dport=dport, flags=flags, seq=(isn + seq) % 2**32,
                   ack=(peer + ack) % 2**32 if "A" in flags else 0, window=65535, options=opts))
        if n:
            pkt = pkt / Raw(b"x" * n)
        pkt.time = T0 + offset + t
        out.append(pkt)
    return out


def lossy_upload(path: Path, captured_twice: bool = False, streams: int = 1) -> dict[int, str]:
    """Write the capture; returns {frame: our expected kind} over all its connections."""
    ipid = [100]
    packets, expected = [], {}
    for k in range(streams):
        conn = _packets(40000 + k, 10.0 * k, ipid)
        base = len(packets)
        if captured_twice:
            copy = conn[3].copy()
            copy.time = conn[3].time + 0.000002
            conn.insert(4, copy)
            expected[base + 5] = "duplicate"
        for frame, kind in EXPECTED.items():
            expected[base + frame + (1 if captured_twice else 0)] = kind
        packets += conn
    wrpcap(str(path), packets)
    return expected


def simultaneous_open(path: Path) -> None:
    """Both ends send a SYN, then each a SYN-ACK repeating its ISN (RFC 9293 3.5), then an ACK.

    Frames 3 and 4 are the SYN-ACKs, which tshark flags as retransmissions.
    """
    a, b = ("10.0.0.1", 5000, 100), ("10.0.0.2", 6000, 900)
    steps = [(0.000, a, b, "S", 0, None), (0.001, b, a, "S", 0, None), (0.010, a, b, "SA", 0, 1),
             (0.011, b, a, "SA", 0, 1), (0.020, a, b, "A", 1, 1)]
    packets = []
    for k, (t, (src, sport, isn), (dst, dport, peer), flags, seq, ack) in enumerate(steps):
        pkt = (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst, id=k + 1) /
               TCP(sport=sport, dport=dport, flags=flags, seq=isn + seq, ack=peer + ack if ack else 0))
        pkt.time = T0 + t
        packets.append(pkt)
    wrpcap(str(path), packets)
