"""The sequential heart of the engine: one compiled pass over a batch, in frame order.

For every packet: find its connection (splitting a 4-tuple on port reuse as Wireshark does, reference
B.1); recognise the same packet captured twice; run Wireshark 4.0's own analysis (``wireshark.py``) on
it, duplicates included, for the label Wireshark gives it; then, for every packet that is not a capture
copy, the engine's own analysis: the handshake, Zeek's connection facts, the exact byte accounting on
unwrapped 64-bit sequence numbers, the receiver's signals (cumulative ACK, duplicate ACKs, SACK blocks),
and for every segment that starts below the highest byte sent, its cause from all the evidence the
capture holds (reference section h):

1. A range whose bytes were all or partly captured before is a second copy. The copy the sender sent
   later (higher IP ID, newer TSval) is the retransmission, whichever arrived first: normally this one;
   if this one was sent earlier, it is the original arriving late (``out_of_order``) and the earlier
   copy becomes ``spurious_retransmission``.
2. A range never captured, below the highest byte: either a late original (network reordering: sent
   before the highest segment, so an older IP ID / TSval) or a retransmission whose original was lost
   before the capture point (a newer one; ``original_captured`` false). Without IP IDs or timestamps,
   timing decides (under the RTT estimate: reordering), and the reason says it was ambiguous.
3. A retransmission is ``spurious`` when the receiver had every byte (acknowledged or SACKed before it),
   else ``fast_retransmission`` when the receiver was signalling the loss (2+ duplicate ACKs for it, a SACK
   above it, or a partial ACK during recovery) and it followed that signal promptly (before a timeout
   could fire), else ``retransmission`` (a timeout). A D-SACK or an Eifel echo (``_check_pending``)
   later shows a retransmission was not needed; the engine applies that refinement to its row.

Rows are written for every frame either rule flags (``EVENT.kind`` ours, ``EVENT.ws_kind`` Wireshark's).

All state lives in the record arrays of ``state.FlowState`` (``cv`` is a connection's record, ``d`` the
packet's direction, ``r`` the reverse one, as Wireshark's ``tcpd->fwd`` and ``tcpd->rev``); a batch
boundary changes nothing, so a batched run equals a whole-file run.

Compiled with ``numba.njit(cache=True, nogil=True)``: the larger helpers are inlined by numba
(``inline="always"``), the small ones left to LLVM; ``analyze_batch`` runs without numba's reference
counting (``_nrt=False``: it allocates nothing). Numba checks only this file's timestamp for its cache:
after editing the compiled helpers in ``wireshark.py``, ``handshake.py`` or ``connections.py``, or an
initial value in ``state.py``, touch this file (a changed record layout changes the kernels' signatures,
which numba notices by itself).
"""
from __future__ import annotations

import numpy as np

from ..jit import njit
from ..schema import TH_ACK, TH_FIN, TH_RST, TH_SYN
from .connections import ZS, track_connection
from .handshake import track_handshake
from .state import (HOLES, NEW_CONVERSATION, NEW_DIRECTION, NEW_EVENT, NONE, NOTE_FIN_REPEATED, PEND_SLOTS,
                    RECORD_KEEP_OVER, RECORD_WALK, Evidence, Kind)
from .wireshark import (TCP_A_FAST_RETRANSMISSION, TCP_A_KEEP_ALIVE, TCP_A_OUT_OF_ORDER, TCP_A_RETRANSMISSION,
                        TCP_A_SPURIOUS_RETRANSMISSION, TCP_A_ZERO_WINDOW_PROBE)
from .wireshark import analyze as wireshark_analyze

DUPLICATE_GAP_NS = 5_000_000  # the same packet captured twice: at most 5 ms apart
FAST_MIN_NS = 20_000_000  # a fast retransmission follows the loss signal within 2 RTT, and at least this
FAST_UNKNOWN_RTT_NS = 200_000_000  # ... or, without an RTT estimate, within Linux's minimum RTO
REORDER_UNKNOWN_RTT_NS = 3_000_000  # without IP ID or TSval evidence nor an RTT: Wireshark's 3 ms
IPID_STEP_MAX = 1024  # an IP ID this far above the highest is "the next packets" (per-host counters too)

# how the receiver signalled a loss (``DIRECTION.signal_how``)
SIG_DUPACKS, SIG_SACK, SIG_PARTIAL = 1, 2, 3

# the evidence that decided a row's kind (``EVENT.why`` bits), named in its reason
EV_SEEN = 1  # its bytes were captured before
EV_IPID_LATER = 2  # its IP ID is above the other copy's / the highest sent: sent later
EV_IPID_EARLIER = 4  # below: sent earlier
EV_TSVAL_LATER = 8  # its TSval is newer
EV_TSVAL_EARLIER = 16  # older
EV_TIMING = 32  # no IP ID or TSval evidence: decided by timing alone (ambiguous)
EV_ACKED = 64  # the receiver had acknowledged every byte before it
EV_SACKED = 128  # the receiver had SACKed every byte before it
EV_DUPACKS = 256  # the receiver sent duplicate ACKs for it
EV_SACK = 512  # the receiver SACKed data above it
EV_PARTIAL = 1024  # a partial ACK during fast recovery asked for it
EV_LATE = 2048  # the loss signal came, but it was resent only after a timeout could fire
EV_CLOCK_BACK = 4096  # the capture's clock went backwards before it
EV_SIMOPEN = 8192  # a SYN-ACK of a simultaneous open (not a retransmission)

