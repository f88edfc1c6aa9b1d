#!/usr/bin/env python3
"""Seeded benchmark capture: thousands of interleaved TCP flows, and the true cause of every out-of-sequence frame.

    python benchmarks/gen.py -o bench.pcap                  # 1,000,000 frames, seed 1
    python benchmarks/gen.py --frames 20000 --seed 7 -o small.pcap --check
    python benchmarks/gen.py --frames 20000 --capture-loss 0.5 --rate reorder_before=0.01 -o x.pcap

Writes these files:

- ``FILE``                   classic pcap, Ethernet, microsecond timestamps, full payloads (zero bytes),
                             valid IPv4 and TCP checksums;
- ``FILE.truth.csv``         one row per frame whose cause is one of the kinds below (TRUTH_COLUMNS);
- ``FILE.capture_loss.csv``  the packets the capture itself dropped (only with ``--capture-loss``);
- ``FILE.meta.json``         the parameters, the rates and the counts (flows, frames per cause);
- ``FILE.tshark.json``       with ``--check``: tshark reads the file cleanly, and its labels per cause.

The model
---------
Each flow is a client/server conversation simulated event by event, both hosts being Linux-like TCP
stacks, with a *capture point* somewhere on the path: on the client host (25% of flows), on the server
host (55%) or on a tap in the middle (20%). Every packet has a send time at its sender, a time at the
capture point (its frame time) and a time at its receiver; losses, reordering and delay spikes happen
either *before* the capture point (between the sender and the tap) or *after* it (between the tap and
the receiver). A tap on a host has nothing before it for that host's packets and nothing after it for
the packets it receives. Each link is FIFO but for the packets the model delays on purpose.

Traffic: a full handshake (MSS, window scale; SACK-permitted on 88% of flows, TCP timestamps on 90%),
request/response rounds (web-like, RPC-like, bulk downloads and uploads), then a FIN close by either
side. Flows start as a Poisson process, so hundreds are open at any time and their packets interleave.
About 15% of flows are IPv6 (no IP ID there) and 10% carry an 802.1Q tag; ISNs are random and 5% of
flows wrap around 2**32.

The stacks (Linux as the reference):

- sender: segments of at most MSS bytes (none of 1 byte), initial window 10 (RFC 6928), slow start and
  congestion avoidance (RFC 5681), CUBIC's decrease factor 0.7, capped by the peer's window; limited
  transmit on the first duplicate ACKs (RFC 3042); restart from the initial window after an idle RTO;
- RTO (RFC 6298 as Linux computes it): SRTT + max(4 RTTVAR, 200 ms), 1 s before any sample, doubled on
  each expiry (at most 120 s), reset by an ACK of new data. On expiry every outstanding un-SACKed
  segment is marked lost and resent from cwnd 1 in slow start (Linux's tcp_enter_loss);
- fast recovery: with SACK, RFC 6675 (entered at 3 duplicate ACKs or 3 SACKed segments; a hole with 3
  SACKed segments above it is lost; several holes per window are resent); without SACK, NewReno
  (RFC 6582): the head resent at the third duplicate ACK, each partial ACK resends the next hole. The
  window shrinks by Proportional Rate Reduction (RFC 6937), the first retransmission going at once. With
  timestamps, an ACK echoing a TSval older than the first retransmission ends the recovery (Linux's
  undo, Eifel). No RACK, TLP or F-RTO;
- receiver: a reassembly scoreboard; an ACK at once for out-of-order data, for a segment filling (part
  of) a hole and for duplicate data; otherwise a delayed ACK every second segment or after 40 ms
  (RFC 5681 4.2, RFC 9293 3.10.7.4). SACK blocks per RFC 2018 (the block holding the latest segment
  first, then the others most recent first, at most 3 with timestamps and 4 without), D-SACK per RFC 2883
  (the duplicate range first, below the cumulative ACK or inside the second block);
- timestamps: TSval from a per-host millisecond clock (random offset per connection) at the send time;
  TSecr = TS.Recent, updated per RFC 7323 4.3 (only by a segment at or below the last ACK sent, so it
  echoes the segment that last advanced the cumulative ACK, as Linux does);
- IPv4 IP ID: per host and connection, +1 for every packet it sends (SYN-ACKs, retransmissions and pure
  ACKs too), from a random start; a reordered segment keeps the ID it was sent with, a capture duplicate
  repeats it. DF is set;
- SYN and SYN-ACK: resent by timer after 1 s, then 2 s more (Linux TCP_TIMEOUT_INIT, doubling); a server
  in SYN-RECEIVED answers a repeated SYN with its SYN-ACK again.

The causes (``kind`` in the truth file; each from what the simulation did, not from a rule on the file):

- ``retransmission``: needed (no earlier transmission of these bytes reached the receiver), sent by the
  retransmission timer or in the loss recovery that follows it;
- ``fast_retransmission``: needed, sent in fast recovery (duplicate ACKs, SACK, NewReno partial ACK);
- ``spurious_retransmission``: not needed: an earlier transmission of every byte reached the receiver
  (it was reordered or delayed, or only the ACK for it was lost or late). ``evidence`` says what the file
  shows of it: ``dsack`` (a later D-SACK of its range), ``eifel`` (the first later ACK covering it
  echoes an older TSval, RFC 3522), ``acked`` (an ACK covered it before it), or ``none``. A late
  original arriving after its own retransmission makes the retransmission spurious and the original
  ``out_of_order``;
- ``syn_retransmission``: a SYN or SYN-ACK sent again (the same ISN);
- ``out_of_order``: a first transmission of data reaching the capture point after a packet of its
  direction sent later (network reordering, or a delay spike, before the capture point);
- ``duplicate``: the same frame twice in the file, byte-identical, 1-20 us apart (a capture on two
  ports), for any packet: data, pure ACKs, SYNs, FINs.

``original_captured`` says whether the first transmission of the bytes is in the file: false when it
was lost before the capture point (the file has a hole there, "previous segment not captured", or
nothing at all for a tail loss: the retransmission then arrives in order), or dropped by the capture.
``original_frame`` is that first transmission's frame (for a duplicate, the first copy; empty for an
out_of_order frame, which is itself the original, and when the original is not in the file); it may come
after the row's frame when the original was delayed past its resend (``since_original`` < 0).
``trigger`` is ``timeout``, ``fast`` or ``syn_timeout`` for a retransmission, ``reordering`` or
``delay`` for an out_of_order frame, ``capture`` for a duplicate.

Every rate is a field of ``Rates`` (``--rate NAME=VALUE``). ``--capture-loss PCT`` drops frames at the
capture itself (the network delivered them past the capture point; the receiver acknowledges those it
got) and lists them in ``FILE.capture_loss.csv`` (CAPTURE_LOSS_COLUMNS: the frames before and after it
in its connection, and the sequence range missed); both copies of a duplicate go together.
"""
from __future__ import annotations

import argparse
import bisect
import csv
import dataclasses
import heapq
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

GEN_VERSION = 3  # bump when the output for a given (frames, seed) changes

# TCP flags (RFC 9293)
TH_FIN = 0x01
TH_SYN = 0x02
TH_PSH = 0x08
TH_ACK = 0x10

KIND_RTO = "retransmission"
KIND_FAST = "fast_retransmission"
KIND_SPURIOUS = "spurious_retransmission"
KIND_SYN = "syn_retransmission"
KIND_OOO = "out_of_order"
KIND_DUP = "duplicate"
KINDS = (KIND_RTO, KIND_FAST, KIND_SPURIOUS, KIND_SYN, KIND_OOO, KIND_DUP)

PCAP_SNAPLEN = 262144
LINKTYPE_ETHERNET = 1
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
EPOCH_START = 1_709_294_400  # 2024-03-01 12:00:00 UTC
MASK32 = 0xFFFFFFFF

# flows
FLOWS_PER_SECOND = 75.0  # Poisson arrival rate
IPV6_SHARE = 0.15
VLAN_SHARE = 0.10
WRAP_SHARE = 0.05
NO_TS_SHARE = 0.10
NO_SACK_SHARE = 0.12
TAP_CLIENT_SHARE = 0.25  # capture point on the client host
TAP_SERVER_SHARE = 0.55  # on the server host; the rest on a tap in the middle of the path

# the stacks (Linux values where the RFCs leave a choice; times in microseconds)
IW = 10  # initial window, segments (RFC 6928)
DUPTHRESH = 3  # RFC 5681 3.2, RFC 6675
BETA = 0.7  # CUBIC multiplicative decrease (RFC 9438)
RTO_INIT = 1_000_000  # RFC 6298 2.1
RTO_MIN = 200_000  # Linux TCP_RTO_MIN
RTO_MAX = 120_000_000  # Linux TCP_RTO_MAX
SYN_RTO = 1_000_000  # Linux TCP_TIMEOUT_INIT, doubled per retry
SYN_RETRIES = 6
DELACK = 40_000  # Linux TCP_DELACK_MIN
TS_OPT = 12  # NOP NOP TS: bytes taken from each segment's MSS
SACK_BLOCKS_TS, SACK_BLOCKS = 3, 4  # RFC 2018: 40 option bytes, less 12 for timestamps
# the network
JITTER = 30  # us, per link crossed
REORDER_MAX = 5  # a reordered segment lands behind 1..REORDER_MAX later ones (mostly 1 or 2)
BURST_SPAN = 8  # segments after a loss that may be lost with it
SPIKE = (0.85, 1.4)  # a delay spike lasts this many of the sender's RTO
DUP_GAP = (1, 20)  # us between the two copies of a capture duplicate


@dataclass(frozen=True)
class Rates:
    """How often each event happens: per transmission of that type unless said otherwise."""

    loss_after: float = 0.004  # a data segment lost between the capture point and its receiver
    loss_before: float = 0.003  # lost between its sender and the capture point (never captured)
    burst_start: float = 0.3  # a loss opens a burst: ...
    burst_loss: float = 0.3  # ... each of the next BURST_SPAN segments is lost at the same place
    retx_loss: float = 0.05  # a retransmission lost again (RTO backoff)
    reorder_before: float = 0.003  # a data segment delayed behind later ones before the capture point
    reorder_after: float = 0.001  # ... after it (the capture is in order, the receiver is not)
    delay_spike: float = 0.002  # a data segment delayed by SPIKE x RTO (before or after the capture point)
    ack_loss: float = 0.003  # a pure ACK lost
    ack_spike: float = 0.002  # a pure ACK delayed by SPIKE x RTO
    syn_loss: float = 0.04  # the client's first SYN lost after the capture point
    synack_loss: float = 0.03  # the server's first SYN-ACK lost after the capture point
    syn_reloss: float = 0.2  # a resent SYN or SYN-ACK lost again
    capture_dup: float = 0.002  # a captured packet captured twice
    capture_loss: float = 0.0  # a packet at the capture point missing from the file

    @classmethod
    def parse(cls, items: list[str], capture_loss_pct: float) -> "Rates":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {}
        for item in items:
            name, _, value = item.partition("=")
            if name not in names:
                raise ValueError(f"unknown rate {name!r} (known: {', '.join(sorted(names))})")
            kw[name] = float(value)
        kw.setdefault("capture_loss", capture_loss_pct / 100.0)
        for name, v in kw.items():
            if not 0.0 <= v < 1.0:
                raise ValueError(f"rate {name} must be in [0, 1), got {v}")
        return cls(**kw)


