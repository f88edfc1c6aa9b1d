"""Wireshark 4.0's TCP sequence analysis, reproduced exactly: the label Wireshark itself gives each frame.

This is ``tcp_analyze_sequence_number()`` of Wireshark 4.0.17's ``epan/dissectors/packet-tcp.c`` (and the
parts of ``dissect_tcp()`` around it that change its state: the base sequence numbers, the SYN and
SYN-ACK port-reuse checks, the initial RTT, ``is_first_ack`` and the window-scale option), on the
same raw 32-bit numbers with the same serial comparisons (``GT_SEQ``, ``LT_SEQ``, ``LE_SEQ``) and the
same quirks: 0 means "unset" for ``nextseq``, ``lastack`` and ``maxseqtobeacked``; ``dupacknum`` is
unsigned, so the -1 it is set to after an ACKed-unseen segment counts as 2 or more; ``lastack`` is the
raw ACK field even without the ACK flag; windows are compared unscaled; time differences are compared
as unsigned numbers, so a clock going backwards is never "within" a threshold. It runs on every packet,
duplicates included, and its state (``DIRECTION.ws_*``, ``CONVERSATION.ws_mru_syn_ts`` and ``irtt``) is
its own: the engine's own analysis (``sequence.py``) never reads it to decide a cause, only to count
keep-alives and zero-window probes and to say what Wireshark would say (``wireshark_kind``).

Besides the flags it keeps Wireshark's list of unacknowledged segments per direction (``tcp_unacked_t``,
at most TCP_MAX_UNACKED_SEGMENTS, in the engine's ``ua`` pool), from which come ``tcp.analysis.ack_rtt``
and ``acks_frame`` (an ACK equal to a listed segment's next sequence number) and ``bytes_in_flight``
(the span of the list, less the SACKed bytes of the other side's last packet), and it says how many bytes a
"previous segment not captured" or "ACKed segment that wasn't captured" skipped.

Reference: tcp-analysis-reference.md section B.5; the comments name the code they follow.
"""
from __future__ import annotations

import numpy as np

from ..jit import njit
from ..schema import TH_ACK, TH_FIN, TH_RST, TH_SYN
from .state import NONE

# Wireshark's analysis flags, with packet-tcp.c's values (tcp_acked.flags)
TCP_A_RETRANSMISSION = 0x0001
TCP_A_LOST_PACKET = 0x0002
TCP_A_ACK_LOST_PACKET = 0x0004
TCP_A_KEEP_ALIVE = 0x0008
TCP_A_DUPLICATE_ACK = 0x0010
TCP_A_ZERO_WINDOW = 0x0020
TCP_A_ZERO_WINDOW_PROBE = 0x0040
TCP_A_ZERO_WINDOW_PROBE_ACK = 0x0080
TCP_A_KEEP_ALIVE_ACK = 0x0100
TCP_A_OUT_OF_ORDER = 0x0200
TCP_A_FAST_RETRANSMISSION = 0x0400
TCP_A_WINDOW_UPDATE = 0x0800
TCP_A_WINDOW_FULL = 0x1000
TCP_A_REUSED_PORTS = 0x2000
TCP_A_SPURIOUS_RETRANSMISSION = 0x4000

FAST_RETRANSMIT_NS = 20_000_000  # fast retransmission: within 20 ms of the reverse direction's last ACK
OOO_DEFAULT_NS = 3_000_000  # out-of-order threshold while the initial RTT is unknown
WSCALE_MAX = 14  # RFC 7323: a larger shift is used as 14
TCP_MAX_UNACKED_SEGMENTS = 10000  # packet-tcp.h: the most unacknowledged segments kept per direction
MAX_TCP_SACK_RANGES = 4  # packet-tcp.h: SACK blocks stored for bytes in flight: indexes 1..3
BIF_LIMIT = 2_000_000_000  # bytes in flight larger than this are not reported

_M32 = 0xFFFFFFFF
_HALF = 0x80000000