_M32 = 0xFFFFFFFF


@njit(cache=True, nogil=True, _nrt=False)
def _unwrap(d, raw):
    """Unwrapped 64-bit sequence number of direction ``d``, relative to its base, nearest to its reference."""
    rel = (raw - d.base) & _M32
    ref = d.uref
    diff = (rel - ref) & _M32
    if diff >= 0x80000000:
        diff -= 0x100000000
    return ref + diff


@njit(cache=True, nogil=True, _nrt=False)
def _serial_le(a, b):
    """a <= b for 32-bit TCP timestamps (RFC 7323 serial arithmetic)."""
    return ((b - a) & _M32) < 0x80000000


@njit(cache=True, nogil=True, _nrt=False)
def _order(a, b, bits):
    """Serial order of ``a`` against ``b`` on ``bits``-bit counters: 1 after, -1 before, 0 equal."""
    mask = (1 << bits) - 1
    diff = (a - b) & mask
    if diff == 0:
        return 0
    return 1 if diff < (1 << (bits - 1)) else -1


@njit(cache=True, nogil=True, inline="always")
def _new_conversation(conv, dirs, counter, t, lo, frame, ts, vlan, reused):
    ct = counter[0]
    c = ct.conversations
    ct.conversations = c + 1
    conv[c] = NEW_CONVERSATION[0]
    cv = conv[c]
    cv.tuple = t
    cv.first_lo = lo
    cv.first_frame = frame
    cv.first_ts = ts
    cv.vlan = vlan
    cv.reused = reused
    dirs[2 * c] = NEW_DIRECTION[0]
    dirs[2 * c + 1] = NEW_DIRECTION[0]
    return c


@njit(cache=True, nogil=True, inline="always")
def _seen_bytes(d, s, e):
    """How many bytes of [s, e) direction ``d`` already saw (exact, up to HOLES gaps)."""
    if d.seen == 0 or e <= s:
        return 0
    a = max(s, d.lo)
    b = min(e, d.top)
    if b <= a:
        return 0
    n = b - a
    holes = d.holes
    for k in range(HOLES):
        x = max(a, holes[k, 0])
        y = min(b, holes[k, 1])
        if y > x:
            n -= y - x
    return n


@njit(cache=True, nogil=True, _nrt=False)
def _add_hole(holes, lo, hi):
    slot = 0
    for k in range(HOLES):  # an empty slot, else the lowest gap (the oldest, least likely to be filled)
        if holes[k, 1] <= holes[k, 0]:
            slot = k
            break
        if holes[k, 0] < holes[slot, 0]:
            slot = k
    holes[slot, 0] = lo
    holes[slot, 1] = hi


@njit(cache=True, nogil=True, inline="always")
def _mark_seen(d, s, e, frame, ts):
    """Record [s, e) as seen in direction ``d``: trim gaps it fills, open a gap when it jumps past the top."""
    if e <= s:
        return
    if d.seen == 0:
        d.seen = 1
        d.lo = s
        d.top = e
        d.top_frame = frame
        d.top_ts = ts
        return
    holes = d.holes
    for k in range(HOLES):
        hl, hh = holes[k, 0], holes[k, 1]
        if hh <= hl or e <= hl or s >= hh:
            continue
        if s <= hl and e >= hh:
            holes[k, 1] = hl  # filled
        elif s <= hl:
            holes[k, 0] = e
        elif e >= hh:
            holes[k, 1] = s
        else:  # split: keep the lower part here, the upper part in a free slot if any
            holes[k, 1] = s
            for j in range(HOLES):
                if holes[j, 1] <= holes[j, 0]:
                    holes[j, 0] = e
                    holes[j, 1] = hh
                    break
    if s > d.top:
        _add_hole(holes, d.top, s)
    if s < d.lo:
        if e < d.lo:
            _add_hole(holes, e, d.lo)
        d.lo = s
    if e > d.top:
        d.top = e
        d.top_frame = frame
        d.top_ts = ts


@njit(cache=True, nogil=True, inline="always")
def _add_record(d, records, ct, s, e, frame, ts, tsval, ipid, flags):
    i = ct.records
    ct.records = i + 1
    rec = records[i]
    rec.start = s
    rec.end = e
    rec.frame = frame
    rec.ts = ts
    rec.tsval = tsval
    rec.ipid = ipid
    rec.flags = flags
    rec.ev = NONE
    rec.prev = d.rec_head
    d.rec_head = i


@njit(cache=True, nogil=True, inline="always")
def _copies(d, records, s, e):
    """(oldest, newest) indexes of the recent transmissions of direction ``d`` overlapping [s, e), or -1."""
    oldest = -1
    newest = -1
    i = d.rec_head
    steps = 0
    while i >= 0 and steps < RECORD_WALK:
        if records[i].start < e and records[i].end > s:
            oldest = i
            if newest < 0:
                newest = i
        i = records[i].prev
        steps += 1
    return oldest, newest


