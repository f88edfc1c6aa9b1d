"""The sequential heart of the engine: one compiled pass over a batch, in frame order.

For every packet: find its connection (splitting a 4-tuple on port reuse as Wireshark does,
reference B.1), update the handshake and the Zeek/Wireshark connection facts, run Wireshark's
``tcp_analyze_sequence_number`` checks (reference B.5, the 4.0 order: keep-alive exclusion, spurious
first, then fast retransmission, out-of-order, retransmission), recognise the same packet captured
twice, and count retransmitted bytes exactly on unwrapped 64-bit sequence numbers. Retransmissions
(kinds retransmission and fast) wait in a few slots per direction (a row of the ``pend`` pool) for the
receiver's answer: a D-SACK covering one, or the first ACK covering one echoing the original's TSval
(Eifel), writes a refinement row that the engine applies to that event row, whatever batch it was in
(spurious).

All state lives in the record arrays of ``state.FlowState`` (``cv`` is a connection's record, ``d`` the
packet's direction, ``r`` the reverse one, as Wireshark's ``tcpd->fwd`` and ``tcpd->rev``); a batch
boundary changes nothing, so a batched run equals a whole-file run. Decisions are written to an event
array, one ``state.EVENT`` row per labelled packet.

Compiled with ``numba.njit(cache=True, nogil=True)``; the helpers are inlined (``inline="always"``) and
``analyze_batch`` runs without numba's reference counting (``_nrt=False``: it allocates nothing), which
would otherwise cost an atomic increment and decrement per array argument of every helper call, per
packet. Numba checks only this file's timestamp for its cache: after editing the compiled helpers in
``handshake.py`` or ``connections.py``, or an initial value in ``state.py``, touch this file (a changed
record layout changes the kernels' signatures, which numba notices by itself).
"""
from __future__ import annotations

import numpy as np

from ..jit import njit
from ..schema import TH_ACK, TH_FIN, TH_RST, TH_SYN
from .connections import ZS, track_connection
from .handshake import track_handshake
from .state import (HOLES, NEW_CONVERSATION, NEW_DIRECTION, NEW_EVENT, NONE, NOTE_FIN_REPEATED, PEND_SLOTS,
                    RECORD_KEEP_OVER, RECORD_WALK, Evidence, Kind)

# Wireshark's per-segment analysis flags that later packets look at (``lastsegflags``)
A_KEEP_ALIVE, A_ZERO_WINDOW_PROBE = 1, 2

FAST_RETRANSMIT_WINDOW_NS = 20_000_000  # Wireshark: fast retransmission within 20 ms of the last dup ACK
OOO_DEFAULT_NS = 3_000_000  # Wireshark: out-of-order threshold when the iRTT is unknown
DUPLICATE_GAP_NS = 5_000_000  # same packet captured twice: at most 5 ms apart

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
def _mark_seen(d, s, e):
    """Record [s, e) as seen in direction ``d``: trim gaps it fills, open a gap when it jumps past the top."""
    if e <= s:
        return
    if d.seen == 0:
        d.seen = 1
        d.lo = s
        d.top = e
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


@njit(cache=True, nogil=True, inline="always")
def _add_record(d, records, ct, s, e, frame, ts, tsval):
    i = ct.records
    ct.records = i + 1
    rec = records[i]
    rec.start = s
    rec.end = e
    rec.frame = frame
    rec.ts = ts
    rec.tsval = tsval
    rec.prev = d.rec_head
    d.rec_head = i


@njit(cache=True, nogil=True, inline="always")
def _original(d, records, s, e):
    """Index of the oldest recent transmission of direction ``d`` overlapping [s, e), or -1."""
    found = -1
    i = d.rec_head
    steps = 0
    while i >= 0 and steps < RECORD_WALK:
        if records[i].start < e and records[i].end > s:
            found = i
        i = records[i].prev
        steps += 1
    return found