@njit(cache=True, nogil=True, _nrt=False)
def lt_seq(a, b):
    """LT_SEQ(a, b): (int32)(a - b) < 0."""
    return ((a - b) & _M32) >= _HALF


@njit(cache=True, nogil=True, _nrt=False)
def le_seq(a, b):
    """LE_SEQ(a, b): (int32)(a - b) <= 0."""
    diff = (a - b) & _M32
    return diff == 0 or diff >= _HALF


@njit(cache=True, nogil=True, _nrt=False)
def within(now, then, limit):
    """``now - then < limit`` compared as Wireshark's guint64: a negative difference is never within."""
    return 0 <= now - then < limit


@njit(cache=True, nogil=True, inline="always")
def _ua_new(ua, ct):
    """A free entry of the ``ua`` pool (the engine keeps room for one per segment of a batch)."""
    k = ct.ua_free
    if k != NONE:
        ct.ua_free = ua[k].next
    else:
        k = ct.ua_used
        ct.ua_used = k + 1
    return k


@njit(cache=True, nogil=True, _nrt=False)
def free_unacked(d, ua, ct):
    """Give direction ``d``'s listed segments back to the pool (its connection has ended)."""
    for k in (d.ws_ua_head, d.ws_ua_side):
        while k != NONE:
            nxt = ua[k].next
            ua[k].next = ct.ua_free
            ct.ua_free = k
            k = nxt
    d.ws_ua_head = NONE
    d.ws_ua_tail = NONE
    d.ws_ua_side = NONE
    d.ws_ua_count = 0


@njit(cache=True, nogil=True, inline="always")
def _ua_push(d, ua, ct, seq, nextseq, frame, now, resend):
    """List a segment of direction ``d``: at the tail of the list in sequence order when it starts at or
    above that list's end, else on the other list. A resend makes its sample and those of the listed copies
    of its range ambiguous (Karn)."""
    k = _ua_new(ua, ct)
    e = ua[k]
    e.seq = seq
    e.nextseq = nextseq
    e.frame = frame
    e.ts = now
    e.karn = 0 if resend else 1
    if resend:
        for j in (d.ws_ua_head, d.ws_ua_side):
            while j != NONE:
                if lt_seq(ua[j].seq, nextseq) and lt_seq(seq, ua[j].nextseq):
                    ua[j].karn = 0
                j = ua[j].next
    if d.ws_ua_head == NONE or not lt_seq(seq, ua[d.ws_ua_tail].nextseq):
        e.next = NONE
        if d.ws_ua_head == NONE:
            d.ws_ua_head = k
        else:
            ua[d.ws_ua_tail].next = k
        d.ws_ua_tail = k
    else:
        e.next = d.ws_ua_side
        d.ws_ua_side = k
    d.ws_ua_count += 1


@njit(cache=True, nogil=True, inline="always")
def _ua_walk(r, ua, ct, ack, now, side, rtt, acked, karn):
    """Wireshark's walk for an ACK over one of direction ``r``'s lists (``side``: the unordered one): a
    segment whose ``nextseq`` equals it gives ack_rtt and acks_frame (of several, the earliest listed, the
    lowest frame: Wireshark walks newest first and keeps the last match); one it covers in part is trimmed
    to it; one it covers whole is deleted. The ordered list is walked oldest first and no further than the
    first segment starting at or above the ACK: none after it can be touched."""
    prev = NONE
    k = r.ws_ua_side if side else r.ws_ua_head
    while k != NONE:
        e = ua[k]
        nxt = e.next
        if not lt_seq(e.seq, ack):
            if not side:
                break
            prev = k
            k = nxt
            continue
        if ack == e.nextseq:
            if acked == NONE or e.frame < acked:
                acked = e.frame
                rtt = now - e.ts
                karn = e.karn
        elif lt_seq(ack, e.nextseq):  # covers part of it
            e.seq = ack
            prev = k
            k = nxt
            continue
        if prev == NONE:  # covered whole, or an exact match: delete it
            if side:
                r.ws_ua_side = nxt
            else:
                r.ws_ua_head = nxt
        else:
            ua[prev].next = nxt
        if not side and r.ws_ua_tail == k:
            r.ws_ua_tail = prev
        e.next = ct.ua_free
        ct.ua_free = k
        r.ws_ua_count -= 1
        k = nxt
    return rtt, acked, karn