@njit(cache=True, nogil=True, inline="always")
def _is_duplicate(d, r, ts, seq, ack, plen, flags, win, ipid, tsval, sack):
    """The same packet captured twice: identical to direction ``d``'s previous packet (seq, ack, length,
    flags, window, TSval, first SACK block), at most 5 ms later, with the same non-zero IPv4 ID; or,
    without a usable ID (IPv6, ID 0), no packet of the opposite direction ``r`` in between (whatever
    a stack sends again, a retransmission of a SYN-ACK or a genuine duplicate ACK, answers a packet of the
    peer, which the capture sees in between)."""
    if d.prev_frame == NONE or ts - d.prev_ts > DUPLICATE_GAP_NS or ts < d.prev_ts:
        return False
    if (d.prev_seq != seq or d.prev_ack != ack or d.prev_len != plen or d.prev_flags != flags
            or d.prev_win != win or d.prev_tsval != tsval or d.prev_sack != sack):
        return False
    if ipid > 0:
        return d.prev_ipid == ipid
    return d.prev_ipid == ipid and (r.prev_frame == NONE or r.prev_frame < d.prev_frame)


@njit(cache=True, nogil=True, inline="always")
def _ws_kind(a):
    """The finest retransmission label of Wireshark's analysis flags ``a`` (spurious > fast > retransmission >
    out-of-order), as a Kind; 0 when it flags none."""
    if a & TCP_A_SPURIOUS_RETRANSMISSION:
        return Kind.SPURIOUS_RETRANSMISSION
    if a & TCP_A_FAST_RETRANSMISSION:
        return Kind.FAST_RETRANSMISSION
    if a & TCP_A_RETRANSMISSION:
        return Kind.RETRANSMISSION
    if a & TCP_A_OUT_OF_ORDER:
        return Kind.OUT_OF_ORDER
    return 0


@njit(cache=True, nogil=True, inline="always")
def _note_send_order(d, ipid, tsval):
    """Follow the sender's IP ID and TSval counters (``ipid_max``, ``tsval_max``). An IP ID a little above
    the highest is a step of a counter; a little below, a packet sent earlier and delayed (which says nothing
    against the counter); anything else (zero, repeated, far off) counts against it."""
    if ipid > 0:
        if d.ipid_max == NONE:
            d.ipid_max = ipid
        else:
            step = (ipid - d.ipid_max) & 0xFFFF
            if 0 < step <= IPID_STEP_MAX:
                d.ipid_steps += 1
                d.ipid_max = ipid
            elif step < 0x10000 - IPID_STEP_MAX:
                d.ipid_other += 1
                if 0 < step < 0x8000:
                    d.ipid_max = ipid
    elif ipid == 0:
        d.ipid_other += 1
    if tsval >= 0 and (d.tsval_max == NONE or _order(tsval, d.tsval_max, 32) > 0):
        d.tsval_max = tsval


@njit(cache=True, nogil=True, inline="always")
def _ipid_trusted(d):
    """The sender's IP IDs count its packets (Linux per connection, Windows per host): mostly small steps up."""
    return d.ipid_steps >= 2 and d.ipid_other * 4 <= d.ipid_steps


@njit(cache=True, nogil=True, inline="always")
def _note_ack(d, r, a, seglen, flags, window_same, now, frame, nsack, sack_le, sack_re, i):
    """This packet of direction ``d`` as the receiver's word about direction ``r``'s data: cumulative ACK
    ``a`` (unwrapped in ``r``'s space), duplicate ACKs (RFC 5681: no data, no SYN/FIN/RST, same window,
    same ACK), SACK blocks (raw edges ``sack_le[k, i]``/``sack_re[k, i]``, D-SACK blocks left out) and the
    loss signals."""
    new_ack = d.acked == NONE or a > d.acked
    if new_ack:
        d.acked = a
        d.dupacks = 0
        d.dupack_ts = NONE
        d.signal_ts = NONE
        d.sacked_hi = NONE
        if r.recovery != NONE:
            if a >= r.recovery:
                r.recovery = NONE  # the sender's recovery is over
            else:  # a partial ACK (RFC 6582): the next hole is asked for at once
                d.signal_ts = now
                d.signal_frame = frame
                d.signal_how = SIG_PARTIAL
    elif (a == d.acked and seglen == 0 and (flags & (TH_SYN | TH_FIN | TH_RST)) == 0 and window_same
          and r.seen == 1 and r.top > a):
        d.dupacks += 1
        d.dupack_ts = now
        if d.dupacks == 2 and d.signal_ts == NONE:
            d.signal_ts = now
            d.signal_frame = frame
            d.signal_how = SIG_DUPACKS
    d.sacks_n = 0
    for k in range(min(nsack, 4)):
        le = _unwrap(r, np.int64(sack_le[k, i]))
        re = _unwrap(r, np.int64(sack_re[k, i]))
        if re <= le or le < d.acked or (k == 0 and nsack > 1 and le >= _unwrap(r, np.int64(sack_le[1, i]))
                                        and re <= _unwrap(r, np.int64(sack_re[1, i]))):
            continue  # empty, below the cumulative ACK, or a D-SACK inside the second block (RFC 2883)
        d.sacks[d.sacks_n, 0] = le
        d.sacks[d.sacks_n, 1] = re
        d.sacks_n += 1
        if d.sacked_hi == NONE or re > d.sacked_hi:
            d.sacked_hi = re
        if d.signal_ts == NONE:
            d.signal_ts = now
            d.signal_frame = frame
            d.signal_how = SIG_SACK