# ----------------------------------------------------------------------------------------------
# Packet records: one list per packet while its flow runs, then one numpy column per field
# ----------------------------------------------------------------------------------------------

PACKET_FIELDS = (  # name, dtype, meaning; times in us, sequence numbers relative (the SYN is 0)
    ("t_send", np.int64, "when its sender sent it"),
    ("t_tap", np.int64, "when it passed the capture point: its frame time (-1: lost before)"),
    ("t_arr", np.int64, "when it reached its receiver (-1: lost)"),
    ("t_dec", np.int64, "when its sender decided to send it (the event it answers)"),
    ("d", np.int8, "direction: 0 client -> server, 1 server -> client"),
    ("flags", np.uint8, "TCP flags"),
    ("seq", np.int64, "sequence number"),
    ("ack", np.int64, "acknowledgment number (0 without ACK)"),
    ("plen", np.int32, "payload bytes"),
    ("tsval", np.int64, "TSval (0 without timestamps)"),
    ("tsecr", np.int64, "TSecr"),
    ("ipid", np.int32, "IPv4 identification (also kept for IPv6 flows, which do not send it)"),
    ("nsack", np.int8, "SACK blocks"),
    ("s0l", np.int64, "SACK block 1, left edge"),
    ("s0r", np.int64, "SACK block 1, right edge"),
    ("s1l", np.int64, "SACK block 2, left edge"),
    ("s1r", np.int64, "SACK block 2, right edge"),
    ("s2l", np.int64, "SACK block 3, left edge"),
    ("s2r", np.int64, "SACK block 3, right edge"),
    ("s3l", np.int64, "SACK block 4, left edge"),
    ("s3r", np.int64, "SACK block 4, right edge"),
    ("dsack", np.int8, "1: the first SACK block reports a duplicate (RFC 2883)"),
    ("tx", np.int16, "transmission number of these bytes (0: the first)"),
    ("orig", np.int64, "packet index of their first transmission (itself for a first one)"),
    ("prev", np.int64, "packet index of their previous transmission (-1: none)"),
    ("trig", np.int8, "TRIG_*: why a resend was sent"),
    ("fate", np.int8, "F_*: what the network did to it"),
    ("delay", np.int32, "extra delay of a reordered or delayed packet"),
    ("dup_dt", np.int16, "us between its two copies when captured twice (0: once)"),
    ("spurious", np.int8, "1: a resend whose bytes an earlier transmission delivered"),
    ("why", np.int8, "WHY_*: why a pure ACK was sent"),
)
COLUMNS = tuple(name for name, _, _ in PACKET_FIELDS)
(T_SEND, T_TAP, T_ARR, T_DEC, D, FLAGS, SEQ, ACK, PLEN, TSVAL, TSECR, IPID, NSACK, S0L, S0R, S1L, S1R, S2L, S2R,
 S3L, S3R, DSACK, TX, ORIG, PREV, TRIG, FATE, DELAY, DUP_DT, SPURIOUS, WHY) = range(len(COLUMNS))
NCOL = len(COLUMNS)

# trig: a first transmission; a resend by the timer (or the loss recovery after it); in SACK recovery;
# at NewReno's third duplicate ACK; at a NewReno partial ACK; a SYN or SYN-ACK again
TRIG_NONE, TRIG_TIMEOUT, TRIG_SACK, TRIG_DUPACK, TRIG_PARTIAL, TRIG_SYN = range(6)
TRIG_TEXT = ("", "timeout", "fast", "fast", "fast", "syn_timeout")  # the truth file's trigger
# fate: delivered in FIFO order; lost before / after the capture point; reordered before / after it;
# held by a delay spike before / after it
F_OK, F_LOSS_B, F_LOSS_A, F_REORD_B, F_REORD_A, F_SPIKE_B, F_SPIKE_A = range(7)
# why a packet carrying an ACK was sent: with data; delayed ACK; every second segment; out-of-order data;
# a hole filled; duplicate data; handshake
WHY_DATA, WHY_DELAYED, WHY_NOW, WHY_OOO, WHY_FILL, WHY_DUP, WHY_HANDSHAKE = range(7)

# transmission types, for the fate tables
KD_DATA, KD_ACK, KD_SYN = range(3)
# segment state bits (Linux's sacked field)
SACKED, LOST, RETRANS = 1, 2, 4
# congestion state
OPEN, RECOVERY, LOSS = range(3)
# connection state
CLOSED, LISTEN, SYN_SENT, SYN_RCVD, ESTABLISHED = range(5)
# events
EV_ARRIVE, EV_RTO, EV_DELACK, EV_SYN_TIMER, EV_APP = range(5)
# how a received segment wants to be acknowledged
ACK_NONE, ACK_LATER, ACK_NOW = range(3)


def _segment_sizes(nbytes: int, seg: int) -> list[int]:
    """MSS-sized segments; never a 1-byte one (it could read as a keep-alive)."""
    if nbytes <= 0:
        return []
    full, rem = divmod(nbytes, seg)
    sizes = [seg] * full + ([rem] if rem else [])
    if sizes[-1] == 1:
        if len(sizes) == 1:
            sizes[-1] = 2
        else:
            sizes[-2] -= 1
            sizes[-1] = 2
    return sizes


def _serial_ge(a: int, b: int) -> bool:
    """a >= b in 32-bit serial arithmetic (RFC 1982), as TSvals are compared (RFC 7323)."""
    return ((a - b) & MASK32) < 0x80000000


class End:
    """One host of a connection: its sender (segments, congestion control, timers) and its receiver."""

    __slots__ = (
        "side", "state", "seg", "gap", "win_segs", "tsoff", "ipid", "tfree", "last_send",
        # sender: one entry per segment (a FIN is a segment of length 0 that ends one later)
        "seq_of", "plen_of", "end_of", "flag_of", "st", "tx", "una", "nxt", "snd_una", "snd_nxt",
        "write_end", "fin_queued", "cwnd", "ssthresh", "sacked_out", "lost_out", "retrans_out", "ca",
        "high_seq", "dupacks", "retx_ptr", "mark_upto", "fast_kind", "srtt", "rttvar", "rto", "backoff",
        "rto_at", "rto_ev", "syn_tx", "syn_rto", "prr_delivered", "prr_out", "recover_fs", "retrans_stamp",
        "prior_cwnd", "prior_ssthresh",
        # receiver
        "rcv_nxt", "ooo", "recent", "dsack", "ts_recent", "last_ack_sent", "delack_n", "delack_at",
        "delack_ev", "fin_seq", "fin_done", "bounds", "app_next",
    )

    def __init__(self, side: int, seg: int, gap: int, win_segs: int, tsoff: int, ipid: int):
        self.side = side
        self.state = CLOSED if side == 0 else LISTEN
        self.seg, self.gap, self.win_segs = seg, gap, win_segs
        self.tsoff, self.ipid = tsoff, ipid
        self.tfree = self.last_send = 0
        self.seq_of: list[int] = []
        self.plen_of: list[int] = []
        self.end_of: list[int] = []
        self.flag_of: list[int] = []
        self.st: list[int] = []
        self.tx: list[list[int]] = []
        self.una = self.nxt = 0
        self.snd_una = 0
        self.snd_nxt = self.write_end = 1  # the SYN takes sequence number 0
        self.fin_queued = False
        self.cwnd, self.ssthresh = float(IW), 1e9
        self.sacked_out = self.lost_out = self.retrans_out = 0
        self.ca, self.high_seq, self.dupacks = OPEN, 0, 0
        self.retx_ptr = self.mark_upto = 0
        self.fast_kind = TRIG_SACK
        self.prr_delivered = self.prr_out = self.recover_fs = 0
        self.retrans_stamp = 0  # TSval of the episode's first retransmission (0: none yet)
        self.prior_cwnd, self.prior_ssthresh = 0.0, 0
        self.srtt = self.rttvar = 0.0
        self.rto, self.backoff = RTO_INIT, 0
        self.rto_at: int | None = None
        self.rto_ev = False
        self.syn_tx: list[int] = []
        self.syn_rto = SYN_RTO
        self.rcv_nxt = 0
        self.ooo: list[list[int]] = []  # out-of-order blocks [left, right), sorted
        self.recent: list[list[int]] = []  # the same blocks, most recently changed first (RFC 2018)
        self.dsack: tuple[int, int] | None = None
        self.ts_recent = self.last_ack_sent = 0
        self.delack_n = 0
        self.delack_at: int | None = None
        self.delack_ev = False
        self.fin_seq, self.fin_done = -1, False
        self.bounds: list[int] = []  # sequence numbers where the peer's messages end
        self.app_next = 0

    def rto_now(self) -> int:
        return min(self.rto << self.backoff, RTO_MAX)


@dataclass
class FlowParams:
    rtt: int  # us, both links
    tap: float  # where the capture point is: 0 on the client host, 1 on the server host, else between
    seg: int  # payload bytes per full segment
    gaps: tuple[int, int]  # us between two segments a host sends back to back
    win_segs: tuple[int, int]  # each sender's limit: the peer's window in segments
    ts: bool
    sack: bool
    tsoff: tuple[int, int]
    ipid: tuple[int, int]
    script: list[tuple[int, int, int]]  # (request bytes, response bytes, think time us)
    closer: int  # 0 client, 1 server