@njit(cache=True, nogil=True, inline="always")
def _ua_span(d, ua):
    """(first, last): the lowest ``seq`` and the highest ``nextseq`` of direction ``d``'s listed segments,
    relative to its base and as guint32, as Wireshark's payload-based bytes in flight takes them. For the
    ordered list, without a wrap of those relative numbers, they are its oldest's and newest's."""
    first = 0xFFFFFFFF
    last = 0
    k = d.ws_ua_head
    if k != NONE:
        first = (ua[k].seq - d.ws_base) & _M32
        last = (ua[d.ws_ua_tail].nextseq - d.ws_base) & _M32
        if first > last:  # the relative numbers wrap inside the list: every segment counts
            while k != NONE:
                last = max(last, (ua[k].nextseq - d.ws_base) & _M32)
                first = min(first, (ua[k].seq - d.ws_base) & _M32)
                k = ua[k].next
    k = d.ws_ua_side
    while k != NONE:
        last = max(last, (ua[k].nextseq - d.ws_base) & _M32)
        first = min(first, (ua[k].seq - d.ws_base) & _M32)
        k = ua[k].next
    return first, last


@njit(cache=True, nogil=True, _nrt=False)
def analyze(cv, d, r, frame, now, seq, ack, seglen, flags, window, wscale, ua, ct, copy, nsack, sack_le, sack_re,
            i):
    """Wireshark's analysis of one packet of connection ``cv`` sent in direction ``d`` (``r`` the reverse):
    updates the ``ws_*`` state and the lists of unacknowledged segments, and returns (the packet's analysis
    flags (TCP_A_*), ack_rtt in ns (Wireshark shows it when not 0), acks_frame (NONE: none), bytes_in_flight
    (NONE when Wireshark gives none), the bytes a
    lost segment skipped, the bytes an ACKed-unseen ACK covers, whether the RTT sample is of a segment sent
    once). ``seq``, ``ack`` and ``window`` are raw; ``wscale`` is the window-scale option's shift, -1 when
    absent; ``copy`` says the packet is a capture copy (for Karn's rule only); ``sack_le[k, i]`` and
    ``sack_re[k, i]`` are its ``nsack`` SACK blocks."""
    syn = (flags & TH_SYN) != 0
    ackf = (flags & TH_ACK) != 0
    special = (flags & (TH_SYN | TH_FIN | TH_RST)) != 0
    a = 0
    # ---- dissect_tcp: SYN and SYN-ACK against the base sequence number (a SYN with a new ISN started a new
    # conversation already; a repeated SYN restores nextseq, issue 17616; a SYN-ACK with a new ISN moves the base)
    if syn and not ackf and d.ws_base_set == 1 and seq == d.ws_base:
        d.ws_nextseq = d.ws_maxseqtobeacked
    if syn and ackf and d.ws_base_set == 1 and seq != d.ws_base:
        d.ws_base = seq
        a |= TCP_A_REUSED_PORTS
    if d.ws_base_set == 0:
        d.ws_base = seq if syn else (seq - 1) & _M32
        d.ws_base_set = 1
    if r.ws_base_set == 0 and ackf:
        r.ws_base = (ack - 1) & _M32
        r.ws_base_set = 1
    # ---- tcp_analyze_sequence_number
    lost = 0
    ack_lost = 0
    if ackf:
        r.ws_valid_bif = 1
    finished_fwd = False
    if seglen == 1 and seq == d.ws_nextseq and r.ws_window == 0:  # ZERO WINDOW PROBE
        a |= TCP_A_ZERO_WINDOW_PROBE
        finished_fwd = True
    if not finished_fwd:
        if window == 0 and not special:  # ZERO WINDOW
            a |= TCP_A_ZERO_WINDOW
        if d.ws_nextseq != 0 and lt_seq(d.ws_nextseq, seq) and (flags & TH_RST) == 0:  # LOST PACKET
            a |= TCP_A_LOST_PACKET
            lost = (seq - d.ws_nextseq) & _M32
            d.ws_valid_bif = 0  # BiF disabled until an ACK is seen in the other direction
        if (seglen == 0 or seglen == 1) and seq == ((d.ws_nextseq - 1) & _M32) and not special:  # KEEP ALIVE
            a |= TCP_A_KEEP_ALIVE
        same = seglen == 0 and seq == d.ws_nextseq and ack == d.ws_lastack and not special
        if same and window != 0 and window != d.ws_window:  # WINDOW UPDATE
            a |= TCP_A_WINDOW_UPDATE
        if seglen > 0 and r.ws_win_scale != -1 and not special:  # WINDOW FULL
            shift = 0 if (r.ws_is_first_ack == 1 or r.ws_win_scale == -2) else r.ws_win_scale
            if ((seq + seglen) & _M32) == ((r.ws_lastack + (r.ws_window << shift)) & _M32):
                a |= TCP_A_WINDOW_FULL
        if same and window != 0 and window == d.ws_window and (r.ws_lastsegflags & TCP_A_KEEP_ALIVE) != 0:
            a |= TCP_A_KEEP_ALIVE_ACK  # KEEP ALIVE ACK
        elif same and window == 0 and window == d.ws_window and (r.ws_lastsegflags & TCP_A_ZERO_WINDOW_PROBE) != 0:
            a |= TCP_A_ZERO_WINDOW_PROBE_ACK  # ZERO WINDOW PROBE ACK
        elif same and window != 0 and window == d.ws_window:  # DUPLICATE ACK
            d.ws_dupacknum = 1 if d.ws_dupacknum == -1 else d.ws_dupacknum + 1
            a |= TCP_A_DUPLICATE_ACK
            d.ws_dupack_frame = d.ws_lastnondupack
    # finished_fwd: a new ACK number resets the duplicate-ACK count
    if ack != d.ws_lastack:
        d.ws_lastnondupack = frame
        d.ws_dupacknum = 0
    # ACKED LOST PACKET
    if r.ws_maxseqtobeacked != 0 and lt_seq(r.ws_maxseqtobeacked, ack) and ackf:
        if lt_seq(r.ws_maxseqtobeacked, r.ws_nextseq):
            ack_lost = (ack - r.ws_maxseqtobeacked) & _M32
            r.ws_maxseqtobeacked = r.ws_nextseq
            a |= TCP_A_ACK_LOST_PACKET
        else:
            if r.ws_dupacknum == 0:
                a |= TCP_A_ACK_LOST_PACKET
                ack_lost = (ack - r.ws_maxseqtobeacked) & _M32
            r.ws_dupacknum = -1
    # RETRANSMISSION / FAST RETRANSMISSION / OUT-OF-ORDER (tcp.fastrt_supersedes_ooo: fast checked first)
    if (seglen > 0 or (flags & (TH_SYN | TH_FIN)) != 0) and (a & TCP_A_KEEP_ALIVE) == 0:
        not_advanced = d.ws_nextseq != 0 and lt_seq(seq, d.ws_nextseq)
        if seglen > 1 and ((d.ws_nextseq - 1) & _M32) == seq:
            not_advanced = False  # data right after a 1-byte zero-window probe
        ooo_limit = cv.irtt if cv.irtt != 0 else OOO_DEFAULT_NS
        sf = 1 if (flags & (TH_SYN | TH_FIN)) != 0 else 0
        if seglen > 0 and r.ws_lastack != 0 and le_seq((seq + seglen) & _M32, r.ws_lastack):
            a |= TCP_A_SPURIOUS_RETRANSMISSION
        elif (not_advanced and (r.ws_dupacknum >= 2 or r.ws_dupacknum == -1) and r.ws_lastack == seq
              and within(now, r.ws_lastack_ts, np.int64(FAST_RETRANSMIT_NS))):
            a |= TCP_A_FAST_RETRANSMISSION
        elif (not_advanced and within(now, d.ws_nextseq_ts, ooo_limit)
              and d.ws_nextseq != ((seq + seglen + sf) & _M32)):
            a |= TCP_A_OUT_OF_ORDER
        elif not_advanced:
            a |= TCP_A_RETRANSMISSION
    # finished_checking_retransmission_type: bookkeeping
    nextseq = (seq + seglen + (1 if (flags & (TH_SYN | TH_FIN)) != 0 else 0)) & _M32
    if (seglen > 0 or (flags & (TH_SYN | TH_FIN)) != 0) and d.ws_ua_count < TCP_MAX_UNACKED_SEGMENTS:
        _ua_push(d, ua, ct, seq, nextseq, frame, now, not copy and (a & (
            TCP_A_RETRANSMISSION | TCP_A_FAST_RETRANSMISSION | TCP_A_SPURIOUS_RETRANSMISSION)) != 0)
    if (lt_seq(d.ws_nextseq, nextseq) or d.ws_nextseq == 0) and (a & TCP_A_ZERO_WINDOW_PROBE) == 0:
        d.ws_nextseq = nextseq
        d.ws_nextseq_frame = frame
        d.ws_nextseq_ts = now
    if (seq == d.ws_maxseqtobeacked or d.ws_maxseqtobeacked == 0) and (a & TCP_A_ZERO_WINDOW_PROBE) == 0:
        d.ws_maxseqtobeacked = d.ws_nextseq
    d.ws_window = window
    d.ws_lastack = ack
    d.ws_lastack_ts = now
    d.ws_lastsegflags = a
    # remove all segments this ACKs (the other direction's list): an exact match gives ack_rtt and acks_frame
    rtt, acked, karn = _ua_walk(r, ua, ct, ack, now, False, NONE, NONE, 0)
    if r.ws_ua_side != NONE:
        rtt, acked, karn = _ua_walk(r, ua, ct, ack, now, True, rtt, acked, karn)
    # bytes in flight (payload-based, Wireshark's default): the span of this direction's list, less the
    # bytes the other side's last packet SACKed
    bif = NONE
    if seglen != 0 and (d.ws_ua_head != NONE or d.ws_ua_side != NONE) and d.ws_valid_bif == 1:
        first, last = _ua_span(d, ua)
        in_flight = (last - first) & _M32
        delivered = 0
        for j in range(r.ws_sack_n):
            delivered = (delivered + r.ws_sack[j, 1] - r.ws_sack[j, 0]) & _M32
        in_flight = (in_flight - delivered) & _M32
        if 0 < in_flight < BIF_LIMIT:
            bif = in_flight - (1 if (flags & (TH_SYN | TH_FIN)) != 0 else 0)
    # the SACK option is dissected after the analysis: it is what the other direction's next BiF subtracts
    d.ws_sack_n = min(nsack, MAX_TCP_SACK_RANGES - 1)
    for j in range(d.ws_sack_n):
        d.ws_sack[j, 0] = sack_le[j, i]
        d.ws_sack[j, 1] = sack_re[j, i]
    # ---- dissect_tcp after the analysis: the SYN's time, iRTT (B.3), is_first_ack, window scaling
    if syn:
        if not ackf:
            cv.ws_mru_syn_ts = now
        d.ws_is_first_ack = 1
    if ackf and not syn:
        if cv.ws_mru_syn_ts != 0 and cv.irtt == 0:
            cv.irtt = now - cv.ws_mru_syn_ts
        d.ws_is_first_ack = 0
    if wscale >= 0:
        d.ws_win_scale = min(wscale, WSCALE_MAX)
    if syn:  # verify_tcp_window_scaling
        if d.ws_win_scale == -1:
            d.ws_win_scale = -2
            r.ws_win_scale = -2
        elif ackf and r.ws_win_scale == -2:
            d.ws_win_scale = -2
    return a, rtt, acked, bif, lost, ack_lost, karn