@njit(cache=True, nogil=True, inline="always")
def _restart(d, r):
    """A SYN-ACK with a new ISN: direction ``d`` starts over (the server chose another ISN), and so does
    what its peer ``r`` said about it."""
    d.base_set = 0
    d.uref = 0
    d.seen = 0
    d.lo = NONE
    d.top = NONE
    d.top_frame = NONE
    d.top_ts = NONE
    for k in range(HOLES):
        d.holes[k, 0] = 0
        d.holes[k, 1] = 0
    d.rec_head = NONE
    d.recovery = NONE
    r.acked = NONE
    r.dupacks = 0
    r.signal_ts = NONE
    r.sacks_n = 0
    r.sacked_hi = NONE


@njit(cache=True, nogil=True, _nrt=False)
def _refine(refine, ct, ev_index, how, frame, x, y, z):
    """A refinement row for event row ``ev_index``: later evidence that it was not needed."""
    rf = refine[ct.refined]
    ct.refined += 1
    rf.ev = ev_index
    rf.how = how
    rf.frame = frame
    rf.a = x
    rf.b = y
    rf.c = z


@njit(cache=True, nogil=True, _nrt=False)
def _pend_row(d, pend, ct):
    """The ``pend`` pool row of direction ``d``, lent from the pool (all slots free) if it has none."""
    p = d.pend_row
    if p == NONE:
        p = ct.pend_free
        if p != NONE:
            ct.pend_free = pend[p, 0].start
        else:
            p = ct.pend_rows
            ct.pend_rows = p + 1
        for k in range(PEND_SLOTS):
            pend[p, k].ev = NONE
        d.pend_row = p
    return p


@njit(cache=True, nogil=True, _nrt=False)
def _free_slot(d, pend, ct, k):
    """Free slot ``k`` of direction ``d``; its pool row goes back to the pool with its last live slot."""
    p = d.pend_row
    slot = pend[p, k]
    if slot.eifel == 1:
        d.pend_eifel -= 1
    slot.ev = NONE
    d.pend_live -= 1
    ct.pending -= 1
    if d.pend_live == 0:
        pend[p, 0].start = ct.pend_free
        ct.pend_free = p
        d.pend_row = NONE


@njit(cache=True, nogil=True, inline="always")
def _add_pending(d, pend, ct, ev_index, s, e, tsv_orig, tsv_retx):
    """Keep a retransmission [s, e) of direction ``d`` until the receiver shows whether it was needed."""
    p = _pend_row(d, pend, ct)
    k = 0
    for j in range(PEND_SLOTS):  # a free slot, else the oldest
        if pend[p, j].ev == NONE:
            k = j
            break
        if pend[p, j].ev < pend[p, k].ev:
            k = j
    if pend[p, k].ev != NONE:
        _free_slot(d, pend, ct, k)  # all slots live: the row stays lent
    slot = pend[p, k]
    slot.ev = ev_index
    slot.start = s
    slot.end = e
    slot.tsv_orig = tsv_orig
    slot.tsv_retx = tsv_retx
    eifel = 1 if (tsv_orig >= 0 and tsv_retx >= 0 and tsv_orig != tsv_retx and _serial_le(tsv_orig, tsv_retx)) else 0
    slot.eifel = eifel
    d.pend_eifel += eifel
    d.pend_live += 1
    ct.pending += 1


@njit(cache=True, nogil=True, inline="always")
def _check_pending(r, pend, refine, ct, frame, a, tsecr, nsack, le0, re0, le1, re1):
    """An ACK from the receiver of direction ``r`` (cumulative ACK ``a``, unwrapped; TSecr; raw edges
    of its first two SACK blocks) against the retransmissions of ``r`` waiting for evidence.

    D-SACK (RFC 2883): the first SACK block starts below the cumulative ACK, or lies inside the second
    block; the latest waiting retransmission whose whole range it covers was received twice.
    Eifel (RFC 3522): the first ACK covering a waiting retransmission echoes a TSecr at or after the
    original's TSval and before the retransmission's: the ACK was sent for the original, so the original
    had arrived. A TSecr of 0 is taken as no echo."""
    p = r.pend_row
    if p == NONE:
        return
    if nsack > 0:
        l0 = _unwrap(r, le0)
        r0 = _unwrap(r, re0)
        dsack = l0 < a
        if not dsack and nsack > 1:
            dsack = _unwrap(r, le1) <= l0 and r0 <= _unwrap(r, re1)
        if dsack and r0 > l0:
            best = -1
            for k in range(PEND_SLOTS):
                slot = pend[p, k]
                if (slot.ev != NONE and slot.start >= l0 and slot.end <= r0
                        and (best < 0 or slot.ev > pend[p, best].ev)):
                    best = k
            if best >= 0:
                _refine(refine, ct, pend[p, best].ev, Evidence.DSACK, frame, l0, r0, 0)
                _free_slot(r, pend, ct, best)
    # (once the last live slot is freed the row is back in the pool and pend_eifel is 0: nothing below runs)
    if tsecr > 0 and r.pend_eifel > 0:  # 0: nothing echoed (or absent, -1)
        for k in range(PEND_SLOTS):
            if r.pend_row == NONE:
                break
            slot = pend[p, k]
            if slot.ev != NONE and slot.eifel == 1 and a >= slot.end:
                slot.eifel = 0
                r.pend_eifel -= 1
                orig = slot.tsv_orig
                retx = slot.tsv_retx
                if _serial_le(orig, tsecr) and tsecr != retx and _serial_le(tsecr, retx):
                    _refine(refine, ct, slot.ev, Evidence.EIFEL, frame, tsecr, retx, orig)
                    _free_slot(r, pend, ct, k)


