#!/usr/bin/env python3
"""Seeded benchmark capture: thousands of interleaved TCP flows, with labelled retransmissions.

    python benchmarks/gen.py -o bench.pcap                  # 1,000,000 frames, seed 1
    python benchmarks/gen.py --frames 20000 --seed 7 -o small.pcap --check

Writes three files:

- ``FILE``            classic pcap, Ethernet, microsecond timestamps, full payloads (zero bytes),
                      valid IPv4 and TCP checksums;
- ``FILE.truth.csv``  every frame the generator deliberately sent again, with the kind and the reason;
- ``FILE.meta.json``  the parameters and counts (flows, IPv6 and VLAN flows, retransmissions by kind).

The traffic
-----------
Each flow is a client/server conversation seen from one capture point, the *capture host* (the server
for about 70% of flows, the client otherwise): a full handshake (MSS, SACK-permitted, window scale, and
TCP timestamps on 90% of flows), request/response rounds (web-like, RPC-like or bulk transfers, with data
both ways and delayed ACKs every second segment), then a FIN close. Flows start as a Poisson process, so
hundreds are open at any time and their packets interleave. About 15% of flows are IPv6 and 10% carry an
802.1Q tag. ISNs are random; 5% of flows start close enough to 2**32 that their sequence numbers wrap.

Losses happen only to segments the capture host sends, *after* the capture point, so the original is
always in the file (no "previous segment not captured"). The labels are chosen so that they cannot be
read two ways; Wireshark 4.0's rules (tcp-analysis-reference.md B.5) give the same answer:

- ``fast_retransmission``: a segment in the middle of a burst is lost; the receiver answers each later
  segment with a duplicate ACK carrying a SACK block; the sender resends the segment 20 us to 2 ms
  after the third duplicate ACK (Wireshark: 2+ dup ACKs, ack == seq, under 20 ms after the last ACK).
- ``retransmission``: the tail of a message (1 to 3 segments) is lost; the receiver sends no duplicate
  ACK; the sender resends after an RTO of 200 ms + RTT + up to 30 ms (Wireshark: not fast, and far
  beyond the out-of-order window, which is the handshake RTT, at most 60 ms here).
- ``syn_retransmission``: a client-captured flow whose first SYN got no answer resends it after 1 s
  (sometimes twice, the second after 2 s more).

Nothing else repeats bytes: no segment is 1 byte long (it could read as a keep-alive), windows stay
constant and never fill, no 4-tuple is reused, no raw sequence or ACK number is 0.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

GEN_VERSION = 2  # bump when the output for a given (frames, seed) changes

# TCP flags (RFC 9293)
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PSH = 0x08
TH_ACK = 0x10

# what the generator does to a frame (packet "kind" selects the TCP option layout)
K_DATA = 0  # NOP NOP TS (or no options when the flow has no timestamps)
K_SYN = 1  # MSS, SACK-permitted, [TS], NOP, WS
K_SACK = 2  # duplicate ACK: [NOP NOP TS] NOP NOP SACK(1 block)

LABEL_FAST = "fast_retransmission"
LABEL_RTO = "retransmission"
LABEL_SYN = "syn_retransmission"

PCAP_SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
EPOCH_START = 1_709_294_400  # 2024-03-01 12:00:00 UTC

FLOWS_PER_SECOND = 75.0  # Poisson arrival rate; about 15-20k frames/s overall
IPV6_SHARE = 0.15
VLAN_SHARE = 0.10
WRAP_SHARE = 0.05
NO_TS_SHARE = 0.10
SERVER_CAPTURE_SHARE = 0.70
P_FAST_LOSS = 0.35  # per burst of >= 6 segments sent by the capture host
P_TAIL_LOSS = 0.08  # per final burst of a message sent by the capture host
P_SYN_LOSS = 0.04  # per client-captured flow

MASK32 = 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------
# One flow, built event by event (times are integer microseconds at the capture host)
# ----------------------------------------------------------------------------------------------


class FlowBuilder:
    """Emits the packets of one connection, as seen at the capture host ``h`` (0 client, 1 server).

    Sequence and ACK numbers are offsets from each direction's ISN (the SYN is offset 0), as
    Wireshark shows relative numbers. Direction 0 is client -> server.
    """

    def __init__(self, rng, h: int, rtt: int, gap: int, seg: int):
        self.rng = rng
        self.h = h
        self.rtt = rtt
        self.gap = gap
        self.seg = seg
        self.t: list[int] = []
        self.d: list[int] = []
        self.flags: list[int] = []
        self.seq: list[int] = []
        self.ack: list[int] = []
        self.plen: list[int] = []
        self.kind: list[int] = []
        self.sack_l: list[int] = []
        self.sack_r: list[int] = []
        self.labels: list[tuple] = []  # (index, kind, original index, dup acks)
        self.nxt = [0, 0]  # next sequence offset per direction
        self.last_ack = [-1, -1]  # last ACK value sent per side (Wireshark's fwd.lastack)
        self.dups = [0, 0]  # duplicate-ACK run per side, counted as Wireshark counts it
        self.tmax = 0
        self.tlast = [0, 0]  # last emit time per side (each side's packets leave in order)

    # -- primitives ------------------------------------------------------------------------
    def emit(self, t, d, flags, plen=0, seq=None, ack=None, kind=K_DATA, sl=0, sr=0):
        t = max(int(t), self.tlast[d] + 1)
        if seq is None:
            seq = self.nxt[d]
        if ack is None:
            ack = self.nxt[1 - d] if flags & TH_ACK else 0
        i = len(self.t)
        self.t.append(t)
        self.d.append(d)
        self.flags.append(flags)
        self.seq.append(seq)
        self.ack.append(ack)
        self.plen.append(plen)
        self.kind.append(kind)
        self.sack_l.append(sl)
        self.sack_r.append(sr)
        end = seq + plen + (1 if flags & (TH_SYN | TH_FIN) else 0)
        if end > self.nxt[d]:
            self.nxt[d] = end
        pure = plen == 0 and not flags & (TH_SYN | TH_FIN | TH_RST)
        self.dups[d] = self.dups[d] + 1 if pure and ack == self.last_ack[d] else 0
        self.last_ack[d] = ack
        self.tlast[d] = t
        if t > self.tmax:
            self.tmax = t
        return i, t

    def _delay(self, sender_is_h: bool) -> int:
        """Time from a segment leaving/arriving at the capture host to the other side's ACK there."""
        if sender_is_h:
            return self.rtt + int(self.rng.integers(0, 60))
        return int(self.rng.integers(5, 40))

    # -- connection phases -------------------------------------------------------------------
    def handshake(self, t0: int, syn_losses: int) -> int:
        rng = self.rng
        syn_idx = []
        t = t0
        for k in range(syn_losses + 1):
            i, t = self.emit(t, 0, TH_SYN, seq=0, ack=0, kind=K_SYN)
            syn_idx.append(i)
            if k < syn_losses:
                t += 1_000_000 * (1 << k) + int(rng.integers(0, 4000))
        for i in syn_idx[1:]:
            self.labels.append((i, LABEL_SYN, syn_idx[0], 0))
        if self.h == 0:
            _, t = self.emit(t + self.rtt, 1, TH_SYN | TH_ACK, seq=0, ack=1, kind=K_SYN)
            _, t = self.emit(t + rng.integers(10, 40), 0, TH_ACK)
        else:
            _, t = self.emit(t + rng.integers(20, 80), 1, TH_SYN | TH_ACK, seq=0, ack=1, kind=K_SYN)
            _, t = self.emit(t + self.rtt, 0, TH_ACK)
        return t

    def message(self, s: int, nbytes: int, t0: int, reply_follows: bool) -> int:
        """Side ``s`` sends ``nbytes``; returns when the reply (if any) may arrive at the capture host."""
        rng = self.rng
        seg = self.seg
        full, rem = divmod(nbytes, seg)
        sizes = [seg] * full + ([rem] if rem else [])
        if sizes[-1] == 1:  # a 1-byte segment can read as a keep-alive: never send one
            if len(sizes) == 1:
                sizes[-1] = 2
            else:
                sizes[-2] -= 1
                sizes[-1] = 2
        sender_is_h = s == self.h
        t = max(t0, self.tmax + 1)
        pos = 0
        burst_n = 10
        last_h_send = t
        while pos < len(sizes):
            burst = sizes[pos : pos + burst_n]
            pos += len(burst)
            final = pos >= len(sizes)
            n = len(burst)
            mode = None
            if sender_is_h:
                u = rng.random()
                if n >= 6 and u < P_FAST_LOSS:
                    mode = "fast"
                elif final and u > 1.0 - P_TAIL_LOSS:
                    mode = "tail"
            segs = []
            jitter = rng.integers(0, 4, n).tolist()
            for k, size in enumerate(burst):
                fl = TH_ACK | (TH_PSH if final and k == n - 1 else 0)
                i, ts = self.emit(t, s, fl, size)
                segs.append((i, ts, self.seq[i], size, fl))
                t = ts + self.gap + jitter[k]
            last_h_send = segs[-1][1]
            t = self._receive(s, segs, mode, final and reply_follows)
            if sender_is_h:
                last_h_send = max(last_h_send, self.tlast[s])
                t += int(rng.integers(10, 40))  # the capture host answers ACKs at once
            else:
                t += self.rtt  # the capture host's ACK reaches the peer, its next burst comes back
            burst_n = int(rng.integers(8, 17))
        if sender_is_h:
            return max(last_h_send + self.rtt, self.tmax + 1)
        return max(self.tmax, segs[-1][1]) + 1

    def _receive(self, s, segs, mode, piggyback) -> int:
        """The receiver's ACKs for one burst (and the sender's recovery); returns the last ACK time."""
        rng = self.rng
        r = 1 - s
        n = len(segs)
        sender_is_h = s == self.h
        dly = self._delay(sender_is_h)
        expected = segs[0][2]
        pending = 0
        t_ack = 0
        if mode == "fast":
            j = int(rng.integers(1, n - 4))  # at least 4 later segments: 3 duplicate ACKs or more
            lost = segs[j]
            retx_t = None
            for k, (i, ts, seq, size, fl) in enumerate(segs):
                if k == j:
                    continue
                if k < j:
                    expected += size
                    pending += 1
                    if pending == 2:
                        _, t_ack = self.emit(ts + dly, r, TH_ACK, ack=expected)
                        pending = 0
                else:
                    _, t_ack = self.emit(ts + dly, r, TH_ACK, ack=expected, kind=K_SACK,
                                         sl=segs[j + 1][2], sr=seq + size)
                    pending = 0
                    if retx_t is None and self.dups[r] == 3:
                        retx_t = t_ack + int(rng.integers(20, 2000))
                        ri, retx_t = self.emit(retx_t, s, lost[4], lost[3], seq=lost[2])
                        self.labels.append((ri, LABEL_FAST, lost[0], 3))
            assert retx_t is not None
            end = segs[-1][2] + segs[-1][3]
            _, t_ack = self.emit(max(retx_t + dly, t_ack + 1), r, TH_ACK, ack=end)
            return t_ack
        lost_from = n
        if mode == "tail":
            lost_from = n - int(rng.integers(1, min(3, n) + 1))
        for k in range(lost_from):
            i, ts, seq, size, fl = segs[k]
            expected += size
            pending += 1
            if pending == 2:
                _, t_ack = self.emit(ts + dly, r, TH_ACK, ack=expected)
                pending = 0
        if pending and (mode == "tail" or not piggyback):
            delack = int(rng.integers(40, 2000)) if mode is None else int(rng.integers(200, 40000))
            _, t_ack = self.emit(segs[lost_from - 1][1] + dly + delack, r, TH_ACK, ack=expected)
        if mode != "tail":
            return max(t_ack, segs[-1][1])
        # RTO: resend the first lost segment, then the rest once it is acknowledged
        first = segs[lost_from]
        rto_t = first[1] + 200_000 + self.rtt + int(rng.integers(0, 30_000))
        ri, rto_t = self.emit(rto_t, s, first[4], first[3], seq=first[2])
        self.labels.append((ri, LABEL_RTO, first[0], 0))
        _, t_ack = self.emit(rto_t + dly, r, TH_ACK, ack=first[2] + first[3])
        if lost_from + 1 < n:
            t = t_ack + int(rng.integers(10, 40))
            for i, ts, seq, size, fl in segs[lost_from + 1 :]:
                ri, t = self.emit(t, s, fl, size, seq=seq)
                self.labels.append((ri, LABEL_RTO, i, 0))
                t += self.gap
            end = segs[-1][2] + segs[-1][3]
            _, t_ack = self.emit(t + dly, r, TH_ACK, ack=end)
        return t_ack

    def close(self, t: int, closer: int) -> None:
        rng = self.rng
        o = 1 - closer
        t = max(t, self.tmax + 1)
        _, t = self.emit(t, closer, TH_FIN | TH_ACK)
        far = self.rtt if closer == self.h else int(rng.integers(20, 100))
        _, t = self.emit(t + far, o, TH_FIN | TH_ACK)
        far = self.rtt if o == self.h else int(rng.integers(10, 40))
        self.emit(t + far, closer, TH_ACK)

    def arrays(self) -> dict:
        order = np.lexsort((np.arange(len(self.t)), np.asarray(self.t)))
        cols = {
            "t": np.asarray(self.t, dtype=np.int64)[order],
            "d": np.asarray(self.d, dtype=np.int8)[order],
            "flags": np.asarray(self.flags, dtype=np.uint8)[order],
            "seq": np.asarray(self.seq, dtype=np.int64)[order],
            "ack": np.asarray(self.ack, dtype=np.int64)[order],
            "plen": np.asarray(self.plen, dtype=np.int32)[order],
            "kind": np.asarray(self.kind, dtype=np.uint8)[order],
            "sack_l": np.asarray(self.sack_l, dtype=np.int64)[order],
            "sack_r": np.asarray(self.sack_r, dtype=np.int64)[order],
        }
        where = np.empty(len(order), dtype=np.int64)
        where[order] = np.arange(len(order))
        labels = [(int(where[i]), kind, int(where[o]), dups) for i, kind, o, dups in self.labels]
        return cols, labels