class FlowSim:
    """Simulates one connection event by event; ``records`` holds its packets in send order."""

    def __init__(self, rnd: random.Random, rates: Rates, fp: FlowParams):
        self.rnd = rnd
        self.rates = rates
        self.fp = fp
        self.ts, self.sack = fp.ts, fp.sack
        self.max_blocks = SACK_BLOCKS_TS if fp.ts else SACK_BLOCKS
        owd = fp.rtt // 2
        self.before = (int(owd * fp.tap), int(owd * (1.0 - fp.tap)))
        self.after = (owd - self.before[0], owd - self.before[1])
        self.fifo_tap = [0, 0]
        self.fifo_arr = [0, 0]
        self.burst = [0, 0]
        self.burst_fate = [F_OK, F_OK]
        self.ends = [End(s, fp.seg, fp.gaps[s], fp.win_segs[s], fp.tsoff[s], fp.ipid[s]) for s in (0, 1)]
        reqs = np.cumsum([r for r, _, _ in fp.script]) + 1
        resps = np.cumsum([r for _, r, _ in fp.script]) + 1
        self.ends[1].bounds = reqs.tolist()
        self.ends[0].bounds = resps.tolist()
        self.tables = [self._fate_tables(d) for d in (0, 1)]
        self.records: list[list[int]] = []
        self.heap: list[tuple] = []
        self.nev = 0
        self.now = 0  # time of the event being handled: when the stack decides what it sends

    # -- the network ---------------------------------------------------------------------------
    def _fate_tables(self, d: int) -> dict:
        """Cumulative (probability, fate) lists per transmission type, for what direction d's links allow."""
        r = self.rates
        b, a = self.before[d] > 0, self.after[d] > 0

        def table(*entries):
            out, acc = [], 0.0
            for p, fate, ok in entries:
                if ok and p > 0:
                    acc += p
                    out.append((acc, fate))
            return out

        both = 0.5 if a and b else 1.0
        lose_retx = F_LOSS_A if a else F_LOSS_B
        syn_p = r.syn_loss if d == 0 else r.synack_loss
        return {
            (KD_DATA, 0): table((r.loss_after, F_LOSS_A, a), (r.loss_before, F_LOSS_B, b),
                                (r.reorder_after, F_REORD_A, a), (r.reorder_before, F_REORD_B, b),
                                (r.delay_spike * both, F_SPIKE_A, a), (r.delay_spike * both, F_SPIKE_B, b)),
            (KD_DATA, 1): table((r.retx_loss, lose_retx, True)),
            (KD_ACK, 0): table((r.ack_loss * both, F_LOSS_A, a), (r.ack_loss * both, F_LOSS_B, b),
                               (r.ack_spike * both, F_SPIKE_A, a), (r.ack_spike * both, F_SPIKE_B, b)),
            (KD_SYN, 0): table((syn_p, F_LOSS_A, a)),
            (KD_SYN, 1): table((r.syn_reloss, F_LOSS_A, a)),
        }

    def _fate(self, d: int, kind: int, tx: int) -> int:
        rnd = self.rnd.random
        fate = F_OK
        if kind == KD_DATA and tx == 0 and self.burst[d]:
            self.burst[d] -= 1
            if rnd() < self.rates.burst_loss:
                return self.burst_fate[d]
        u = rnd()
        for p, f in self.tables[d][(kind, 1 if tx else 0)]:
            if u < p:
                fate = f
                break
        if fate in (F_LOSS_A, F_LOSS_B) and kind == KD_DATA and tx == 0 and rnd() < self.rates.burst_start:
            self.burst[d] = BURST_SPAN
            self.burst_fate[d] = fate
        return fate

    def _extra_delay(self, d: int, fate: int, kind: int) -> int:
        if fate in (F_REORD_B, F_REORD_A):  # behind k later segments, mostly 1 or 2
            k = min(1 + int(self.rnd.expovariate(0.8)), REORDER_MAX)
            return int(self.fp.gaps[d] * (k + 0.5)) + self.rnd.randrange(1, 8)
        sender = self.ends[d] if kind == KD_DATA else self.ends[1 - d]
        return int(sender.rto_now() * self.rnd.uniform(*SPIKE))

    def _carry(self, rec: list[int], kind: int) -> None:
        """Times at the capture point and at the receiver (-1: lost before reaching it)."""
        d, t = rec[D], rec[T_SEND]
        fate = self._fate(d, kind, rec[TX])
        rec[FATE] = fate
        b, a = self.before[d], self.after[d]
        if fate == F_LOSS_B:
            rec[T_TAP] = rec[T_ARR] = -1
            return
        extra = self._extra_delay(d, fate, kind) if fate >= F_REORD_B else 0
        rec[DELAY] = extra
        tt = t + b + (self.rnd.randrange(JITTER) if b else 0)
        late_before = fate in (F_REORD_B, F_SPIKE_B)
        if late_before:
            tt += extra
        else:
            tt = max(tt, self.fifo_tap[d] + 1)
            self.fifo_tap[d] = tt
        rec[T_TAP] = tt
        if fate == F_LOSS_A:
            rec[T_ARR] = -1
            return
        ta = tt + a + (self.rnd.randrange(JITTER) if a else 0)
        if fate in (F_REORD_A, F_SPIKE_A):
            ta += extra
        elif not late_before:  # a segment late from before the tap does not hold up the ones it let pass
            ta = max(ta, self.fifo_arr[d] + 1)
            self.fifo_arr[d] = ta
        rec[T_ARR] = ta
        if self.rnd.random() < self.rates.capture_dup:
            rec[DUP_DT] = self.rnd.randint(*DUP_GAP)

    # -- events ----------------------------------------------------------------------------------
    def push(self, t: int, ev: int, side: int, arg) -> None:
        self.nev += 1
        heapq.heappush(self.heap, (t, self.nev, ev, side, arg))

    def run(self, t0: int) -> list[list[int]]:
        self.now = t0
        self.connect(t0)
        heap = self.heap
        limit = 200_000 + 100 * sum(r + s for r, s, _ in self.fp.script) // self.fp.seg
        while heap:
            t, _, ev, side, arg = heapq.heappop(heap)
            self.now = t
            e = self.ends[side]
            if ev == EV_ARRIVE:
                self.arrive(e, t, self.records[arg])
            elif ev == EV_RTO:
                self.rto_event(e, t)
            elif ev == EV_DELACK:
                self.delack_event(e, t)
            elif ev == EV_SYN_TIMER:
                self.syn_timer(e, t, arg)
            else:
                self.write(e, t, *arg)
            if self.nev > limit:
                raise RuntimeError("flow simulation does not end (a bug in the model)")
        self._mark_spurious()
        return self.records

    def _mark_spurious(self) -> None:
        """A retransmission is spurious when an earlier transmission of its bytes reached the receiver."""
        recs = self.records
        for e in self.ends:
            for txs in e.tx:
                delivered = False
                for k, pid in enumerate(txs):
                    if k and delivered:
                        recs[pid][SPURIOUS] = 1
                    delivered = delivered or recs[pid][T_ARR] >= 0

    # -- sending ---------------------------------------------------------------------------------
    def xmit(self, e: End, t: int, flags: int, seq: int, plen: int = 0, kind: int = KD_DATA, tx: int = 0,
             orig: int = -1, prev: int = -1, trig: int = TRIG_NONE, why: int = WHY_DATA) -> int:
        """Sends one packet from ``e`` at ``t`` (or when its interface is free); returns its index."""
        if t < e.tfree:
            t = e.tfree
        e.tfree = t + (e.gap if plen else 1)
        e.last_send = t
        pid = len(self.records)
        rec = [0] * NCOL
        rec[T_SEND], rec[T_DEC], rec[D], rec[FLAGS], rec[SEQ], rec[PLEN] = t, self.now, e.side, flags, seq, plen
        rec[TX], rec[ORIG], rec[PREV], rec[TRIG], rec[WHY] = tx, pid if orig < 0 else orig, prev, trig, why
        if flags & TH_ACK:
            rec[ACK] = e.rcv_nxt
            if self.sack and (e.dsack or e.recent):
                blocks = ([e.dsack] if e.dsack else []) + e.recent
                n = min(len(blocks), self.max_blocks)
                rec[NSACK] = n
                rec[DSACK] = 1 if e.dsack else 0
                for k in range(n):
                    rec[S0L + 2 * k] = blocks[k][0]
                    rec[S0R + 2 * k] = blocks[k][1]
            e.last_ack_sent = e.rcv_nxt
            e.delack_n = 0
            e.delack_at = None
            e.dsack = None
        if self.ts:
            rec[TSVAL] = (e.tsoff + t // 1000) & MASK32
            rec[TSECR] = e.ts_recent if flags & TH_ACK else 0
        rec[IPID] = e.ipid
        e.ipid = (e.ipid + 1) & 0xFFFF
        self._carry(rec, kind)
        self.records.append(rec)
        if rec[T_ARR] >= 0:
            self.push(rec[T_ARR], EV_ARRIVE, 1 - e.side, pid)
        return pid

    def pure_ack(self, e: End, t: int, why: int) -> None:
        self.xmit(e, t, TH_ACK, e.snd_nxt, kind=KD_ACK, why=why)

    def arm_rto(self, e: End, t: int) -> None:
        e.rto_at = t + e.rto_now()
        if not e.rto_ev:
            e.rto_ev = True
            self.push(e.rto_at, EV_RTO, e.side, None)

    def try_send(self, e: End, t: int) -> int:
        """Retransmissions of lost segments first, then new data, while the window allows."""
        if e.state != ESTABLISHED:
            return 0
        sent = 0
        st = e.st
        while True:
            if e.nxt - e.una - e.sacked_out - e.lost_out + e.retrans_out >= e.cwnd:
                break
            if e.lost_out:
                i = max(e.retx_ptr, e.una)
                while i < e.nxt and (st[i] & (LOST | RETRANS | SACKED)) != LOST:
                    i += 1
                e.retx_ptr = i
                if i < e.nxt:
                    self.retransmit(e, t, i)
                    sent += 1
                    e.prr_out += 1
                    continue
            i = e.nxt
            if i < len(e.seq_of) and i - e.una < e.win_segs:
                pid = self.xmit(e, t, e.flag_of[i], e.seq_of[i], e.plen_of[i])
                e.tx[i].append(pid)
                e.nxt = i + 1
                e.snd_nxt = e.end_of[i]
                if e.rto_at is None:
                    self.arm_rto(e, t)
                sent += 1
                e.prr_out += 1
                continue
            break
        return sent

    def retransmit(self, e: End, t: int, i: int) -> None:
        e.st[i] |= RETRANS
        e.retrans_out += 1
        txs = e.tx[i]
        trig = TRIG_TIMEOUT if e.ca == LOSS else e.fast_kind
        pid = self.xmit(e, t, e.flag_of[i], e.seq_of[i], e.plen_of[i], tx=len(txs), orig=txs[0], prev=txs[-1],
                        trig=trig)
        txs.append(pid)
        if not e.retrans_stamp:
            e.retrans_stamp = self.records[pid][TSVAL]
        if e.rto_at is None:
            self.arm_rto(e, t)

    def write(self, e: End, t: int, nbytes: int, fin: bool) -> None:
        """The application writes ``nbytes`` (then closes, if ``fin``)."""
        if e.nxt == e.una and t - e.last_send > e.rto_now():
            e.cwnd = min(e.cwnd, float(IW))  # restart after idle (RFC 5681 4.1)
        sizes = _segment_sizes(nbytes, e.seg)
        seq = e.write_end
        for k, size in enumerate(sizes):
            self._queue(e, seq, size, TH_ACK | (TH_PSH if k == len(sizes) - 1 else 0))
            seq += size
        if fin and not e.fin_queued:
            e.fin_queued = True
            self._queue(e, seq, 0, TH_FIN | TH_ACK)
            seq += 1
        e.write_end = seq
        self.try_send(e, t)

    @staticmethod
    def _queue(e: End, seq: int, size: int, flags: int) -> None:
        e.seq_of.append(seq)
        e.plen_of.append(size)
        e.end_of.append(seq + size + (1 if flags & TH_FIN else 0))
        e.flag_of.append(flags)
        e.st.append(0)
        e.tx.append([])

    # -- the handshake ---------------------------------------------------------------------------
    def connect(self, t: int) -> None:
        c = self.ends[0]
        c.state = SYN_SENT
        self.send_syn(c, t, arm=True)

    def send_syn(self, e: End, t: int, arm: bool) -> None:
        tx = len(e.syn_tx)
        flags = TH_SYN if e.side == 0 else TH_SYN | TH_ACK
        pid = self.xmit(e, t, flags, 0, kind=KD_SYN, tx=tx, orig=e.syn_tx[0] if tx else -1,
                        prev=e.syn_tx[-1] if tx else -1, trig=TRIG_SYN if tx else TRIG_NONE, why=WHY_HANDSHAKE)
        e.syn_tx.append(pid)
        if arm:
            self.push(self.records[pid][T_SEND] + e.syn_rto, EV_SYN_TIMER, e.side, len(e.syn_tx))

    def syn_timer(self, e: End, t: int, token: int) -> None:
        if token != len(e.syn_tx) or e.state not in (SYN_SENT, SYN_RCVD) or token > SYN_RETRIES:
            return
        e.syn_rto *= 2
        self.send_syn(e, t, arm=True)

    def rtt_sample(self, e: End, m: float) -> None:
        """RFC 6298 2.2-2.3, with Linux's floor: RTO = SRTT + max(4 RTTVAR, 200 ms)."""
        if e.srtt == 0.0:
            e.srtt, e.rttvar = m, m / 2
        else:
            e.rttvar = 0.75 * e.rttvar + 0.25 * abs(e.srtt - m)
            e.srtt = 0.875 * e.srtt + 0.125 * m
        e.rto = min(int(e.srtt + max(4 * e.rttvar, RTO_MIN)), RTO_MAX)

    def handshake_packet(self, e: End, t: int, rec: list[int]) -> None:
        """A SYN or SYN-ACK arrives at ``e``."""
        tp = t + self.rnd.randrange(3, 30)
        if e.side == 1:
            if e.state == LISTEN:
                e.state = SYN_RCVD
                e.rcv_nxt = 1
                e.ts_recent = rec[TSVAL]
                self.send_syn(e, tp, arm=True)
            elif e.state == SYN_RCVD:  # the client resent its SYN: so does the server its SYN-ACK
                e.ts_recent = rec[TSVAL]
                self.send_syn(e, tp, arm=False)
            else:
                self.pure_ack(e, tp, WHY_HANDSHAKE)
            return
        if e.state == SYN_SENT:
            e.state = ESTABLISHED
            e.rcv_nxt = 1
            e.snd_una = 1
            e.ts_recent = rec[TSVAL]
            self.rtt_sample(e, t - self.records[e.syn_tx[-1]][T_SEND])
            self.pure_ack(e, tp, WHY_HANDSHAKE)
            first_request = self.fp.script[0][0]
            self.push(tp + self.rnd.randrange(20, 200), EV_APP, 0, (first_request, False))
        else:  # a repeated SYN-ACK
            self.pure_ack(e, tp, WHY_HANDSHAKE)

    # -- receiving -------------------------------------------------------------------------------
    def arrive(self, e: End, t: int, rec: list[int]) -> None:
        flags = rec[FLAGS]
        if flags & TH_SYN:
            self.handshake_packet(e, t, rec)
            return
        if e.state == SYN_RCVD and flags & TH_ACK and rec[ACK] >= 1:
            e.state = ESTABLISHED
            e.snd_una = 1
            self.rtt_sample(e, t - self.records[e.syn_tx[-1]][T_SEND])
        if e.state != ESTABLISHED:
            return
        if self.ts and rec[SEQ] <= e.last_ack_sent and _serial_ge(rec[TSVAL], e.ts_recent):
            e.ts_recent = rec[TSVAL]  # RFC 7323 4.3
        if flags & TH_ACK:
            self.on_ack(e, t, rec)
        mode, why = ACK_NONE, WHY_DATA
        if rec[PLEN] or flags & TH_FIN:
            mode, why = self.on_data(e, t, rec)
        tp = t + self.rnd.randrange(3, 30)
        self.app_check(e, tp)
        sent = self.try_send(e, tp)
        if sent or mode == ACK_NONE:
            return
        if mode == ACK_NOW:
            self.pure_ack(e, tp, why)
        elif e.delack_at is None:
            e.delack_at = tp + DELACK
            if not e.delack_ev:
                e.delack_ev = True
                self.push(e.delack_at, EV_DELACK, e.side, None)

    def on_data(self, e: End, t: int, rec: list[int]) -> tuple[int, int]:
        """The receiver's scoreboard takes a segment; returns how to acknowledge it, and why."""
        s = rec[SEQ]
        fin = 1 if rec[FLAGS] & TH_FIN else 0
        end = s + rec[PLEN] + fin
        if fin:
            e.fin_seq = s + rec[PLEN]
        rcv = e.rcv_nxt
        if end <= rcv:  # all of it received before: D-SACK below the cumulative ACK (RFC 2883)
            if self.sack:
                e.dsack = (s, end)
            return ACK_NOW, WHY_DUP
        if s > rcv:
            for b in e.ooo:
                if b[0] <= s and end <= b[1]:  # a duplicate above the cumulative ACK: its block second
                    if self.sack:
                        e.dsack = (s, end)
                    e.recent.remove(b)
                    e.recent.insert(0, b)
                    return ACK_NOW, WHY_DUP
            nb = [s, end]
            keep = []
            for b in e.ooo:
                if b[1] < s or b[0] > end:
                    keep.append(b)
                else:
                    nb[0], nb[1] = min(nb[0], b[0]), max(nb[1], b[1])
                    e.recent.remove(b)
            keep.append(nb)
            keep.sort()
            e.ooo = keep
            e.recent.insert(0, nb)
            return ACK_NOW, WHY_OOO
        if s < rcv and self.sack:
            e.dsack = (s, rcv)
        had_hole = bool(e.ooo)
        rcv = end
        while e.ooo and e.ooo[0][0] <= rcv:
            b = e.ooo.pop(0)
            rcv = max(rcv, b[1])
            e.recent.remove(b)
        e.rcv_nxt = rcv
        if e.fin_seq >= 0 and rcv > e.fin_seq and not e.fin_done:
            e.fin_done = True
            if e.fin_queued:  # our FIN is out: acknowledge theirs at once
                return ACK_NOW, WHY_NOW
            self.push(t + self.rnd.randrange(20, 500), EV_APP, e.side, (0, True))  # the application closes
            return ACK_LATER, WHY_DELAYED
        if had_hole:
            return ACK_NOW, WHY_FILL
        e.delack_n += 1
        return (ACK_NOW, WHY_NOW) if e.delack_n >= 2 else (ACK_LATER, WHY_DELAYED)

    def app_check(self, e: End, t: int) -> None:
        """Whole messages received: the application answers, goes on, or closes."""
        while e.app_next < len(e.bounds) and e.rcv_nxt >= e.bounds[e.app_next]:
            k = e.app_next
            e.app_next += 1
            last = k == len(self.fp.script) - 1
            if e.side == 1:
                resp = self.fp.script[k][1]
                self.push(t + self.rnd.randrange(50, 2000), EV_APP, 1, (resp, last and self.fp.closer == 1))
            elif not last:
                self.push(t + self.fp.script[k][2], EV_APP, 0, (self.fp.script[k + 1][0], False))
            elif self.fp.closer == 0:
                self.push(t + self.fp.script[k][2], EV_APP, 0, (0, True))

    def delack_event(self, e: End, t: int) -> None:
        e.delack_ev = False
        if e.delack_at is None:
            return
        if t < e.delack_at:
            e.delack_ev = True
            self.push(e.delack_at, EV_DELACK, e.side, None)
            return
        self.pure_ack(e, t, WHY_DELAYED)

    # -- the sender's side of an ACK -----------------------------------------------------------
    def on_ack(self, e: End, t: int, rec: list[int]) -> None:
        ack = rec[ACK]
        delivered = self.apply_sack(e, rec, ack) if self.sack and rec[NSACK] else 0
        st = e.st
        if ack > e.snd_una:
            i, acked, sent_at = e.una, 0, -1
            while i < e.nxt and e.end_of[i] <= ack:
                s = st[i]
                if s & SACKED:
                    e.sacked_out -= 1
                if s & LOST:
                    e.lost_out -= 1
                if s & RETRANS:
                    e.retrans_out -= 1
                txs = e.tx[i]
                if len(txs) == 1 or self.ts:  # Karn's rule, unless timestamps tell the copies apart
                    sent_at = self.records[txs[-1]][T_SEND]
                i += 1
                acked += 1
            e.una = i
            e.snd_una = ack
            delivered += acked
            if not self.sack:  # NewReno's duplicate ACKs stand for segments received (Linux's reno sacks)
                e.sacked_out = 0 if e.ca == OPEN else max(0, e.sacked_out - max(acked - 1, 0))
            if sent_at >= 0:
                self.rtt_sample(e, t - sent_at)
            e.backoff = 0
            e.dupacks = 0
            if e.ca != RECOVERY:
                e.cwnd += acked if e.cwnd < e.ssthresh else acked / e.cwnd
                e.cwnd = min(e.cwnd, float(e.win_segs))
            if e.ca != OPEN:
                if ack >= e.high_seq:
                    if e.ca == RECOVERY:
                        e.cwnd = float(e.ssthresh)
                    self.reopen(e)
                elif self.ts and e.retrans_stamp and rec[TSECR] and not _serial_ge(rec[TSECR], e.retrans_stamp):
                    self.undo(e)  # the ACK answers an original, not a retransmission (Eifel)
                elif e.ca == RECOVERY and not self.sack:  # a partial ACK: the next hole is lost (RFC 6582)
                    e.fast_kind = TRIG_PARTIAL
                    self.mark_head_lost(e)
            if e.nxt > e.una:
                self.arm_rto(e, t)
            else:
                e.rto_at = None
        elif ack == e.snd_una and not rec[PLEN] and not rec[FLAGS] & (TH_SYN | TH_FIN) and e.nxt > e.una:
            e.dupacks += 1
            if not self.sack:
                e.sacked_out = min(e.sacked_out + 1, e.nxt - e.una - e.lost_out)
                delivered += 1
        if e.ca == OPEN and e.nxt > e.una and (e.dupacks >= DUPTHRESH or (self.sack and e.sacked_out >= DUPTHRESH)):
            e.ca = RECOVERY
            e.high_seq = e.snd_nxt
            e.prior_cwnd, e.prior_ssthresh = e.cwnd, e.ssthresh
            e.ssthresh = max(int(e.cwnd * BETA), 2)
            e.fast_kind = TRIG_SACK if self.sack else TRIG_DUPACK
            e.mark_upto = e.una
            e.prr_delivered = e.prr_out = 0
            e.recover_fs = e.nxt - e.una
            self.mark_head_lost(e)
        if e.ca == RECOVERY:
            if self.sack:
                self.mark_lost_sack(e)
            self.prr(e, delivered)

    def reopen(self, e: End) -> None:
        e.ca = OPEN
        e.retrans_stamp = 0
        if not self.sack:
            e.sacked_out = 0

    def undo(self, e: End) -> None:
        """Linux's tcp_try_undo_partial / tcp_try_undo_loss: the recovery was spurious (the ACK echoes a TSval
        older than the first retransmission): restore the window, forget the lost marks, back to open."""
        e.cwnd = max(e.cwnd, e.prior_cwnd)
        e.ssthresh = max(e.ssthresh, e.prior_ssthresh)
        st = e.st
        for i in range(e.una, e.nxt):
            st[i] &= ~LOST
        e.lost_out = 0
        e.dupacks = 0
        self.reopen(e)

    @staticmethod
    def prr(e: End, delivered: int) -> None:
        """Proportional Rate Reduction (RFC 6937, as Linux's tcp_cwnd_reduction): the window for this ACK;
        at least one segment (the first retransmission) on entering recovery."""
        e.prr_delivered += delivered
        pipe = e.nxt - e.una - e.sacked_out - e.lost_out + e.retrans_out
        if pipe > e.ssthresh:
            sndcnt = -(-e.prr_delivered * e.ssthresh // max(e.recover_fs, 1)) - e.prr_out
        else:  # slow-start reduction bound
            sndcnt = min(e.ssthresh - pipe, max(e.prr_delivered - e.prr_out, delivered) + 1)
        sndcnt = max(sndcnt, 1 if e.prr_out == 0 else 0)
        e.cwnd = float(pipe + sndcnt)

    def apply_sack(self, e: End, rec: list[int], ack: int) -> int:
        """Marks the segments the SACK blocks cover; returns how many were not marked before."""
        n = rec[NSACK]
        newly = 0
        first = 1 if rec[S0L] < ack or (n > 1 and rec[S1L] <= rec[S0L] and rec[S0R] <= rec[S1R]) else 0
        st = e.st
        for k in range(first, n):
            left, right = rec[S0L + 2 * k], rec[S0R + 2 * k]
            i = bisect.bisect_left(e.seq_of, left, e.una, e.nxt)
            while i < e.nxt and e.end_of[i] <= right:
                s = st[i]
                if not s & SACKED:
                    if s & LOST:
                        e.lost_out -= 1
                    if s & RETRANS:
                        e.retrans_out -= 1
                    st[i] = SACKED
                    e.sacked_out += 1
                    newly += 1
                i += 1
        return newly

    def mark_head_lost(self, e: End) -> None:
        i = e.una
        if i < e.nxt and not e.st[i] & (SACKED | LOST):
            e.st[i] |= LOST
            e.lost_out += 1
            e.retx_ptr = min(e.retx_ptr, i)

    def mark_lost_sack(self, e: End) -> None:
        """RFC 6675 IsLost: a segment with DUPTHRESH SACKed segments above it is lost."""
        st = e.st
        i, count = e.nxt - 1, 0
        while i >= e.una and count < DUPTHRESH:
            if st[i] & SACKED:
                count += 1
            i -= 1
        if count < DUPTHRESH:
            return
        top = i + 1
        for j in range(max(e.mark_upto, e.una), top):
            if not st[j] & (SACKED | LOST):
                st[j] |= LOST
                e.lost_out += 1
                e.retx_ptr = min(e.retx_ptr, j)
        e.mark_upto = max(e.mark_upto, top)

    def rto_event(self, e: End, t: int) -> None:
        e.rto_ev = False
        if e.rto_at is None:
            return
        if t < e.rto_at:
            e.rto_ev = True
            self.push(e.rto_at, EV_RTO, e.side, None)
            return
        if e.nxt == e.una:
            e.rto_at = None
            return
        # the timer expired (RFC 6298 5.4-5.6; Linux tcp_enter_loss): everything un-SACKed is lost
        if e.ca == OPEN:
            e.prior_cwnd, e.prior_ssthresh = e.cwnd, e.ssthresh
        if e.ca != LOSS:
            e.ssthresh = max(int(e.cwnd * BETA), 2)
        e.cwnd = 1.0
        e.ca = LOSS
        e.high_seq = e.snd_nxt
        e.dupacks = 0
        if not self.sack:
            e.sacked_out = 0
        st = e.st
        for i in range(e.una, e.nxt):
            s = st[i]
            if s & SACKED:
                continue
            if s & RETRANS:
                e.retrans_out -= 1
                s &= ~RETRANS
            if not s & LOST:
                s |= LOST
                e.lost_out += 1
            st[i] = s
        e.retx_ptr = e.una
        e.backoff += 1
        self.arm_rto(e, t)
        self.try_send(e, t)


# ----------------------------------------------------------------------------------------------
# Many flows
# ----------------------------------------------------------------------------------------------


def _lowdisc(k: int, alpha: float, phase: float) -> float:
    """Low-discrepancy sequence, so even a small file gets its share of IPv6, VLAN and tap flows."""
    return (phase + k * alpha) % 1.0


def _flow_script(rng, kind: str) -> list[tuple[int, int, int]]:
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
    sack: np.ndarray  # SACK permitted on both sides
    tap: np.ndarray  # capture point: 0 client host, 1 server host, 2 between them
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
    ttl: np.ndarray  # (n, 2): TTL / hop limit per direction as seen at the capture point


SERVER_PORTS = np.array([443, 443, 443, 80, 8080, 5432, 6379, 22, 9092, 8443])


def _isn_for(rng, recs: np.ndarray) -> np.ndarray:
    """Random ISNs (5% near 2**32, so the flow wraps); no raw sequence or ACK number may be 0."""
    isn = rng.integers(1, 2**32 - 1, 2)
    d = recs[:, D]
    if rng.random() < WRAP_SHARE:
        for dd in (0, 1):
            span = int((recs[d == dd, SEQ] + recs[d == dd, PLEN]).max()) + 2
            isn[dd] = 2**32 - int(rng.integers(1, max(2, span)))
    for dd in (0, 1):  # Wireshark reads 0 as "unset"
        acked = recs[(d != dd) & ((recs[:, FLAGS] & TH_ACK) != 0), ACK]
        offs = np.concatenate([recs[d == dd, SEQ], recs[d == dd, SEQ] + recs[d == dd, PLEN], acked, [1]])
        while ((int(isn[dd]) + offs) % 2**32 == 0).any():
            isn[dd] = (int(isn[dd]) - 7) % 2**32
    return isn


def simulate(frames: int, seed: int, rates: Rates = Rates()) -> tuple[dict, Flows]:
    """Flows until ``frames`` frames reach the capture (more when the capture drops some); every
    packet's columns (COLUMNS, plus ``flow``), in flow-major send order, and the flows' attributes."""
    rng = np.random.default_rng(seed)
    cols: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS + ("flow",)}
    attrs: dict[str, list] = {}
    total, start, k, base = 0, 0.0, 0, 0
    used_ports: dict[int, int] = {}
    phase = rng.random(3)
    wanted = frames if rates.capture_loss == 0 else int(frames / (1 - rates.capture_loss) * 1.05) + 100
    while total < wanted:
        start += rng.exponential(1e6 / FLOWS_PER_SECOND)
        v6 = _lowdisc(k, 0.6180339887, phase[0]) < IPV6_SHARE
        vlan_on = _lowdisc(k, 0.7548776662, phase[1]) < VLAN_SHARE
        u_tap = _lowdisc(k, 0.5698402910, phase[2])
        tap = 0 if u_tap < TAP_CLIENT_SHARE else 1 if u_tap < TAP_CLIENT_SHARE + TAP_SERVER_SHARE else 2
        has_ts = bool(rng.random() >= NO_TS_SHARE)
        has_sack = bool(rng.random() >= NO_SACK_SHARE)
        mss_c = 1440 if v6 else 1460
        mss_s = mss_c if rng.random() > 0.1 else mss_c - 80
        seg = min(mss_c, mss_s) - (TS_OPT if has_ts else 0)
        ws_c, ws_s = 7, int(rng.choice([7, 8, 9]))
        win_c, win_s = (int(x) for x in rng.integers(500, 3000, 2))
        fkind = rng.choice(["web", "rpc", "download", "upload"], p=[0.6, 0.27, 0.09, 0.04])
        fp = FlowParams(
            rtt=int(rng.integers(2_000, 60_000)), tap=(0.0, 1.0, float(rng.uniform(0.2, 0.8)))[tap], seg=seg,
            gaps=tuple(int(x) for x in rng.integers(8, 100, 2)),
            win_segs=((win_s << ws_s) // seg, (win_c << ws_c) // seg), ts=has_ts, sack=has_sack,
            tsoff=tuple(int(x) for x in rng.integers(0, 2**32, 2)),
            ipid=tuple(int(x) for x in rng.integers(0, 65536, 2)),
            script=_flow_script(rng, str(fkind)), closer=0 if rng.random() < 0.7 else 1)
        sim = FlowSim(random.Random(int(rng.integers(2**62))), rates, fp)
        recs = np.array(sim.run(int(start)), dtype=np.int64)
        recs[:, ORIG] += base  # packet indices within the flow -> within the file
        recs[:, PREV] += np.where(recs[:, PREV] >= 0, base, 0)
        base += len(recs)
        for i, (name, dtype, _) in enumerate(PACKET_FIELDS):
            cols[name].append(recs[:, i].astype(dtype))
        cols["flow"].append(np.full(len(recs), k, dtype=np.int32))
        seen = recs[:, T_TAP] >= 0
        total += int(seen.sum() + (seen & (recs[:, DUP_DT] > 0)).sum())
        # addresses: many clients, a few servers; (client, port) never reused
        cli = int(rng.integers(0, 4000))
        port = used_ports.get(cli, int(rng.integers(32768, 40000)))
        used_ports[cli] = port + 1 + int(rng.integers(0, 7))
        hops = rng.integers(3, 20, 2)
        init_ttl = (64, int(rng.choice([64, 64, 128])))  # Linux clients; some Windows servers
        ttl = [init_ttl[dd] - (0 if fp.tap == float(dd) else int(hops[dd])) for dd in (0, 1)]
        row = dict(
            v6=v6, vlan=int(rng.choice([10, 20, 100, 4001])) if vlan_on else 0, ts=has_ts, sack=has_sack, tap=tap,
            cli_ip=(10 << 24) | (1 << 16) | cli if not v6 else cli + 1,
            srv_ip=(10 << 24) | (200 << 16) | int(rng.integers(1, 40)) if not v6 else 0x5000 + int(rng.integers(1, 40)),
            cport=port, sport=int(rng.choice(SERVER_PORTS)), mss_c=mss_c, mss_s=mss_s, ws_c=ws_c, ws_s=ws_s,
            win_c=win_c, win_s=win_s, isn=_isn_for(rng, recs), ttl=ttl,
        )
        for key, v in row.items():
            attrs.setdefault(key, []).append(v)
        k += 1
    p = {name: np.concatenate(cols.pop(name)) for name in list(cols)}
    return p, Flows(**{key: np.asarray(v) for key, v in attrs.items()})


def derive_raw(p: dict, f: Flows) -> None:
    """Sequence, ACK and SACK numbers as on the wire (offsets from each direction's ISN, mod 2**32)."""
    fl, d = p["flow"], p["d"].astype(np.int64)
    own, peer = f.isn[fl, d], f.isn[fl, 1 - d]
    p["seq_raw"] = ((own + p["seq"]) & MASK32).astype(np.uint32)
    p["ack_raw"] = np.where((p["flags"] & TH_ACK) != 0, (peer + p["ack"]) & MASK32, 0).astype(np.uint32)
    for name in ("s0l", "s0r", "s1l", "s1r", "s2l", "s2r", "s3l", "s3r"):
        p[name + "_raw"] = ((peer + p[name]) & MASK32).astype(np.uint32)


# ----------------------------------------------------------------------------------------------
# The capture: which packets are frames, in what order
# ----------------------------------------------------------------------------------------------


@dataclass
class Capture:
    pkt: np.ndarray  # packet index of each frame (frame number = position + 1)
    t: np.ndarray  # frame time, us since EPOCH_START
    copy: np.ndarray  # the frame is the second copy of a capture duplicate
    frame_of: np.ndarray  # per packet: frame number of its (first) copy, 0 when not in the file
    ooo: np.ndarray  # per packet: a first transmission reaching the capture point after higher data
    dropped: np.ndarray  # packets the capture dropped, within the file's time span, in time order
    dropped_t: np.ndarray


def _out_of_order(p: dict, cap: np.ndarray) -> np.ndarray:
    """Per packet: a first transmission of data reaching the capture point after a packet of its direction
    that was sent later, with a higher sequence number (data, or a pure ACK, whose sequence number is the
    sender's next one)."""
    c = cap[np.lexsort((cap, p["t_tap"][cap]))]
    key = p["flow"][c] * 2 + p["d"][c]
    c = c[np.argsort(key, kind="stable")]
    key = p["flow"][c] * 2 + p["d"][c]
    fin = (p["flags"][c] & TH_FIN) != 0
    syn = (p["flags"][c] & TH_SYN) != 0
    data = ((p["plen"][c] > 0) | fin) & ~syn
    end = np.where(syn, 0, p["seq"][c] + p["plen"][c] + fin)
    big = np.int64(1) << 40
    high = np.maximum.accumulate(key * big + end)
    before = np.empty_like(high)
    before[0] = 0
    before[1:] = high[:-1] - key[1:] * big  # highest end among earlier frames (negative across a group start)
    out = np.zeros(len(p["t_tap"]), dtype=bool)
    out[c] = data & (p["tx"][c] == 0) & (p["seq"][c] < before)
    return out


def capture(p: dict, frames: int, rates: Rates, seed: int) -> Capture:
    cap = np.flatnonzero(p["t_tap"] >= 0)
    dup = cap[p["dup_dt"][cap] > 0]
    pkt = np.concatenate([cap, dup])
    copy = np.concatenate([np.zeros(len(cap), dtype=bool), np.ones(len(dup), dtype=bool)])
    t = np.concatenate([p["t_tap"][cap], p["t_tap"][dup] + p["dup_dt"][dup]])
    o = np.lexsort((copy, pkt, t))
    pkt, copy, t = pkt[o], copy[o], t[o]
    lost = np.zeros(len(pkt), dtype=bool)
    if rates.capture_loss > 0:  # per packet, so both copies of a duplicate go together
        lost = (np.random.default_rng([seed, 7]).random(len(p["t_tap"])) < rates.capture_loss)[pkt]
    kept = np.flatnonzero(~lost)[:frames]
    gone = np.flatnonzero(lost & ~copy & (t <= t[kept[-1]]))
    frame_of = np.zeros(len(p["t_tap"]), dtype=np.int64)
    first = ~copy[kept]
    frame_of[pkt[kept][first]] = np.flatnonzero(first) + 1
    return Capture(pkt=pkt[kept], t=t[kept], copy=copy[kept], frame_of=frame_of, ooo=_out_of_order(p, cap),
                   dropped=pkt[gone], dropped_t=t[gone])


# ----------------------------------------------------------------------------------------------
# Truth
# ----------------------------------------------------------------------------------------------

TRUTH_COLUMNS = ["frame", "stream", "direction", "seq", "seq_raw", "len", "kind", "original_captured",
                 "original_frame", "since_original", "trigger", "evidence", "reason"]
CAPTURE_LOSS_COLUMNS = ["stream", "direction", "time", "seq", "seq_raw", "len", "seq_end", "flags",
                        "frame_before", "frame_after"]
WHERE = {F_LOSS_B: "before", F_REORD_B: "before", F_SPIKE_B: "before",
         F_LOSS_A: "after", F_REORD_A: "after", F_SPIKE_A: "after"}
TRIG_REASON = {TRIG_SACK: "SACK recovery (RFC 6675)", TRIG_DUPACK: "3 duplicate ACKs (NewReno, RFC 6582)",
               TRIG_PARTIAL: "partial ACK in NewReno recovery (RFC 6582)"}


def _kinds(p: dict, cap: Capture) -> np.ndarray:
    """Index into KINDS per frame, -1 for a frame in sequence."""
    q = cap.pkt
    tx, trig = p["tx"][q], p["trig"][q]
    syn = (p["flags"][q] & TH_SYN) != 0
    spur = p["spurious"][q] == 1
    kind = np.full(len(q), -1, dtype=np.int64)
    kind[(tx == 0) & cap.ooo[q]] = KINDS.index(KIND_OOO)
    resent = tx > 0
    kind[resent & ~syn & ~spur & (trig == TRIG_TIMEOUT)] = KINDS.index(KIND_RTO)
    kind[resent & ~syn & ~spur & (trig != TRIG_TIMEOUT)] = KINDS.index(KIND_FAST)
    kind[resent & ~syn & spur] = KINDS.index(KIND_SPURIOUS)
    kind[resent & syn] = KINDS.index(KIND_SYN)
    kind[cap.copy] = KINDS.index(KIND_DUP)
    return kind


class _FlowFrames:
    """The file's frames grouped by flow, for looking around one frame."""

    def __init__(self, p: dict, cap: Capture):
        self.p = p
        self.fl = p["flow"][cap.pkt]
        self.order = np.argsort(self.fl, kind="stable")
        self.sorted = self.fl[self.order]
        self.t = cap.t

    def of(self, flow: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.sorted, [flow, flow + 1])
        return self.order[lo:hi]


def _evidence(p: dict, cap: Capture, ff: _FlowFrames, i: int) -> str:
    """What the file shows of a spurious retransmission (frame index i): 'acked' (an ACK already covered it),
    'dsack' (a later D-SACK of its range), 'eifel' (the first later ACK covering it echoes an older TSval)."""
    q = cap.pkt[i]
    d, flow = p["d"][q], p["flow"][q]
    lo, hi = p["seq"][q], p["seq"][q] + p["plen"][q] + ((p["flags"][q] & TH_FIN) != 0)
    idx = ff.of(flow)
    idx = idx[idx != i]
    r = cap.pkt[idx]
    rev = (p["d"][r] != d) & ((p["flags"][r] & TH_ACK) != 0) & ~cap.copy[idx]
    idx, r = idx[rev], r[rev]
    cover = p["ack"][r] >= hi
    later = idx > i
    out = []
    if (cover & ~later).any():
        out.append("acked")
    if (later & (p["dsack"][r] == 1) & (p["s0l"][r] <= lo) & (p["s0r"][r] >= hi)).any():
        out.append("dsack")
    first = np.flatnonzero(cover & later)
    if p["tsval"][q] and len(first):
        echo = int(p["tsecr"][r[first[0]]])
        if echo != int(p["tsval"][q]) and _serial_ge(int(p["tsval"][q]), echo):
            out.append("eifel")
    return ";".join(out) or "none"


def _reason(p: dict, cap: Capture, kind: str, i: int) -> str:
    q = cap.pkt[i]
    o, prev, trig = p["orig"][q], p["prev"][q], p["trig"][q]
    fate = p["fate"][o]
    if kind == KIND_DUP:
        return f"captured twice: the same frame {p['dup_dt'][q]} us after the first copy"
    if kind == KIND_OOO:
        how = "reordered" if fate in (F_REORD_B, F_REORD_A) else "held by a delay spike"
        return f"sent once, {how} {p['delay'][q] / 1000:.3f} ms before the capture point; arrives after higher data"
    gap = (p["t_send"][q] - p["t_send"][prev]) / 1000
    if kind == KIND_SYN:
        what = "SYN" if p["flags"][q] & TH_ACK == 0 else "SYN-ACK"
        why = "timer" if trig == TRIG_SYN and gap >= 900 else "answering a repeated SYN"
        return f"{what} sent again ({why}), {gap:.1f} ms after the previous one"
    how = f"RTO {gap:.1f} ms after transmission {p['tx'][q]}" if trig == TRIG_TIMEOUT else TRIG_REASON[trig]
    if kind == KIND_SPURIOUS:
        if fate in (F_REORD_B, F_REORD_A, F_SPIKE_B, F_SPIKE_A):
            late = "reordered" if fate in (F_REORD_B, F_REORD_A) else "delayed"
            was = f"the original was {late} {p['delay'][o] / 1000:.1f} ms {WHERE[fate]} the capture point"
        elif fate == F_OK:
            was = "the original arrived; its ACK was lost or late"
        else:
            was = "an earlier retransmission arrived"
        return f"not needed: {how}, but {was}"
    where = WHERE.get(p["fate"][prev], "after")
    return f"needed: {how}; the previous transmission was lost {where} the capture point"


def truth_rows(p: dict, cap: Capture, stream_of: np.ndarray) -> tuple[list[list], dict[str, int]]:
    """One row per frame whose cause is one of KINDS (TRUTH_COLUMNS), and the count per cause."""
    kind = _kinds(p, cap)
    ff = _FlowFrames(p, cap)
    rows = []
    counts = {k: 0 for k in KINDS}
    for i in np.flatnonzero(kind >= 0).tolist():
        q = cap.pkt[i]
        kname = KINDS[kind[i]]
        counts[kname] += 1
        if kname == KIND_DUP:
            ofr = int(cap.frame_of[q])
        elif kname == KIND_OOO:
            ofr = 0
        else:
            ofr = int(cap.frame_of[p["orig"][q]])
        since = f"{(cap.t[i] - cap.t[ofr - 1]) / 1e6:.6f}" if ofr else ""
        trig = TRIG_TEXT[p["trig"][q]] if p["tx"][q] and kname != KIND_DUP else \
            ("capture" if kname == KIND_DUP else "reordering" if p["fate"][q] in (F_REORD_B, F_REORD_A) else "delay")
        rows.append([
            i + 1, int(stream_of[p["flow"][q]]), "client_to_server" if p["d"][q] == 0 else "server_to_client",
            int(p["seq"][q]), int(p["seq_raw"][q]), int(p["plen"][q]), kname,
            "true" if kname == KIND_OOO or ofr else "false", ofr or "", since, trig,
            _evidence(p, cap, ff, i) if kname == KIND_SPURIOUS else "", _reason(p, cap, kname, i),
        ])
    return rows, counts


def capture_loss_rows(p: dict, cap: Capture, stream_of: np.ndarray) -> list[list]:
    """One row per packet the capture dropped: where it would have been, and what it carried."""
    ff = _FlowFrames(p, cap)
    rows = []
    for q, t in zip(cap.dropped.tolist(), cap.dropped_t.tolist()):
        idx = ff.of(p["flow"][q])
        k = int(np.searchsorted(cap.t[idx], t, side="right"))
        flags = int(p["flags"][q])
        end = p["seq"][q] + p["plen"][q] + ((flags & (TH_SYN | TH_FIN)) != 0)
        names = "".join(c for bit, c in ((TH_SYN, "S"), (TH_FIN, "F"), (TH_PSH, "P"), (TH_ACK, "A")) if flags & bit)
        rows.append([int(stream_of[p["flow"][q]]), "client_to_server" if p["d"][q] == 0 else "server_to_client",
                     f"{EPOCH_START + t / 1e6:.6f}", int(p["seq"][q]), int(p["seq_raw"][q]), int(p["plen"][q]),
                     int(end), names, int(idx[k - 1]) + 1 if k else "", int(idx[k]) + 1 if k < len(idx) else ""])
    return rows


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
OPT_SYN = 5  # option layout of a SYN; 0..4 is the number of SACK blocks of any other segment


def _nop(k: int) -> tuple:
    return (f"o_nop{k}", U8, 1)


OPT_TS = [_nop(1), _nop(2), ("o_ts_kind", U8, 8), ("o_ts_len", U8, 10), ("o_tsval", BE32, None),
          ("o_tsecr", BE32, None)]


def tcp_options(okind: int, ts: bool, sack: bool) -> list[tuple]:
    """(name, dtype, constant or None) per option byte field, in Linux's order (RFC 9293, 2018, 7323)."""
    if okind == OPT_SYN:
        mss = [("o_mss_kind", U8, 2), ("o_mss_len", U8, 4), ("o_mss", BE16, None)]
        sackok = [("o_sackok_kind", U8, 4), ("o_sackok_len", U8, 2)]
        ws = [_nop(9), ("o_ws_kind", U8, 3), ("o_ws_len", U8, 3), ("o_ws", U8, None)]
        if ts:
            return mss + (sackok + OPT_TS[2:] if sack else OPT_TS) + ws
        return mss + ([_nop(1), _nop(2)] + sackok if sack else []) + ws
    out = list(OPT_TS) if ts else []
    if okind:
        out += [_nop(3), _nop(4), ("o_sack_kind", U8, 5), ("o_sack_len", U8, 2 + 8 * okind)]
        for k in range(okind):
            out += [(f"o_sack{k}_l", BE32, None), (f"o_sack{k}_r", BE32, None)]
    return out


def layout_dtype(vlan: bool, v6: bool, opts: list[tuple]) -> np.dtype:
    fields = REC + ETH + (VLAN if vlan else []) + ETYPE + (IPV6 if v6 else IPV4) + TCP
    return np.dtype(fields + [(name, dt) for name, dt, _ in opts])


def _ones_sum(words: np.ndarray) -> np.ndarray:
    return _fold(words.astype(np.uint64).sum(axis=1))


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


@dataclass(frozen=True)
class Layout:
    vlan: bool
    v6: bool
    okind: int
    ts: bool
    sack: bool

    @staticmethod
    def key(vlan, v6, okind, ts, sack):
        return (((vlan * 2 + v6) * 6 + okind) * 2 + ts) * 2 + sack

    @classmethod
    def of_key(cls, g: int) -> "Layout":
        g, sack = divmod(g, 2)
        g, ts = divmod(g, 2)
        g, okind = divmod(g, 6)
        vlan, v6 = divmod(g, 2)
        return cls(bool(vlan), bool(v6), okind, bool(ts), bool(sack))


def fill_headers(a: np.ndarray, p: dict, f: Flows, sel: np.ndarray, t: np.ndarray, lay: Layout, opts: list[tuple]):
    """Fill the structured array ``a`` (one row per frame: packet ``sel`` at time ``t``)."""
    fl = p["flow"][sel]
    d = p["d"][sel]
    plen = p["plen"][sel]
    opt_len = sum(np.dtype(dt).itemsize for _, dt, _ in opts)
    tcp_len = 20 + opt_len + plen
    ip_len = (40 if lay.v6 else 20) + tcp_len
    frame_len = 14 + (4 if lay.vlan else 0) + ip_len
    t = t + EPOCH_START * 1_000_000
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
    if lay.vlan:
        a["vlan_tpid"] = ETH_P_8021Q
        a["vlan_tci"] = f.vlan[fl]
    a["eth_type"] = ETH_P_IPV6 if lay.v6 else ETH_P_IP
    ttl = f.ttl[fl, d]
    if lay.v6:
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
    a["th_win"] = np.where(syn, np.where(d == 0, 64240, 65160), np.where(d == 0, f.win_c[fl], f.win_s[fl]))
    for name, _, const in opts:
        if const is not None:
            a[name] = const
    if lay.okind == OPT_SYN:
        a["o_mss"] = np.where(d == 0, f.mss_c[fl], f.mss_s[fl])
        a["o_ws"] = np.where(d == 0, f.ws_c[fl], f.ws_s[fl])
    if lay.ts:
        a["o_tsval"] = p["tsval"][sel]
        a["o_tsecr"] = p["tsecr"][sel]
    if lay.okind != OPT_SYN:
        for k in range(lay.okind):
            a[f"o_sack{k}_l"] = p[f"s{k}l_raw"][sel]
            a[f"o_sack{k}_r"] = p[f"s{k}r_raw"][sel]
    # checksums (the payload is all zero bytes, so headers alone give them)
    raw = a.view(np.uint8).reshape(len(a), -1)
    ip_off = 16 + 12 + (4 if lay.vlan else 0) + 2
    tcp_off = ip_off + (40 if lay.v6 else 20)
    tcp_words = np.ascontiguousarray(raw[:, tcp_off:]).view(">u2")
    if lay.v6:
        pseudo = np.ascontiguousarray(raw[:, ip_off + 8 : ip_off + 40]).view(">u2")
    else:
        pseudo = np.ascontiguousarray(raw[:, ip_off + 12 : ip_off + 20]).view(">u2")
        hdr = np.ascontiguousarray(raw[:, ip_off : ip_off + 20]).view(">u2")
        a["ip_sum"] = ~_ones_sum(hdr).astype(np.uint16)
    tl = tcp_len.astype(np.uint64)
    s = _ones_sum(np.concatenate([tcp_words, pseudo], axis=1)) + np.uint64(6) + (tl >> np.uint64(16)) \
        + (tl & np.uint64(0xFFFF))
    a["th_sum"] = ~_fold(s).astype(np.uint16)


def write_pcap(path: str, p: dict, f: Flows, cap: Capture, chunk: int = 50_000) -> int:
    """Writes the capture's frames; returns bytes written."""
    with open(path, "wb") as out:
        return write_pcap_header(out) + write_frames(out, p, f, cap.pkt, cap.t, chunk)


def write_pcap_header(out) -> int:
    """The classic pcap file header (Ethernet, microseconds, PCAP_SNAPLEN); returns bytes written."""
    hdr = np.array([(0xA1B2C3D4, 2, 4, 0, 0, PCAP_SNAPLEN, LINKTYPE_ETHERNET)],
                   dtype=[("magic", LE32), ("vmaj", "<u2"), ("vmin", "<u2"), ("zone", "<i4"),
                          ("sigfigs", LE32), ("snaplen", LE32), ("linktype", LE32)])
    out.write(hdr.tobytes())
    return hdr.nbytes


def write_frames(out, p: dict, f: Flows, pkt: np.ndarray, t: np.ndarray, chunk: int = 50_000) -> int:
    """Writes packets ``pkt`` (indices into ``p``) as pcap records at frame times ``t`` (us since
    EPOCH_START), ``chunk`` frames at a time, each header layout filled as one structured array; returns
    bytes written."""
    fl = p["flow"]
    okind = np.where((p["flags"] & TH_SYN) != 0, OPT_SYN, p["nsack"])
    group_all = Layout.key((f.vlan[fl] > 0).astype(np.int64), f.v6[fl].astype(np.int64), okind,
                           f.ts[fl].astype(np.int64), (f.sack[fl] & (okind == OPT_SYN)).astype(np.int64))
    layouts: dict[int, tuple] = {}
    written = 0
    for lo in range(0, len(pkt), chunk):
        sel = pkt[lo : lo + chunk]
        tt = t[lo : lo + chunk]
        group = group_all[sel]
        reclen = np.zeros(len(sel), dtype=np.int64)
        parts = []
        for g in np.unique(group).tolist():
            if g not in layouts:
                lay = Layout.of_key(g)
                opts = tcp_options(lay.okind, lay.ts, lay.sack)
                layouts[g] = (lay, opts, layout_dtype(lay.vlan, lay.v6, opts))
            m = np.flatnonzero(group == g)
            reclen[m] = layouts[g][2].itemsize + p["plen"][sel[m]]
            parts.append((g, m))
        offsets = np.concatenate([[0], np.cumsum(reclen)[:-1]])
        buf = np.zeros(int(reclen.sum()), dtype=np.uint8)
        for g, m in parts:
            lay, opts, dt = layouts[g]
            a = np.zeros(len(m), dtype=dt)
            fill_headers(a, p, f, sel[m], tt[m], lay, opts)
            buf[offsets[m][:, None] + np.arange(dt.itemsize)] = a.view(np.uint8).reshape(len(m), dt.itemsize)
        out.write(buf.data)
        written += buf.nbytes
    return written


# ----------------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------------


def _write_csv(path: str, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


@dataclass
class Built:
    """A simulated capture: every packet (``p``), the flows, which packets are frames (``cap``)."""

    p: dict
    f: Flows
    cap: Capture
    rates: Rates
    seed: int
    simulate_s: float

    def stream_of(self) -> np.ndarray:
        """tcp.stream per flow: flows in order of their first frame in the file (-1: no frame)."""
        fl_in = self.p["flow"][self.cap.pkt]
        flows_in, first = np.unique(fl_in, return_index=True)
        out = np.full(len(self.f.v6), -1, dtype=np.int64)
        out[flows_in[np.argsort(first)]] = np.arange(len(flows_in))
        return out


def build(frames: int, seed: int = 1, rates: Rates = Rates()) -> Built:
    t0 = time.perf_counter()
    p, f = simulate(frames, seed, rates)
    derive_raw(p, f)
    return Built(p, f, capture(p, frames, rates, seed), rates, seed, time.perf_counter() - t0)


def write_files(path: str, b: Built) -> dict:
    """Writes ``path``, ``path.truth.csv``, ``path.meta.json`` (and ``path.capture_loss.csv`` when the
    capture drops frames); returns the meta dict."""
    t0 = time.perf_counter()
    p, f, cap = b.p, b.f, b.cap
    tmp = path + ".tmp"
    size = write_pcap(tmp, p, f, cap)
    os.replace(tmp, path)
    stream_of = b.stream_of()
    rows, counts = truth_rows(p, cap, stream_of)
    _write_csv(path + ".truth.csv", TRUTH_COLUMNS, rows)
    lost_rows = capture_loss_rows(p, cap, stream_of)
    if b.rates.capture_loss > 0:
        _write_csv(path + ".capture_loss.csv", CAPTURE_LOSS_COLUMNS, lost_rows)
    elif os.path.exists(path + ".capture_loss.csv"):
        os.remove(path + ".capture_loss.csv")
    if os.path.exists(path + ".tshark.json"):  # tshark's labels of an older file
        os.remove(path + ".tshark.json")
    resent = (KIND_RTO, KIND_FAST, KIND_SPURIOUS)
    not_captured = sum(1 for r in rows if r[6] in resent and r[7] == "false")
    fl_in = p["flow"][cap.pkt]
    flows_in = np.unique(fl_in)
    meta = {
        "generator": "benchmarks/gen.py", "version": GEN_VERSION, "seed": b.seed, "frames": int(len(cap.pkt)),
        "bytes": size, "flows": int(len(flows_in)), "ipv6_flows": int(f.v6[flows_in].sum()),
        "vlan_flows": int((f.vlan[flows_in] > 0).sum()), "no_timestamp_flows": int((~f.ts[flows_in]).sum()),
        "no_sack_flows": int((~f.sack[flows_in]).sum()),
        "capture_points": {name: int((f.tap[flows_in] == k).sum())
                           for k, name in enumerate(("client", "server", "middle"))},
        "ipv6_frames": int(f.v6[fl_in].sum()), "vlan_frames": int((f.vlan[fl_in] > 0).sum()),
        "duration_s": round(float(cap.t[-1] - cap.t[0]) / 1e6, 3),
        "causes": counts, "truth_frames": len(rows),
        "retransmitted_frames": sum(counts[k] for k in resent + (KIND_SYN,)),
        "retransmissions_original_not_captured": not_captured,
        "capture_lost_frames": len(lost_rows), "rates": dataclasses.asdict(b.rates),
        "seconds": {"simulate": round(b.simulate_s, 2), "write": round(time.perf_counter() - t0, 2),
                    "total": round(b.simulate_s + time.perf_counter() - t0, 2)},
    }
    with open(path + ".meta.json", "w") as fh:
        json.dump(meta, fh, indent=2)
    return meta


def generate(path: str, frames: int = 1_000_000, seed: int = 1, rates: Rates = Rates(),
             verbose: bool = False) -> dict:
    """Builds and writes the capture and its truth files; returns the meta dict."""
    meta = write_files(path, build(frames, seed, rates))
    if verbose:
        print(json.dumps(meta, indent=2))
    return meta


# ----------------------------------------------------------------------------------------------
# Checking the file with tshark
# ----------------------------------------------------------------------------------------------

TSHARK_FIELDS = ["frame.number", "_ws.expert.severity", "ip.checksum.status", "tcp.checksum.status",
                 "tcp.flags.syn", "tcp.analysis.retransmission", "tcp.analysis.fast_retransmission",
                 "tcp.analysis.spurious_retransmission", "tcp.analysis.out_of_order"]
EXPERT_ERROR = 0x00800000  # PI_ERROR: malformed packets and bad checksums
CHECKSUM_BAD = "0"  # tshark's checksum status: 0 bad, 1 good, 2 unverified


def read_truth(path: str) -> dict[int, dict]:
    with open(path + ".truth.csv", newline="") as fh:
        return {int(r["frame"]): r for r in csv.DictReader(fh)}


def tshark_labels(path: str) -> tuple[dict[int, str], dict[str, int]]:
    """tshark's label per flagged frame (our kinds: a flagged SYN is a syn_retransmission), and the
    count of frames with expert errors or bad IP/TCP checksums (checksums verified)."""
    cmd = ["tshark", "-n", "-r", path, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
           "-T", "fields", "-E", "separator=\t"]
    for port in sorted(set(SERVER_PORTS.tolist())):  # zero payloads are not Kafka, PostgreSQL, ... messages
        cmd += ["-d", f"tcp.port=={port},data"]
    for fld in TSHARK_FIELDS:
        cmd += ["-e", fld]
    labels: dict[int, str] = {}
    bad = {"frames": 0, "expert_errors": 0, "bad_ip_checksum": 0, "bad_tcp_checksum": 0}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:
        for line in proc.stdout:
            fr, sev, ipsum, tcpsum, syn, rt, fast, spur, ooo = line.rstrip("\n").split("\t")
            bad["frames"] += 1
            bad["expert_errors"] += any(int(s) >= EXPERT_ERROR for s in sev.split(",") if s)
            bad["bad_ip_checksum"] += ipsum == CHECKSUM_BAD
            bad["bad_tcp_checksum"] += tcpsum == CHECKSUM_BAD
            if spur:
                labels[int(fr)] = KIND_SPURIOUS
            elif fast:
                labels[int(fr)] = KIND_FAST
            elif ooo:
                labels[int(fr)] = KIND_OOO
            elif rt:
                labels[int(fr)] = KIND_SYN if syn in ("1", "True") else KIND_RTO
    if proc.returncode:
        raise RuntimeError(f"tshark failed on {path} (exit {proc.returncode})")
    return labels, bad


def compare_with_tshark(path: str) -> dict:
    """The file reads cleanly in tshark, tshark flags only frames of the truth file, and how often its
    label equals the true cause, per cause (Wireshark's timing rules are the baseline)."""
    truth = read_truth(path)
    labels, bad = tshark_labels(path)
    per_cause = {}
    for kind in KINDS:
        frs = [fr for fr, r in truth.items() if r["kind"] == kind]
        got: dict[str, int] = {}
        for fr in frs:
            lab = labels.get(fr, "none")
            got[lab] = got.get(lab, 0) + 1
        per_cause[kind] = {"truth": len(frs), "tshark_same": got.get(kind, 0),
                           "agreement": round(got.get(kind, 0) / len(frs), 4) if frs else None, "tshark_says": got}
    same = sum(v["tshark_same"] for v in per_cause.values())
    extra = sorted(set(labels) - set(truth))
    res = {**bad, "truth_frames": len(truth), "tshark_flagged": len(labels),
           "truth_flagged_by_tshark": len(set(labels) & set(truth)), "extra": extra,
           "agreement": round(same / len(truth), 4) if truth else None, "per_cause": per_cause}
    res["clean"] = not (bad["expert_errors"] or bad["bad_ip_checksum"] or bad["bad_tcp_checksum"] or extra)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames to write (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("-o", "--output", default="bench.pcap", help="output pcap (default bench.pcap)")
    ap.add_argument("--capture-loss", type=float, default=0.0, metavar="PCT",
                    help="percent of frames the capture itself drops (default 0)")
    ap.add_argument("--rate", action="append", default=[], metavar="NAME=VALUE",
                    help="override one of the Rates (repeatable), e.g. reorder_before=0.01")
    ap.add_argument("--check", action="store_true",
                    help="then check the file with tshark and compare its labels with the truth")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        rates = Rates.parse(args.rate, args.capture_loss)
    except ValueError as exc:
        ap.error(str(exc))
    if args.frames < 1:
        ap.error("--frames must be at least 1")
    meta = generate(args.output, args.frames, args.seed, rates, verbose=not args.quiet)
    if args.check:
        res = compare_with_tshark(args.output)
        res["extra"] = {"count": len(res["extra"]), "sample": res["extra"][:10]}
        with open(args.output + ".tshark.json", "w") as fh:  # bench.py shows it beside our accuracy
            json.dump(res, fh, indent=2)
        print(json.dumps(res, indent=2))
        return 0 if res["clean"] else 1
    return 0 if meta["frames"] else 1


if __name__ == "__main__":
    sys.exit(main())