@njit(cache=True, nogil=True, inline="always")
def _sent_order(ipid, tsval, ref_ipid, ref_tsval, ipid_ok):
    """Whether a packet was sent after (1) or before (-1) a reference, by IP ID (when the sender's IP IDs
    are trusted) then TSval; 0 when neither tells. Returns (order, EV_* bits)."""
    if ipid_ok and ipid > 0 and ref_ipid > 0:
        o = _order(ipid, ref_ipid, 16)
        if o > 0:
            return 1, EV_IPID_LATER
        if o < 0:
            return -1, EV_IPID_EARLIER
    if tsval >= 0 and ref_tsval >= 0:
        o = _order(tsval, ref_tsval, 32)
        if o > 0:
            return 1, EV_TSVAL_LATER
        if o < 0:
            return -1, EV_TSVAL_EARLIER
    return 0, 0


@njit(cache=True, nogil=True, inline="always")
def _trigger(cv, d, r, s, end, now):
    """Why a needed retransmission [s, end) of direction ``d`` was sent, from the receiver ``r``'s signals:
    (kind, EV_* bits, dup ACK count, signal frame, time since the signal, the limit it was held to)."""
    if r.acked != NONE and r.acked >= end:
        return Kind.SPURIOUS_RETRANSMISSION, EV_ACKED, 0, NONE, 0, 0
    for k in range(r.sacks_n):
        if r.sacks[k, 0] <= s and end <= r.sacks[k, 1]:
            return Kind.SPURIOUS_RETRANSMISSION, EV_SACKED, 0, NONE, 0, 0
    signalled = False
    bits = 0
    if r.signal_ts != NONE and r.acked != NONE and r.acked <= s:
        if r.signal_how == SIG_DUPACKS and r.acked == s:
            signalled, bits = True, EV_DUPACKS
        elif r.signal_how == SIG_SACK and r.sacked_hi != NONE and r.sacked_hi > s:
            signalled, bits = True, EV_SACK
        elif r.signal_how == SIG_PARTIAL and r.acked == s:
            signalled, bits = True, EV_PARTIAL
    if not signalled:
        return Kind.RETRANSMISSION, 0, r.dupacks, NONE, 0, 0
    limit = max(2 * cv.rtt, FAST_MIN_NS) if cv.rtt > 0 else FAST_UNKNOWN_RTT_NS
    gap = now - r.signal_ts
    again = d.retx_seq == s and d.retx_ts >= r.signal_ts  # resent once already since the signal: a timeout
    if 0 <= gap < limit and not again:
        return Kind.FAST_RETRANSMISSION, bits, r.dupacks, r.signal_frame, gap, limit
    return Kind.RETRANSMISSION, bits | EV_LATE, r.dupacks, r.signal_frame, gap, limit