# ----------------------------------------------------------------------------------------------
# Many flows
# ----------------------------------------------------------------------------------------------


def _lowdisc(k: int, alpha: float, phase: float) -> float:
    """Low-discrepancy sequence, so even a small file gets its share of IPv6 and VLAN flows."""
    return (phase + k * alpha) % 1.0


def _flow_script(rng, kind: str):
    """Request/response sizes and think times (us) for one flow."""
    if kind == "web":
        rounds = int(rng.integers(1, 6))
        reqs = rng.integers(200, 1400, rounds)
        resps = np.clip(rng.lognormal(8.8, 1.3, rounds), 100, 2_000_000).astype(np.int64)
        think = rng.integers(2_000, 300_000, rounds)
    elif kind == "rpc":
        rounds = int(rng.integers(20, 120))
        reqs = rng.integers(60, 700, rounds)
        resps = rng.integers(60, 4000, rounds)
        think = rng.integers(300, 40_000, rounds)
    elif kind == "download":
        rounds = 1
        reqs = rng.integers(250, 600, 1)
        resps = np.clip(rng.lognormal(12.5, 0.8, 1), 100_000, 8_000_000).astype(np.int64)
        think = rng.integers(1_000, 50_000, 1)
    else:  # upload
        rounds = 1
        reqs = np.clip(rng.lognormal(12.0, 0.8, 1), 50_000, 4_000_000).astype(np.int64)
        resps = rng.integers(100, 400, 1)
        think = rng.integers(1_000, 50_000, 1)
    return list(zip(reqs.tolist(), resps.tolist(), think.tolist()))


