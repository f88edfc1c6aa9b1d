"""Build small TCP captures for tests: scapy builds each packet, a tiny pcap writer writes the file.

    cap = Capture()
    f = cap.flow()                      # client 10.0.0.1:40000 -> server 10.0.0.2:15001
    f.handshake()                       # SYN, SYN-ACK +10 ms, ACK +2 ms (MSS, SACK-perm, TS, WS 7)
    f.c("PA", 1000, dt=0.001)           # client sends 1000 bytes 1 ms later
    f.s("A", dt=0.001)                  # server ACKs everything
    tables = cap.analyze(tmp_path)      # write, read with analyzer.read_packets, run the engine

Each send returns the frame number of the packet. Sequence and ACK numbers follow automatically
(``seq=`` / ``ack=`` override them, relative to the ISN); ``advance=False`` sends without moving the
next sequence number (for retransmissions). Our own pcap writer (rather than scapy's ``wrpcap``)
allows snaplen-truncated records and exact nanosecond timestamps.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

import analyzer
from analyzer.tcp import TcpTables, analyze_batches

T0 = 1_700_000_000.0
MS = 0.001
SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]


class Capture:
    """Frames in capture order, written as a classic nanosecond pcap (Ethernet)."""

    def __init__(self, t0: float = T0):
        self.t_ns = round(t0 * 1e9)  # integer nanoseconds, so RTTs come out exact
        self.frames: list[tuple[int, bytes, int]] = []  # (time ns, bytes, original length)

    @property
    def t(self) -> float:
        return self.t_ns / 1e9

    def flow(self, **kw) -> "Flow":
        return Flow(self, **kw)

    def add(self, pkt, dt: float = 0.0, caplen: int | None = None) -> int:
        self.t_ns += round(dt * 1e9)
        raw = bytes(pkt)
        self.frames.append((self.t_ns, raw[:caplen] if caplen else raw, len(raw)))
        return len(self.frames)

    def duplicate(self, frame: int, dt: float = 5e-6) -> int:
        """Capture frame ``frame`` again ``dt`` seconds later (the same bytes)."""
        _, raw, orig = self.frames[frame - 1]
        self.t_ns += round(dt * 1e9)
        self.frames.append((self.t_ns, raw, orig))
        return len(self.frames)

    def write(self, path: Path) -> Path:
        out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1)]
        for ns, raw, orig in self.frames:
            out.append(struct.pack("<IIII", ns // 10**9, ns % 10**9, len(raw), orig) + raw)
        path.write_bytes(b"".join(out))
        return path

    def packets(self, tmp_path: Path) -> pd.DataFrame:
        return analyzer.read_packets(str(self.write(Path(tmp_path) / "test.pcap")))

    def analyze(self, tmp_path: Path, batch_size: int | None = None) -> TcpTables:
        """Write the capture, read it with analyzer.read_packets and run the engine (in batches if asked)."""
        df = self.packets(tmp_path)
        if batch_size:
            return analyze_batches(df.iloc[i:i + batch_size] for i in range(0, len(df), batch_size))
        return analyze_batches([df])


class Flow:
    """One TCP connection's packets, in both directions, appended to a Capture."""

    def __init__(self, cap: Capture, client="10.0.0.1", server="10.0.0.2", cport=40000, sport=15001,
                 isn_c=1000, isn_s=5000, v6=False, vlan=None, timestamps=True):
        if v6 and client == "10.0.0.1":
            client, server = "2001:db8::1", "2001:db8::2"
        self.cap, self.v6, self.vlan, self.timestamps = cap, v6, vlan, timestamps
        self.ends = {"c": [client, cport, isn_c, 1, 100], "s": [server, sport, isn_s, 1, 5000]}
        # per side: address, port, ISN, next relative seq, next IP ID

    def _send(self, side, flags, n, dt, seq, ack, win, options, advance, ipid, caplen, data):
        me, peer = self.ends[side], self.ends["s" if side == "c" else "c"]
        rel = me[3] if seq is None else seq
        if "S" in flags:
            rel = 0 if seq is None else seq
        ack_rel = peer[3] if ack is None else ack
        payload = data if data is not None else b"\x00" * n
        opts = list(options) if options is not None else []
        if self.timestamps and not any(o[0] == "Timestamp" for o in opts):
            tsval = int(round((self.cap.t + dt) * 1000)) & 0xFFFFFFFF
            opts = opts + [("NOP", None), ("NOP", None), ("Timestamp", (tsval, 0))]
        tcp = TCP(sport=me[1], dport=peer[1], flags=flags, seq=(me[2] + rel) & 0xFFFFFFFF,
                  ack=(peer[2] + ack_rel) & 0xFFFFFFFF if "A" in flags else 0, window=win, options=opts)
        ip = (IPv6(src=me[0], dst=peer[0]) if self.v6
              else IP(src=me[0], dst=peer[0], id=me[4] if ipid is None else ipid, flags="DF"))
        me[4] += 1
        l2 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        pkt = (l2 / Dot1Q(vlan=self.vlan) / ip / tcp if self.vlan is not None else l2 / ip / tcp)
        if payload:
            pkt = pkt / Raw(payload)
        if advance:
            end = rel + len(payload) + (1 if ("S" in flags or "F" in flags) else 0)
            me[3] = max(me[3], end)
        return self.cap.add(pkt, dt, caplen)

    def c(self, flags="A", n=0, dt=0.0, seq=None, ack=None, win=1024, options=None, advance=True, ipid=None,
          caplen=None, data=None) -> int:
        """Client -> server packet; returns its frame number."""
        return self._send("c", flags, n, dt, seq, ack, win, options, advance, ipid, caplen, data)

    def s(self, flags="A", n=0, dt=0.0, seq=None, ack=None, win=1024, options=None, advance=True, ipid=None,
          caplen=None, data=None) -> int:
        """Server -> client packet; returns its frame number."""
        return self._send("s", flags, n, dt, seq, ack, win, options, advance, ipid, caplen, data)

    def handshake(self, dt=0.0) -> tuple[int, int, int]:
        """SYN, SYN-ACK 10 ms later, ACK 2 ms later (options on both SYNs)."""
        return (self.c("S", dt=dt, options=SYN_OPTIONS), self.s("SA", dt=10 * MS, options=SYN_OPTIONS),
                self.c("A", dt=2 * MS))

    def close(self, dt=MS) -> None:
        """FIN from the client, FIN-ACK from the server, last ACK."""
        self.c("FA", dt=dt)
        self.s("FA", dt=MS)
        self.c("A", dt=MS)


def rows(df: pd.DataFrame, *cols: str) -> list[tuple]:
    """Selected columns as plain tuples (NA as None), for exact comparisons."""
    return [tuple(None if pd.isna(v) else v for v in r) for r in df[list(cols)].itertuples(index=False)]