@njit(cache=True, nogil=True, inline="always")
def _is_duplicate(d, r, ts, seq, ack, plen, flags, win, ipid, tsval):
    """The same packet captured twice: identical to direction ``d``'s previous packet, within 5 ms,
    with the same non-zero IPv4 ID; or, without a usable ID (IPv6, ID 0), the same TCP TSval and no
    packet of the opposite direction ``r`` in between (a resend triggered by the peer, such as a SYN-ACK
    answering a repeated SYN within the same TSval tick, always follows a peer packet)."""
    if d.prev_frame == NONE or ts - d.prev_ts > DUPLICATE_GAP_NS:
        return False
    if (d.prev_seq != seq or d.prev_ack != ack or d.prev_len != plen or d.prev_flags != flags
            or d.prev_win != win):
        return False
    if ipid > 0:
        return d.prev_ipid == ipid and d.prev_tsval == tsval
    return (tsval >= 0 and d.prev_tsval == tsval and d.prev_ipid == ipid
            and (r.prev_frame == NONE or r.prev_frame < d.prev_frame))


@njit(cache=True, nogil=True, _nrt=False)
def _serial_le(a, b):
    """a <= b for 32-bit TCP timestamps (RFC 7323 serial arithmetic)."""
    return ((b - a) & _M32) < 0x80000000


@njit(cache=True, nogil=True, _nrt=False)
def _refine(refine, ct, slot, how, frame, x, y, z):
    """Write a refinement row for the waiting retransmission in ``slot`` (the caller frees the slot)."""
    rf = refine[ct.refined]
    ct.refined += 1
    rf.ev = slot.ev
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
                _refine(refine, ct, pend[p, best], Evidence.DSACK, frame, l0, r0, 0)
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
                    _refine(refine, ct, slot, Evidence.EIFEL, frame, tsecr, retx, orig)
                    _free_slot(r, pend, ct, k)