@dataclass
class Flows:
    """Per-flow attributes, one array entry per flow."""

    v6: np.ndarray
    vlan: np.ndarray
    ts: np.ndarray  # TCP timestamps negotiated
    h: np.ndarray  # capture host: 0 client, 1 server
    cli_ip: np.ndarray  # IPv4 as uint32, or the low 32 bits of the IPv6 address
    srv_ip: np.ndarray
    cport: np.ndarray
    sport: np.ndarray
    mss_c: np.ndarray
    mss_s: np.ndarray
    ws_c: np.ndarray
    ws_s: np.ndarray
    win_c: np.ndarray
    win_s: np.ndarray
    isn: np.ndarray  # (n, 2)
    tsoff: np.ndarray  # (n, 2)
    ipid: np.ndarray  # (n, 2)
    ttl_peer: np.ndarray


SERVER_PORTS = np.array([443, 443, 443, 80, 8080, 5432, 6379, 22, 9092, 8443])


def build_packets(frames: int, seed: int):
    """All packets of enough flows to fill ``frames``, in flow-major order, plus flow attributes."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("t", "d", "flags", "seq", "ack", "plen", "kind", "sack_l", "sack_r")}
    flow_of: list[np.ndarray] = []
    labels: list[tuple] = []
    attrs: dict[str, list] = {}
    total = 0
    start = 0.0
    k = 0
    used_ports: dict[int, int] = {}
    phase = rng.random(3)
    while total < frames:
        start += rng.exponential(1e6 / FLOWS_PER_SECOND)
        v6 = _lowdisc(k, 0.6180339887, phase[0]) < IPV6_SHARE
        vlan_on = _lowdisc(k, 0.7548776662, phase[1]) < VLAN_SHARE
        has_ts = rng.random() >= NO_TS_SHARE
        h = 1 if _lowdisc(k, 0.5698402910, phase[2]) < SERVER_CAPTURE_SHARE else 0
        rtt = int(rng.integers(2_000, 60_000))
        gap = int(rng.integers(8, 100))
        mss_c = 1440 if v6 else 1460
        mss_s = mss_c if rng.random() > 0.1 else mss_c - 80
        seg = min(mss_c, mss_s) - (12 if has_ts else 0)
        fkind = rng.choice(["web", "rpc", "download", "upload"], p=[0.6, 0.27, 0.09, 0.04])
        fb = FlowBuilder(rng, h, rtt, gap, seg)
        syn_losses = 0
        if h == 0 and rng.random() < P_SYN_LOSS:
            syn_losses = 2 if rng.random() < 0.2 else 1
        t = fb.handshake(int(start), syn_losses)
        for req, resp, think in _flow_script(rng, fkind):
            t = fb.message(0, req, t + int(rng.integers(20, 200)), reply_follows=True)
            t = fb.message(1, resp, t + int(rng.integers(50, 2000)), reply_follows=False)
            t += think
        fb.close(t, 0 if rng.random() < 0.7 else 1)
        c, lab = fb.arrays()
        n = len(c["t"])
        for key in cols:
            cols[key].append(c[key])
        flow_of.append(np.full(n, k, dtype=np.int32))
        labels.extend((total + i, kind, total + o, dups, k) for i, kind, o, dups in lab)
        # addresses: many clients, a few servers; (client, port) never reused
        cli = int(rng.integers(0, 4000))
        port = used_ports.get(cli, int(rng.integers(32768, 40000)))
        used_ports[cli] = port + 1 + int(rng.integers(0, 7))
        vlan_id = int(rng.choice([10, 20, 100, 4001])) if vlan_on else 0
        ws_c, ws_s = 7, int(rng.choice([7, 8, 9]))
        isn = rng.integers(1, 2**32 - 1, 2)
        if rng.random() < WRAP_SHARE:  # this flow's sequence numbers cross 2**32
            for dd in (0, 1):
                span = int(c["seq"][c["d"] == dd].max() + c["plen"][c["d"] == dd].max()) + 2
                isn[dd] = 2**32 - int(rng.integers(1, max(2, span)))
        for dd in (0, 1):  # no raw sequence/ack number may be 0 (Wireshark reads 0 as "unset")
            offs = np.concatenate([c["seq"][c["d"] == dd], (c["seq"] + c["plen"])[c["d"] == dd],
                                   c["ack"][c["d"] != dd], [1]])
            while ((int(isn[dd]) + offs) % 2**32 == 0).any():
                isn[dd] = (int(isn[dd]) - 7) % 2**32
        row = dict(
            v6=v6, vlan=vlan_id, ts=has_ts, h=h, cli_ip=(10 << 24) | (1 << 16) | cli if not v6 else cli + 1,
            srv_ip=(10 << 24) | (200 << 16) | int(rng.integers(1, 40)) if not v6 else 0x5000 + int(rng.integers(1, 40)),
            cport=port, sport=int(rng.choice(SERVER_PORTS)), mss_c=mss_c, mss_s=mss_s, ws_c=ws_c, ws_s=ws_s,
            win_c=int(rng.integers(500, 3000)), win_s=int(rng.integers(500, 3000)), isn=isn,
            tsoff=rng.integers(0, 2**32, 2), ipid=rng.integers(0, 65536, 2), ttl_peer=int(rng.choice([52, 57, 60, 119])),
        )
        for key, v in row.items():
            attrs.setdefault(key, []).append(v)
        total += n
        k += 1
    packets = {key: np.concatenate(v) for key, v in cols.items()}
    packets["flow"] = np.concatenate(flow_of)
    flows = Flows(**{key: np.asarray(v) for key, v in attrs.items()})
    return packets, flows, labels


def derive_fields(p: dict, f: Flows) -> None:
    """Per-packet TSval/TSecr, IP IDs and raw numbers, computed in flow-major order (vectorized)."""
    n = len(p["t"])
    fl = p["flow"].astype(np.int64)
    d = p["d"].astype(np.int64)
    idx = np.arange(n)
    p["tsval"] = ((f.tsoff[fl, d] + p["t"] // 1000) & MASK32).astype(np.uint32)
    tsecr = np.zeros(n, dtype=np.uint32)
    for side in (0, 1):
        last = np.maximum.accumulate(np.where(d == side, idx, -1))
        ok = (d != side) & (last >= 0)
        ok[ok] = fl[last[ok]] == fl[ok]
        tsecr[ok] = p["tsval"][last[ok]]
    p["tsecr"] = tsecr
    flow_start = np.searchsorted(fl, fl, side="left")
    ipid = np.zeros(n, dtype=np.int64)
    for side in (0, 1):
        c = np.cumsum(d == side)
        before = np.where(flow_start > 0, c[flow_start - 1], 0)
        rank = c - before - 1
        ipid = np.where(d == side, f.ipid[fl, side] + rank, ipid)
    p["ipid"] = (ipid & 0xFFFF).astype(np.uint16)
    p["seq_raw"] = ((f.isn[fl, d] + p["seq"]) & MASK32).astype(np.uint32)
    has_ack = (p["flags"] & TH_ACK) != 0
    p["ack_raw"] = np.where(has_ack, (f.isn[fl, 1 - d] + p["ack"]) & MASK32, 0).astype(np.uint32)
    p["sack_l_raw"] = ((f.isn[fl, 1 - d] + p["sack_l"]) & MASK32).astype(np.uint32)
    p["sack_r_raw"] = ((f.isn[fl, 1 - d] + p["sack_r"]) & MASK32).astype(np.uint32)


# ----------------------------------------------------------------------------------------------
# Bytes on the wire: one structured dtype per header layout
# ----------------------------------------------------------------------------------------------

U8, BE16, BE32, LE32 = "u1", ">u2", ">u4", "<u4"

REC = [("ts_sec", LE32), ("ts_usec", LE32), ("incl_len", LE32), ("orig_len", LE32)]
ETH = [("eth_dst", U8, (6,)), ("eth_src", U8, (6,))]
VLAN = [("vlan_tpid", BE16), ("vlan_tci", BE16)]
ETYPE = [("eth_type", BE16)]
IPV4 = [("ip_vhl", U8), ("ip_tos", U8), ("ip_len", BE16), ("ip_id", BE16), ("ip_off", BE16),
        ("ip_ttl", U8), ("ip_p", U8), ("ip_sum", BE16), ("ip_src", BE32), ("ip_dst", BE32)]
IPV6 = [("ip6_flow", BE32), ("ip6_plen", BE16), ("ip6_nxt", U8), ("ip6_hlim", U8),
        ("ip6_src", U8, (16,)), ("ip6_dst", U8, (16,))]
TCP = [("th_sport", BE16), ("th_dport", BE16), ("th_seq", BE32), ("th_ack", BE32), ("th_offx2", U8),
       ("th_flags", U8), ("th_win", BE16), ("th_sum", BE16), ("th_urp", BE16)]
OPT_TS = [("o_nop1", U8), ("o_nop2", U8), ("o_ts_kind", U8), ("o_ts_len", U8), ("o_tsval", BE32), ("o_tsecr", BE32)]
OPT_SYN_TS = [("o_mss_kind", U8), ("o_mss_len", U8), ("o_mss", BE16), ("o_sackok_kind", U8), ("o_sackok_len", U8),
              ("o_ts_kind", U8), ("o_ts_len", U8), ("o_tsval", BE32), ("o_tsecr", BE32),
              ("o_nop3", U8), ("o_ws_kind", U8), ("o_ws_len", U8), ("o_ws", U8)]
OPT_SYN = [("o_mss_kind", U8), ("o_mss_len", U8), ("o_mss", BE16), ("o_nop1", U8), ("o_nop2", U8),
           ("o_sackok_kind", U8), ("o_sackok_len", U8), ("o_nop3", U8), ("o_ws_kind", U8), ("o_ws_len", U8),
           ("o_ws", U8)]
OPT_SACK = [("o_nop4", U8), ("o_nop5", U8), ("o_sack_kind", U8), ("o_sack_len", U8), ("o_sack_l", BE32),
            ("o_sack_r", BE32)]
OPTIONS = {  # (kind, has_ts) -> fields
    (K_DATA, True): OPT_TS, (K_DATA, False): [],
    (K_SYN, True): OPT_SYN_TS, (K_SYN, False): OPT_SYN,
    (K_SACK, True): OPT_TS + OPT_SACK, (K_SACK, False): OPT_SACK,
}
CONSTANTS = {  # option kinds and lengths (RFC 9293, RFC 2018, RFC 7323)
    "o_nop1": 1, "o_nop2": 1, "o_nop3": 1, "o_nop4": 1, "o_nop5": 1, "o_mss_kind": 2, "o_mss_len": 4,
    "o_ws_kind": 3, "o_ws_len": 3, "o_sackok_kind": 4, "o_sackok_len": 2, "o_sack_kind": 5,
    "o_sack_len": 10, "o_ts_kind": 8, "o_ts_len": 10,
}


def layout_dtype(vlan: bool, v6: bool, kind: int, ts: bool) -> np.dtype:
    fields = REC + ETH + (VLAN if vlan else []) + ETYPE + (IPV6 if v6 else IPV4) + TCP + OPTIONS[(kind, ts)]
    return np.dtype(fields)


def _ones_sum(words: np.ndarray) -> np.ndarray:
    s = words.astype(np.uint64).sum(axis=1)
    return _fold(s)


def _fold(s: np.ndarray) -> np.ndarray:
    s = s.astype(np.uint64)
    while (s >> np.uint64(16)).any():
        s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
    return s


def _v6_addr(low: np.ndarray, prefix: bytes) -> np.ndarray:
    out = np.zeros((len(low), 16), dtype=np.uint8)
    out[:, : len(prefix)] = np.frombuffer(prefix, dtype=np.uint8)
    out[:, 12:16] = low.astype(">u4").view(np.uint8).reshape(-1, 4)
    return out


V6_CLIENT_PREFIX = bytes.fromhex("20010db8000c0000")
V6_SERVER_PREFIX = bytes.fromhex("20010db800050000")


def fill_headers(a: np.ndarray, p: dict, f: Flows, sel: np.ndarray, vlan: bool, v6: bool, kind: int, ts: bool):
    """Fill the structured array ``a`` (one row per selected packet) with pcap record and headers."""
    fl = p["flow"][sel].astype(np.int64)
    d = p["d"][sel].astype(np.int64)
    plen = p["plen"][sel].astype(np.int64)
    opt_len = np.dtype(OPTIONS[(kind, ts)]).itemsize if OPTIONS[(kind, ts)] else 0
    tcp_len = 20 + opt_len + plen
    ip_len = (40 if v6 else 20) + tcp_len
    frame_len = 14 + (4 if vlan else 0) + ip_len
    t = p["t"][sel] + EPOCH_START * 1_000_000
    a["ts_sec"] = t // 1_000_000
    a["ts_usec"] = t % 1_000_000
    a["incl_len"] = frame_len
    a["orig_len"] = frame_len
    cli, srv = f.cli_ip[fl], f.srv_ip[fl]
    src = np.where(d == 0, cli, srv)
    dst = np.where(d == 0, srv, cli)
    mac = np.zeros((len(fl), 6), dtype=np.uint8)
    mac[:, 0] = 0x02
    mac[:, 2:6] = src.astype(">u4").view(np.uint8).reshape(-1, 4)
    mac[:, 1] = d
    a["eth_src"] = mac
    mac2 = mac.copy()
    mac2[:, 2:6] = dst.astype(">u4").view(np.uint8).reshape(-1, 4)
    mac2[:, 1] = 1 - d
    a["eth_dst"] = mac2
    if vlan:
        a["vlan_tpid"] = ETH_P_8021Q
        a["vlan_tci"] = f.vlan[fl]
    a["eth_type"] = ETH_P_IPV6 if v6 else ETH_P_IP
    from_h = d == f.h[fl]
    ttl = np.where(from_h, 64, f.ttl_peer[fl])
    if v6:
        a["ip6_flow"] = 6 << 28
        a["ip6_plen"] = tcp_len
        a["ip6_nxt"] = 6
        a["ip6_hlim"] = ttl
        a["ip6_src"] = np.where((d == 0)[:, None], _v6_addr(src, V6_CLIENT_PREFIX), _v6_addr(src, V6_SERVER_PREFIX))
        a["ip6_dst"] = np.where((d == 0)[:, None], _v6_addr(dst, V6_SERVER_PREFIX), _v6_addr(dst, V6_CLIENT_PREFIX))
    else:
        a["ip_vhl"] = 0x45
        a["ip_len"] = ip_len
        a["ip_id"] = p["ipid"][sel]
        a["ip_off"] = 0x4000  # DF
        a["ip_ttl"] = ttl
        a["ip_p"] = 6
        a["ip_src"] = src
        a["ip_dst"] = dst
    a["th_sport"] = np.where(d == 0, f.cport[fl], f.sport[fl])
    a["th_dport"] = np.where(d == 0, f.sport[fl], f.cport[fl])
    a["th_seq"] = p["seq_raw"][sel]
    a["th_ack"] = p["ack_raw"][sel]
    a["th_offx2"] = ((20 + opt_len) // 4) << 4
    flags = p["flags"][sel]
    a["th_flags"] = flags
    syn = (flags & TH_SYN) != 0
    win_scaled = np.where(d == 0, f.win_c[fl], f.win_s[fl])
    win_syn = np.where(d == 0, 64240, 65160)
    a["th_win"] = np.where(syn, win_syn, win_scaled)
    for name in a.dtype.names:
        if name in CONSTANTS:
            a[name] = CONSTANTS[name]
    if kind == K_SYN:
        a["o_mss"] = np.where(d == 0, f.mss_c[fl], f.mss_s[fl])
        a["o_ws"] = np.where(d == 0, f.ws_c[fl], f.ws_s[fl])
    if ts:
        a["o_tsval"] = p["tsval"][sel]
        a["o_tsecr"] = p["tsecr"][sel]
    if kind == K_SACK:
        a["o_sack_l"] = p["sack_l_raw"][sel]
        a["o_sack_r"] = p["sack_r_raw"][sel]
    # checksums (the payload is all zero bytes, so headers alone give them)
    raw = a.view(np.uint8).reshape(len(a), -1)
    ip_off = 16 + 12 + (4 if vlan else 0) + 2
    tcp_off = ip_off + (40 if v6 else 20)
    tcp_words = np.ascontiguousarray(raw[:, tcp_off:]).view(">u2")
    if v6:
        pseudo = np.ascontiguousarray(raw[:, ip_off + 8 : ip_off + 40]).view(">u2")
    else:
        pseudo = np.ascontiguousarray(raw[:, ip_off + 12 : ip_off + 20]).view(">u2")
        hdr = np.ascontiguousarray(raw[:, ip_off : ip_off + 20]).view(">u2")
        a["ip_sum"] = ~_ones_sum(hdr).astype(np.uint16)
    tl = tcp_len.astype(np.uint64)
    s = _ones_sum(np.concatenate([tcp_words, pseudo], axis=1)) + np.uint64(6) + (tl >> np.uint64(16)) \
        + (tl & np.uint64(0xFFFF))
    s = _fold(s)
    a["th_sum"] = ~s.astype(np.uint16)


def write_pcap(path: str, p: dict, f: Flows, order: np.ndarray, chunk: int = 200_000) -> int:
    """Writes packets ``order`` (global frame order); returns bytes written."""
    fl_all = p["flow"]
    group_all = (f.vlan[fl_all] > 0).astype(np.int64) * 12 + f.v6[fl_all].astype(np.int64) * 6 \
        + p["kind"].astype(np.int64) * 2 + f.ts[fl_all].astype(np.int64)
    layouts = {}
    for g in range(24):
        vlan, v6, kind, ts = bool(g // 12), bool((g // 6) % 2), (g // 2) % 3, bool(g % 2)
        layouts[g] = (vlan, v6, kind, ts, layout_dtype(vlan, v6, kind, ts))
    written = 0
    with open(path, "wb") as out:
        hdr = np.array([(0xA1B2C3D4, 2, 4, 0, 0, PCAP_SNAPLEN, LINKTYPE_ETHERNET)],
                       dtype=[("magic", LE32), ("vmaj", "<u2"), ("vmin", "<u2"), ("zone", "<i4"),
                              ("sigfigs", LE32), ("snaplen", LE32), ("linktype", LE32)])
        out.write(hdr.tobytes())
        written += hdr.nbytes
        for lo in range(0, len(order), chunk):
            sel = order[lo : lo + chunk]
            group = group_all[sel]
            hlen = np.array([layouts[g][4].itemsize for g in range(24)])[group]
            reclen = hlen + p["plen"][sel]
            offsets = np.concatenate([[0], np.cumsum(reclen)[:-1]])
            buf = np.zeros(int(reclen.sum()), dtype=np.uint8)
            for g in np.unique(group):
                vlan, v6, kind, ts, dt = layouts[int(g)]
                m = np.flatnonzero(group == g)
                a = np.zeros(len(m), dtype=dt)
                fill_headers(a, p, f, sel[m], vlan, v6, kind, ts)
                dst = offsets[m][:, None] + np.arange(dt.itemsize)
                buf[dst] = a.view(np.uint8).reshape(len(m), dt.itemsize)
            out.write(buf.data)
            written += buf.nbytes
    return written


# ----------------------------------------------------------------------------------------------
# Truth, meta, and the whole run
# ----------------------------------------------------------------------------------------------

TRUTH_COLUMNS = ["frame", "stream", "direction", "seq", "seq_raw", "len", "kind", "original_frame",
                 "since_original", "dup_acks", "reason"]


def _reason(kind: str, dups: int, since_us: int, last_dup_gap_us: int | None) -> str:
    if kind == LABEL_FAST:
        return f"{dups} duplicate ACKs, resent {last_dup_gap_us} us after the third"
    if kind == LABEL_SYN:
        return f"SYN unanswered, resent after {since_us / 1e6:.3f} s"
    return f"tail loss, no duplicate ACK, resent on RTO {since_us / 1000:.1f} ms after the original"


def generate(path: str, frames: int = 1_000_000, seed: int = 1, verbose: bool = False) -> dict:
    """Writes ``path``, ``path.truth.csv`` and ``path.meta.json``; returns the meta dict."""
    t0 = time.perf_counter()
    p, f, labels = build_packets(frames, seed)
    t1 = time.perf_counter()
    derive_fields(p, f)
    order = np.argsort(p["t"], kind="stable")[:frames]
    frame_of = np.full(len(p["t"]), -1, dtype=np.int64)
    frame_of[order] = np.arange(1, len(order) + 1)
    tmp = path + ".tmp"
    size = write_pcap(tmp, p, f, order)
    os.replace(tmp, path)
    t2 = time.perf_counter()
    # tcp.stream numbering: flows in order of their first frame in the file
    fl_in = p["flow"][order]
    first = np.unique(fl_in, return_index=True)
    stream_of = np.full(len(f.v6), -1, dtype=np.int64)
    stream_of[first[0][np.argsort(first[1])]] = np.arange(len(first[0]))
    rows = []
    counts = {LABEL_RTO: 0, LABEL_FAST: 0, LABEL_SYN: 0}
    for i, kind, o, dups, k in labels:
        fr = int(frame_of[i])
        if fr < 0:
            continue  # beyond the end of the capture
        since = int(p["t"][i] - p["t"][o])
        gap = None
        if kind == LABEL_FAST:  # time since the receiver's last ACK before the resend
            prev = frame_of[i] - 2
            j = order[prev]
            while p["flow"][j] != k or p["d"][j] == p["d"][i]:
                prev -= 1
                j = order[prev]
            gap = int(p["t"][i] - p["t"][j])
        counts[kind] += 1
        rows.append([fr, int(stream_of[k]), "client_to_server" if p["d"][i] == 0 else "server_to_client",
                     int(p["seq"][i]), int(p["seq_raw"][i]), int(p["plen"][i]), kind, int(frame_of[o]),
                     f"{since / 1e6:.6f}", dups, _reason(kind, dups, since, gap)])
    rows.sort()
    with open(path + ".truth.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TRUTH_COLUMNS)
        w.writerows(rows)
    in_file = np.unique(fl_in)
    meta = {
        "generator": "benchmarks/gen.py", "version": GEN_VERSION, "seed": seed, "frames": int(len(order)),
        "bytes": size, "flows": int(len(in_file)), "ipv6_flows": int(f.v6[in_file].sum()),
        "vlan_flows": int((f.vlan[in_file] > 0).sum()),
        "ipv6_frames": int(f.v6[fl_in].sum()), "vlan_frames": int((f.vlan[fl_in] > 0).sum()),
        "duration_s": round(float(p["t"][order[-1]] - p["t"][order[0]]) / 1e6, 3),
        "retransmissions": counts, "retransmitted_frames": len(rows),
        "seconds": {"flows": round(t1 - t0, 2), "write": round(t2 - t1, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }
    with open(path + ".meta.json", "w") as fh:
        json.dump(meta, fh, indent=2)
    if verbose:
        print(json.dumps(meta, indent=2))
    return meta


# ----------------------------------------------------------------------------------------------
# Checking the labels against tshark
# ----------------------------------------------------------------------------------------------

TSHARK_FIELDS = ["frame.number", "tcp.analysis.retransmission", "tcp.analysis.fast_retransmission",
                 "tcp.analysis.spurious_retransmission", "tcp.analysis.out_of_order",
                 "tcp.analysis.lost_segment", "tcp.analysis.ack_lost_segment", "tcp.analysis.keep_alive",
                 "tcp.analysis.duplicate_ack", "tcp.analysis.window_update", "tcp.analysis.window_full",
                 "tcp.analysis.zero_window", "tcp.analysis.reused_ports", "tcp.stream"]


def read_truth(path: str) -> dict[int, dict]:
    with open(path + ".truth.csv", newline="") as fh:
        return {int(r["frame"]): r for r in csv.DictReader(fh)}


def tshark_flags(path: str) -> dict[str, set[int]]:
    """Frames tshark flags, by analysis flag name (tcp.stream kept as frame -> stream in 'stream')."""
    cmd = ["tshark", "-n", "-r", path, "-Y", "tcp.analysis.flags or tcp.analysis.retransmission",
           "-T", "fields", "-E", "separator=\t"]
    for fld in TSHARK_FIELDS:
        cmd += ["-e", fld]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    flags: dict[str, set[int]] = {fld.rsplit(".", 1)[1]: set() for fld in TSHARK_FIELDS[1:-1]}
    flags["stream"] = {}
    for line in out.splitlines():
        vals = line.split("\t")
        fr = int(vals[0])
        for fld, v in zip(TSHARK_FIELDS[1:-1], vals[1:-1]):
            if v:
                flags[fld.rsplit(".", 1)[1]].add(fr)
        flags["stream"][fr] = int(vals[-1]) if vals[-1] else -1
    return flags


def compare_with_tshark(path: str) -> dict:
    """Exact agreement report: truth file versus tshark's analysis flags."""
    truth = read_truth(path)
    fl = tshark_flags(path)
    want_all = set(truth)
    want_fast = {fr for fr, r in truth.items() if r["kind"] == LABEL_FAST}
    res = {
        "truth_frames": len(want_all),
        "tshark_retransmission": len(fl["retransmission"]),
        "tshark_fast": len(fl["fast_retransmission"]),
        "missing": sorted(want_all - fl["retransmission"]),
        "extra": sorted(fl["retransmission"] - want_all),
        "fast_mismatch": sorted(want_fast ^ fl["fast_retransmission"]),
        "stream_mismatch": sorted(fr for fr in want_all & set(fl["stream"])
                                  if fl["stream"][fr] != int(truth[fr]["stream"])),
        "duplicate_ack": len(fl["duplicate_ack"]),
    }
    for bad in ("spurious_retransmission", "out_of_order", "lost_segment", "ack_lost_segment", "keep_alive",
                "window_update", "window_full", "zero_window", "reused_ports"):
        res[bad] = len(fl[bad])
    res["exact"] = not (res["missing"] or res["extra"] or res["fast_mismatch"] or res["stream_mismatch"]) and all(
        res[b] == 0 for b in ("spurious_retransmission", "out_of_order", "lost_segment", "ack_lost_segment",
                              "keep_alive", "window_full", "zero_window", "reused_ports"))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames to write (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("-o", "--output", default="bench.pcap", help="output pcap (default bench.pcap)")
    ap.add_argument("--check", action="store_true", help="then compare the truth file with tshark's flags")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    meta = generate(args.output, args.frames, args.seed, verbose=not args.quiet)
    if args.check:
        res = compare_with_tshark(args.output)
        short = {k: (v if not isinstance(v, list) else (len(v), v[:10])) for k, v in res.items()}
        print(json.dumps(short, indent=2))
        return 0 if res["exact"] else 1
    return 0 if meta["frames"] else 1


if __name__ == "__main__":
    sys.exit(main())