@njit(cache=True, nogil=True, _nrt=False)
def analyze_batch(tid, is_lo, frame, ts, flags, seq, ack, win, plen, ipid, tsval, tsecr, sack_n, sack_le, sack_re,
                  mss, wscale, sackp, tfo, vlan, conv, dirs, pend, tuple_conv, records, counter, evicted, start,
                  stream_out, ev, refine):
    """Analyze packets ``start:`` of a batch in frame order; returns the number of event rows written to
    ``ev``. ``sack_le``/``sack_re`` are the packets' four SACK blocks (4 x n, raw). Refinements of earlier
    event rows (a retransmission shown unnecessary) go to ``refine``, their number to
    ``counter[0].refined``; event row ``j`` has global index ``counter[0].events + j``.

    A packet of a connection whose state was moved out (``evicted``) stops the pass before that packet:
    ``counter[0].stop`` is its index and ``counter[0].restore`` the connection; the caller puts the
    state back and calls again from there (``start``)."""
    ct = counter[0]
    batch = ct.batch
    ev_base = ct.events
    if start == 0:
        ct.refined = 0
    ct.stop = NONE
    n_ev = 0
    for i in range(start, len(tid)):
        f = np.int64(flags[i])
        fr = frame[i]
        sq = np.int64(seq[i])
        ak = np.int64(ack[i])
        wn = np.int64(win[i])
        ip_id = np.int64(ipid[i])
        tv = np.int64(tsval[i])
        ws = np.int64(wscale[i])
        nsack = np.int64(sack_n[i])
        sack_key = (np.int64(sack_le[0, i]) << 32) | np.int64(sack_re[0, i]) if nsack > 0 else NONE
        syn = (f & TH_SYN) != 0
        fin = (f & TH_FIN) != 0
        rst = (f & TH_RST) != 0
        ackf = (f & TH_ACK) != 0
        t = tid[i]
        lo = 1 if is_lo[i] else 0
        now = ts[i]
        seglen = np.int64(plen[i])
        # ---- connection (reference B.1): a SYN without ACK with a new ISN on a known 4-tuple starts a new
        # one (Wireshark's conversation_new); a SYN-ACK with a new ISN keeps the stream (wireshark.py)
        c = tuple_conv[t]
        if c >= 0 and evicted[c] != 0:
            ct.stop = i
            ct.restore = c
            return n_ev
        if c >= 0:
            d = dirs[2 * c + (0 if lo == conv[c].first_lo else 1)]
            if syn and not ackf and d.ws_base_set == 1 and sq != d.ws_base:
                c = _new_conversation(conv, dirs, counter, t, lo, fr, now, np.int64(vlan[i]), 1)
                tuple_conv[t] = c
        else:
            c = _new_conversation(conv, dirs, counter, t, lo, fr, now, np.int64(vlan[i]), 0)
            tuple_conv[t] = c
        stream_out[i] = c
        cv = conv[c]
        di = 0 if lo == cv.first_lo else 1
        d = dirs[2 * c + di]  # this packet's direction (Wireshark's tcpd->fwd)
        r = dirs[2 * c + 1 - di]  # the reverse one (tcpd->rev)
        cv.last_frame = fr
        cv.last_ts = now
        d.pkts += 1
        dup = _is_duplicate(d, r, now, sq, ak, seglen, f, wn, ip_id, tv, sack_key)
        # ---- Wireshark's analysis, on every packet (duplicates too: Wireshark sees them)
        aflags = wireshark_analyze(cv, d, r, fr, now, sq, ak, seglen, f, wn, ws)
        ws_kind = _ws_kind(aflags)
        if dup:  # ---- the same packet captured twice: a row of its own, no effect on our state
            d.dups += 1
            ev[n_ev] = NEW_EVENT[0]
            e = ev[n_ev]
            e.frame = fr
            e.ts = now
            e.seq_raw = sq
            e.flags = f
            e.sender_lo = lo
            e.kind = Kind.DUPLICATE
            e.ws_kind = ws_kind
            e.conv = c
            e.dir = di
            e.seq = _unwrap(d, sq) if d.base_set == 1 else NONE
            e.len = seglen
            e.overlap = seglen
            e.orig_frame = d.prev_frame
            e.orig_ts = d.prev_ts
            e.count = ip_id
            e.ipid = ip_id
            e.tsv = tv
            e.gap = now - d.prev_ts
            e.limit = DUPLICATE_GAP_NS
            e.ref_frame = d.prev_frame
            n_ev += 1
            continue
        clock_back = d.prev_frame != NONE and now < d.prev_ts
        window_same = d.prev_win == wn
        d.prev_frame = fr
        d.prev_ts = now
        d.prev_seq = sq
        d.prev_ack = ak
        d.prev_len = seglen
        d.prev_flags = f
        d.prev_win = wn
        d.prev_ipid = ip_id
        d.prev_tsval = tv
        d.prev_sack = sack_key
        d.bytes += seglen
        if syn:
            d.syn_pkts += 1
        if fin:
            d.fin_pkts += 1
        if rst:
            d.rst_pkts += 1
        track_handshake(cv, di, f, sq, ak, fr, now, seglen, np.int64(mss[i]), ws, np.int64(sackp[i]),
                        tv, np.int64(tfo[i]), batch)
        # ---- our sequence space (relative to the ISN, unwrapped); a SYN-ACK with a new ISN starts it over
        if syn and d.base_set == 1 and sq != d.base:
            _restart(d, r)
        if d.base_set == 0:
            d.base = sq if syn else (sq - 1) & _M32
            d.base_set = 1
        if ackf and r.base_set == 0:
            r.base = (ak - 1) & _M32
            r.base_set = 1
        s = _unwrap(d, sq)
        # ---- this packet as the receiver's word about the other direction's data
        if ackf:
            a = _unwrap(r, ak)
            if r.pend_live > 0:  # does it show that a retransmission of the other side was unnecessary?
                _check_pending(r, pend, refine, ct, fr, a, np.int64(tsecr[i]), nsack, np.int64(sack_le[0, i]),
                               np.int64(sack_re[0, i]), np.int64(sack_le[1, i]), np.int64(sack_re[1, i]))
            _note_ack(d, r, a, seglen, f, window_same, now, fr, nsack, sack_le, sack_re, i)
            if r.uref < a:
                r.uref = a
        if (aflags & TCP_A_KEEP_ALIVE) != 0:
            d.ka += 1
        if (aflags & TCP_A_ZERO_WINDOW_PROBE) != 0:
            d.zwp += 1
        # ---- the cause of a segment that starts below the highest byte sent (module docstring)
        sf = 1 if (syn or fin) else 0
        end = s + seglen + sf
        top_before = d.top
        seen_before = d.seen == 1
        kind = 0
        why = EV_CLOCK_BACK if clock_back else 0
        captured = 1
        overlap = 0
        resent = 0
        orig = -1
        copy = -1
        count = 0
        gap = 0
        limit = 0
        ref = NONE
        ref_ipid = NONE
        ref_tsv = NONE
        ipid_ok = _ipid_trusted(d)
        probe = (aflags & (TCP_A_KEEP_ALIVE | TCP_A_ZERO_WINDOW_PROBE)) != 0
        if (seglen > 0 or syn or fin) and not rst and not probe and seen_before and s < top_before:
            orig, copy = _copies(d, records, s, end)
            if syn:
                if ackf and s == 0 and cv.hs_simopen == 1 and d.syn_pkts == 2:
                    why |= EV_SIMOPEN  # simultaneous open: a side's first SYN-ACK repeats its own SYN (RFC 9293)
                else:
                    kind = Kind.SYN_RETRANSMISSION
                    why |= EV_SEEN
                    ref = records[copy].frame if copy >= 0 else d.top_frame
                    gap = now - (records[orig].ts if orig >= 0 else d.top_ts)
            else:
                overlap = _seen_bytes(d, s, s + seglen)
                fin_again = fin and _seen_bytes(d, s + seglen, end) == 1
                below = max(0, min(s + seglen, top_before) - s)  # payload bytes sent before this one
                resent = below
                if overlap > 0 or fin_again:  # ---- a second copy of bytes captured before
                    why |= EV_SEEN
                    order, bits = 0, 0
                    if copy >= 0:
                        ref_ipid = records[copy].ipid
                        ref_tsv = records[copy].tsval
                        order, bits = _sent_order(ip_id, tv, ref_ipid, ref_tsv, ipid_ok)
                    if order < 0:  # sent before the copy captured first: the original, arriving late
                        kind = Kind.OUT_OF_ORDER
                        why |= bits
                        resent = 0
                        ref = records[copy].frame
                        gap = now - records[copy].ts
                        if records[copy].ev != NONE:
                            _refine(refine, ct, records[copy].ev, Evidence.LATE_ORIGINAL, fr, ip_id, tv, 0)
                        else:  # the copy had no row (it arrived in order): it gets one now
                            rec = records[copy]
                            ev[n_ev] = NEW_EVENT[0]
                            e = ev[n_ev]
                            e.frame = rec.frame
                            e.ts = rec.ts
                            e.seq_raw = (rec.start + d.base) & _M32
                            e.flags = rec.flags
                            e.sender_lo = lo
                            e.kind = Kind.RETRANSMISSION
                            e.conv = c
                            e.dir = di
                            e.seq = rec.start
                            e.len = rec.end - rec.start - (1 if (rec.flags & (TH_SYN | TH_FIN)) != 0 else 0)
                            e.resent = e.len
                            e.ipid = rec.ipid
                            e.tsv = rec.tsval
                            e.spur = Evidence.LATE_ORIGINAL
                            e.spur_frame = fr
                            e.spur_a = ip_id
                            e.spur_b = tv
                            n_ev += 1
                            d.retx += 1
                            d.retx_bytes += e.len
                    else:
                        why |= bits
                        if order == 0 and copy >= 0:
                            why |= EV_TIMING
                        kind, tb, count, ref, gap, limit = _trigger(cv, d, r, s, end, now)
                        why |= tb
                        captured = 1 if overlap >= below else 0
                else:  # ---- bytes never captured, below the highest: a late original, or an upstream loss
                    ref_ipid = d.ipid_max
                    ref_tsv = d.tsval_max
                    order, bits = _sent_order(ip_id, tv, ref_ipid, ref_tsv, ipid_ok)
                    why |= bits
                    if order == 0:
                        why |= EV_TIMING
                        window = cv.rtt if cv.rtt > 0 else REORDER_UNKNOWN_RTT_NS
                        order = -1 if 0 <= now - d.top_ts < window else 1
                        gap = now - d.top_ts
                        limit = window
                    if order < 0:
                        kind = Kind.OUT_OF_ORDER
                        resent = 0
                        ref = d.top_frame
                        if limit == 0:
                            gap = now - d.top_ts
                    else:
                        kind, tb, count, sig, sgap, slimit = _trigger(cv, d, r, s, end, now)
                        why |= tb
                        captured = 0
                        if sig != NONE or limit == 0:
                            ref, gap, limit = sig, sgap, slimit
        # ---- a row for every frame either rule flags
        if kind != 0 or ws_kind != 0:
            ev[n_ev] = NEW_EVENT[0]
            e = ev[n_ev]
            e.frame = fr
            e.ts = now
            e.seq_raw = sq
            e.flags = f
            e.sender_lo = lo
            e.kind = kind
            e.ws_kind = ws_kind
            e.captured = captured
            e.why = why
            e.conv = c
            e.dir = di
            e.seq = s
            e.len = seglen
            e.overlap = overlap
            e.resent = resent
            if orig >= 0 and kind != Kind.OUT_OF_ORDER:
                e.orig_frame = records[orig].frame
                e.orig_ts = records[orig].ts
            e.count = count
            e.gap = gap
            e.limit = limit
            e.ref_frame = ref
            e.ipid = ip_id
            e.ref_ipid = ref_ipid
            e.tsv = tv
            e.ref_tsv = ref_tsv
            e.note = (NOTE_FIN_REPEATED if fin and not syn and not rst and d.z_fin_seq == ((sq + seglen) & _M32)
                      else 0)
            if kind == Kind.RETRANSMISSION or kind == Kind.FAST_RETRANSMISSION:
                _add_pending(d, pend, ct, ev_base + n_ev, s, end, records[orig].tsval if orig >= 0 else NONE, tv)
            if kind == Kind.FAST_RETRANSMISSION and d.recovery == NONE:
                d.recovery = top_before  # fast recovery until the receiver acknowledges everything sent so far
            if kind == Kind.OUT_OF_ORDER:
                d.ooo += 1
            elif kind != 0:
                d.retx += 1
                d.retx_bytes += resent
                d.retx_seq = s
                d.retx_ts = now
            n_ev += 1
        # ---- byte accounting: a segment that brings unseen bytes is recorded (where they were first sent);
        # not a RST (its sequence number may be anything, RFC 9293 3.10.7.3) nor a probe (a zero-window
        # probe's byte is sent again when the window opens, which is no retransmission)
        if not rst and not probe:
            if end > s and _seen_bytes(d, s, end) < end - s:
                _add_record(d, records, ct, s, end, fr, now, tv, ip_id, f)
                if kind != 0 or ws_kind != 0:
                    records[d.rec_head].ev = ev_base + n_ev - 1
            _mark_seen(d, s, end, fr, now)
            if d.uref < s:
                d.uref = s
        _note_send_order(d, ip_id, tv)
        # ---- Zeek history/state, Wireshark completeness
        rexmit = seglen > 0 and seen_before and end <= top_before and d.zstate != ZS.RESET
        track_connection(cv, d, r, di, f, sq, seglen, wn, rexmit)
    return n_ev