@njit(cache=True, nogil=True, _nrt=False)
def analyze_batch(tid, is_lo, frame, ts, flags, seq, ack, win, plen, ipid, tsval, tsecr, sack_n, sack1_le,
                  sack1_re, sack2_le, sack2_re, mss, wscale, sackp, tfo, vlan, conv, dirs, pend, tuple_conv,
                  records, counter, evicted, start, stream_out, ev, refine):
    """Analyze packets ``start:`` of a batch in frame order; returns the number of event rows written to
    ``ev``. Refinements of earlier event rows (a retransmission shown unnecessary) go to ``refine``, their
    number to ``counter[0].refined``; event row ``j`` has global index ``counter[0].events + j``.

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
        syn = (f & TH_SYN) != 0
        fin = (f & TH_FIN) != 0
        rst = (f & TH_RST) != 0
        ackf = (f & TH_ACK) != 0
        t = tid[i]
        lo = 1 if is_lo[i] else 0
        now = ts[i]
        # ---- connection (reference B.1): a SYN without ACK with a new ISN on a known 4-tuple starts a new
        # one. Wireshark 4.0 only flags a SYN-ACK with a new ISN as reused_ports and keeps the stream
        # (checked on ndpi_KakaoTalk_chat.pcap frame 46), so a SYN-ACK never splits here either.
        c = tuple_conv[t]
        if c >= 0 and evicted[c] != 0:
            ct.stop = i
            ct.restore = c
            return n_ev
        if c >= 0:
            d = dirs[2 * c + (0 if lo == conv[c].first_lo else 1)]
            if syn and not ackf and d.base_set == 1 and sq != d.base:
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
        seglen = np.int64(plen[i])
        d.pkts += 1
        # ---- the same packet captured twice: a row of its own, no effect on any state
        if (seglen > 0 or syn or fin) and _is_duplicate(d, r, now, sq, ak, seglen, f, wn, ip_id, tv):
            d.dups += 1
            if syn and not ackf:
                cv.mru_syn_ts = now  # Wireshark's iRTT starts at the latest copy of the SYN
            ev[n_ev] = NEW_EVENT[0]
            e = ev[n_ev]
            e.frame = fr
            e.ts = now
            e.seq_raw = sq
            e.flags = f
            e.sender_lo = lo
            e.kind = Kind.DUPLICATE
            e.conv = c
            e.dir = di
            e.seq = _unwrap(d, sq) if d.base_set == 1 else NONE
            e.len = seglen
            e.overlap = seglen
            e.orig_frame = d.prev_frame
            e.orig_ts = d.prev_ts
            e.count = ip_id
            e.gap = now - d.prev_ts
            e.limit = DUPLICATE_GAP_NS
            e.ref_frame = d.prev_frame
            n_ev += 1
            continue
        d.prev_frame = fr
        d.prev_ts = now
        d.prev_seq = sq
        d.prev_ack = ak
        d.prev_len = seglen
        d.prev_flags = f
        d.prev_win = wn
        d.prev_ipid = ip_id
        d.prev_tsval = tv
        d.bytes += seglen
        if syn:
            d.syn_pkts += 1
        if fin:
            d.fin_pkts += 1
        if rst:
            d.rst_pkts += 1
        # ---- handshake and window scaling (Wireshark: scaling only when both SYN and SYN-ACK carry WS)
        track_handshake(cv, di, f, sq, ak, fr, now, seglen, np.int64(mss[i]), ws, np.int64(sackp[i]),
                        tv, np.int64(tfo[i]), batch)
        if syn:
            if not ackf:
                d.wscale = ws
            else:
                if ws < 0 or r.wscale < 0:
                    d.wscale = -2
                    r.wscale = -2
                else:
                    d.wscale = ws
        window = wn
        if not syn and d.wscale >= 0 and r.wscale >= 0:
            window = window << d.wscale
        # ---- relative sequence bases (reference B.2)
        if d.base_set == 0:
            d.base = sq if syn else (sq - 1) & _M32
            d.base_set = 1
        if ackf and r.base_set == 0:
            r.base = (ak - 1) & _M32
            r.base_set = 1
        s = _unwrap(d, sq)
        a = _unwrap(r, ak) if ackf else 0
        ack_raw = ak if ackf else 0
        # ---- does this ACK show that a retransmission of the other side was unnecessary?
        if ackf and r.pend_live > 0:
            _check_pending(r, pend, refine, ct, fr, a, np.int64(tsecr[i]), np.int64(sack_n[i]),
                           np.int64(sack1_le[i]), np.int64(sack1_re[i]), np.int64(sack2_le[i]),
                           np.int64(sack2_re[i]))
        nextseq_set = d.nextseq_set == 1
        nextseq = d.nextseq
        # ---- Wireshark forward checks (reference B.5)
        aflags = 0
        plain = not (syn or fin or rst)
        if seglen == 1 and nextseq_set and s == nextseq and r.window == 0:
            aflags |= A_ZERO_WINDOW_PROBE
        else:
            if (seglen == 0 or seglen == 1) and nextseq_set and s == nextseq - 1 and plain:
                aflags |= A_KEEP_ALIVE
            same = (seglen == 0 and nextseq_set and s == nextseq and d.lastack_raw == ack_raw and plain
                    and window == d.window)
            if same and window != 0 and (r.lastsegflags & A_KEEP_ALIVE) != 0:
                pass  # keep-alive ACK
            elif same and window == 0 and (r.lastsegflags & A_ZERO_WINDOW_PROBE) != 0:
                pass  # zero-window-probe ACK
            elif same and window != 0:
                d.dupacks += 1
        if ack_raw != d.lastack_raw:
            d.lastnondupack = fr
            d.dupacks = 0
        # ---- retransmission classification, Wireshark 4.0 order
        kind = 0
        ev_count = 0
        ev_gap = 0
        ev_limit = 0
        ev_ref = NONE
        sf = 1 if (syn or fin) else 0
        if seglen > 0 or syn or fin:
            not_advanced = nextseq_set and s < nextseq
            if (aflags & A_KEEP_ALIVE) == 0:
                if seglen > 1 and nextseq_set and s == nextseq - 1:
                    not_advanced = False  # data right after a 1-byte zero-window probe
                irtt = cv.irtt
                ooo_limit = irtt if irtt != 0 else OOO_DEFAULT_NS
                if seglen > 0 and r.lastack_set == 1 and s + seglen <= r.lastack:
                    kind = Kind.SPURIOUS_RETRANSMISSION
                    ev_ref = r.lastack_frame
                    ev_gap = now - r.lastack_ts
                elif (not_advanced and r.dupacks >= 2 and r.lastack_set == 1
                      and r.lastack == s and now - r.lastack_ts < FAST_RETRANSMIT_WINDOW_NS):
                    kind = Kind.FAST_RETRANSMISSION
                    ev_count = r.dupacks
                    ev_gap = now - r.lastack_ts
                    ev_limit = FAST_RETRANSMIT_WINDOW_NS
                    ev_ref = r.lastack_frame
                elif not_advanced and now - d.nextseq_ts < ooo_limit and nextseq != s + seglen + sf:
                    kind = Kind.OUT_OF_ORDER
                    ev_gap = now - d.nextseq_ts
                    ev_limit = ooo_limit
                    ev_count = 1 if irtt != 0 else 0
                    ev_ref = d.nextseq_frame
                elif not_advanced and syn and ackf and s == 0 and cv.hs_simopen == 1 and d.syn_pkts == 2:
                    pass  # simultaneous open: a side's first SYN-ACK repeats its own SYN by design (RFC 9293)
                elif not_advanced:
                    kind = Kind.SYN_RETRANSMISSION if syn else Kind.RETRANSMISSION
                    ev_gap = now - d.nextseq_ts
                    ev_ref = d.nextseq_frame
        if (aflags & A_KEEP_ALIVE) != 0:
            d.ka += 1
        if (aflags & A_ZERO_WINDOW_PROBE) != 0:
            d.zwp += 1
        # ---- exact byte accounting: which bytes repeat, and where they were first sent
        end = s + seglen + sf
        top_before = d.top
        seen_before = d.seen == 1
        repeated = _seen_bytes(d, s + (1 if syn else 0), s + (1 if syn else 0) + seglen)
        if kind != 0:
            orig = _original(d, records, s, end)
            ev[n_ev] = NEW_EVENT[0]
            e = ev[n_ev]
            e.frame = fr
            e.ts = now
            e.seq_raw = sq
            e.flags = f
            e.sender_lo = lo
            e.kind = kind
            e.conv = c
            e.dir = di
            e.seq = s
            e.len = seglen
            e.overlap = repeated
            if orig >= 0:
                e.orig_frame = records[orig].frame
                e.orig_ts = records[orig].ts
            e.count = ev_count
            e.gap = ev_gap
            e.limit = ev_limit
            e.ref_frame = ev_ref
            e.note = (NOTE_FIN_REPEATED if fin and not syn and not rst and d.z_fin_seq == ((sq + seglen) & _M32)
                      else 0)
            if kind == Kind.RETRANSMISSION or kind == Kind.FAST_RETRANSMISSION:
                _add_pending(d, pend, ct, ev_base + n_ev, s, end, records[orig].tsval if orig >= 0 else NONE, tv)
            n_ev += 1
            if kind == Kind.OUT_OF_ORDER:
                d.ooo += 1
            else:
                d.retx += 1
                d.retx_bytes += repeated
        if end > s and (_seen_bytes(d, s, end) < end - s):
            _add_record(d, records, ct, s, end, fr, now, tv)
        _mark_seen(d, s, end)
        # ---- Wireshark bookkeeping (reference B.5)
        nxt = s + seglen + sf
        if (not nextseq_set or nxt > nextseq) and (aflags & A_ZERO_WINDOW_PROBE) == 0:
            d.nextseq = nxt
            d.nextseq_set = 1
            d.nextseq_ts = now
            d.nextseq_frame = fr
        d.window = window
        d.lastack_raw = ack_raw
        if ackf:
            d.lastack = a
            d.lastack_set = 1
        else:
            d.lastack_set = 0
        d.lastack_ts = now
        d.lastack_frame = fr
        d.lastsegflags = aflags
        if d.uref < s:
            d.uref = s
        if ackf and r.uref < a:
            r.uref = a
        # ---- Zeek history/state, Wireshark completeness
        rexmit = seglen > 0 and seen_before and end <= top_before and d.zstate != ZS.RESET
        track_connection(cv, d, r, di, f, sq, seglen, wn, rexmit)
    return n_ev


@njit(cache=True, nogil=True, inline="always")
def _fin_acked(d, other):
    """Direction ``d`` sent its FIN and the other side acknowledged all of it, the FIN included."""
    return d.zstate == ZS.CLOSED and d.nextseq_set == 1 and other.lastack_set == 1 and other.lastack >= d.nextseq


@njit(cache=True, nogil=True, inline="always")
def _records_to_keep(conv, dirs, tuple_conv, c):
    """How many sent-segment records per direction connection ``c`` needs: none once a new connection took
    its 4-tuple (no packet reaches it again), RECORD_KEEP_OVER once it is over (reset, or both FINs
    acknowledged), else the RECORD_WALK that ``_original`` may search."""
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

    ``_original`` only walks the last RECORD_WALK records of a direction, so that many are kept while a
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