@njit(cache=True, nogil=True, inline="always")
def _fin_acked(d, other):
    """Direction ``d`` sent its FIN and the other side acknowledged all of it, the FIN included."""
    return d.zstate == ZS.CLOSED and d.seen == 1 and other.acked != NONE and other.acked >= d.top


@njit(cache=True, nogil=True, inline="always")
def _records_to_keep(conv, dirs, tuple_conv, c):
    """How many sent-segment records per direction connection ``c`` needs: none once a new connection took
    its 4-tuple (no packet reaches it again), RECORD_KEEP_OVER once it is over (reset, or both FINs
    acknowledged), else the RECORD_WALK that ``_copies`` may search."""
    if tuple_conv[conv[c].tuple] != c:
        return 0
    a = dirs[2 * c]
    b = dirs[2 * c + 1]
    if a.zstate == ZS.RESET or b.zstate == ZS.RESET or (_fin_acked(a, b) and _fin_acked(b, a)):
        return RECORD_KEEP_OVER
    return RECORD_WALK


@njit(cache=True, nogil=True, _nrt=False)
def records_to_keep(conv, dirs, tuple_conv, cs, out):
    """``_records_to_keep`` of each connection of ``cs``, into ``out``. The engine moves a connection out
    of memory only when this is below RECORD_WALK (it is over), with that many records (``spill.py``)."""
    for i in range(len(cs)):
        out[i] = _records_to_keep(conv, dirs, tuple_conv, cs[i])


@njit(cache=True, nogil=True, _nrt=False)
def compact_records(conv, n_conv, dirs, tuple_conv, records, counter, evicted, keep, moved):
    """Drop the sent-segment records no later packet can reach, in place; return how many were kept.

    ``_copies`` only walks the last RECORD_WALK records of a direction, so that many are kept while a
    connection is open (a run with compactions gives the same rows as one without). A connection that is
    over (both FINs acknowledged, or reset) keeps RECORD_KEEP_OVER per direction, enough to find the
    original of a late repeat of its last segments; one replaced by a new connection on the same 4-tuple
    (port reuse) gets no packet again and keeps none. Kept records stay in their order, so each moves to
    a lower or equal index and the pool is rewritten in one forward pass. ``keep`` and ``moved`` are work
    arrays of at least ``counter[0].records`` elements (bool and int64)."""
    ct = counter[0]
    n = ct.records
    keep[:n] = False
    for c in range(n_conv):
        if evicted[c] != 0:  # its records are in the spill file; its records may be unmapped pages
            continue
        walk = _records_to_keep(conv, dirs, tuple_conv, c)
        for row in (2 * c, 2 * c + 1):
            d = dirs[row]
            i = d.rec_head
            k = 0
            while i >= 0 and k < walk:
                keep[i] = True
                i = records[i].prev
                k += 1
            if walk == 0:
                d.rec_head = NONE
    # moved[i]: the new index of kept record i
    m = 0
    for i in range(n):
        if keep[i]:
            moved[i] = m
            p = records[i].prev
            records[m] = records[i]
            records[m].prev = moved[p] if p >= 0 and keep[p] else NONE
            m += 1
    for row in range(2 * n_conv):
        if evicted[row >> 1] != 0:
            continue
        d = dirs[row]
        if d.rec_head >= 0:
            d.rec_head = moved[d.rec_head]  # a head is always kept unless its chain was dropped above
    ct.records = m
    return m
