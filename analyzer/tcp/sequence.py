"""The sequential heart of the engine: one compiled pass over a batch, in frame order.

For every packet: find its connection (splitting a 4-tuple on port reuse as Wireshark does,
reference B.1), update the handshake and the Zeek/Wireshark connection facts, run Wireshark's
``tcp_analyze_sequence_number`` checks (reference B.5, the 4.0 order: keep-alive exclusion, spurious
first, then fast retransmission, out-of-order, retransmission), recognise the same packet captured
twice, and count retransmitted bytes exactly on unwrapped 64-bit sequence numbers. Retransmissions
(kinds retransmission and fast) wait in a few slots per direction (a row of the ``state.pend`` pool) for the receiver's
answer: a D-SACK covering one, or the first ACK covering one echoing the original's TSval (Eifel), writes a
refinement row that the engine applies to that event row, whatever batch it was in (spurious).

All state lives in the arrays of ``state.FlowState``; a batch boundary changes nothing, so a batched
run equals a whole-file run. Decisions are written to an event array, one row per labelled packet.

Compiled with ``numba.njit(cache=True, nogil=True)``; the helpers are inlined (``inline="always"``) and
``analyze_batch`` runs without numba's reference counting (``_nrt=False``: it allocates nothing), which
would otherwise cost an atomic increment and decrement per array argument of every helper call, per
packet (over half the run time). Numba checks only this file's timestamp for its cache: after editing
the compiled helpers in ``handshake.py`` or ``connections.py``, or the column constants in ``state.py``,
delete ``analyzer/tcp/__pycache__/*.nbi`` and ``*.nbc`` (or touch this file).
"""
from __future__ import annotations

import numpy as np

from ..jit import njit
from ..schema import TH_ACK, TH_FIN, TH_RST, TH_SYN
from .connections import ZS_CLOSED, ZS_INACTIVE, ZS_RESET, track_connection
from .handshake import track_handshake
from .state import (C_CLIENT_DIR, C_FIRST_FRAME, C_FIRST_LO, C_FIRST_TS, C_HIST_LEN, C_HS_END, C_HS_SIMOPEN,
                    C_HS_STATE, C_IRTT, C_LAST_FRAME, C_MRU_SYN_TS, C_LAST_TS, C_REUSED, C_SA_N, C_SYN_N, C_TUPLE, C_VLAN,
                    C_COMPLETENESS, D_BASE, D_BASE_SET, D_BYTES, D_DUPACKS, D_DUPS, D_FIN_PKTS, D_KA,
                    D_LASTACK, D_LASTACK_FRAME, D_LASTACK_RAW, D_LASTACK_SET, D_LASTACK_TS,
                    D_LASTNONDUPACK, D_LASTSEGFLAGS, D_LO, D_NEXTSEQ, D_NEXTSEQ_FRAME, D_NEXTSEQ_SET,
                    D_NEXTSEQ_TS, D_OOO, D_PKTS, D_PREV_ACK, D_PREV_FLAGS, D_PREV_FRAME, D_PREV_IPID,
                    D_PREV_LEN, D_PREV_SEQ, D_PREV_TS, D_PREV_TSVAL, D_PREV_WIN, D_REC_HEAD, D_RETX,
                    D_RETX_BYTES, D_RST_PKTS, D_SEEN, D_SYN_PKTS, D_TOP, D_UREF, D_WINDOW, D_WSCALE,
                    D_Z_FIN_SEQ, D_Z_RXMIT, D_Z_ZWIN, D_ZONCE, D_ZSTATE, D_ZWP, HOLES, NONE, R_END, R_FRAME,
                    R_PREV, R_START, R_TS, R_TSVAL, RECORD_KEEP_OVER, RECORD_WALK, CT_BATCH, CT_EVENTS, CT_PENDING,
                    CT_PEND_FREE, CT_PEND_ROWS, CT_REFINED, CT_RESTORE, CT_STOP,
                    D_PEND_EIFEL, D_PEND_LIVE, D_PEND_ROW, P_EIFEL, P_END, P_EV, P_START, P_TSV_ORIG, P_TSV_RETX,
                    PEND_SLOTS)

# retransmission-table kinds (documented in analyzer.schema.RETRANSMISSION_KINDS)
K_RETRANSMISSION, K_FAST, K_SPURIOUS, K_SYN, K_OUT_OF_ORDER, K_DUPLICATE = 1, 2, 3, 4, 5, 6

# Wireshark's per-segment analysis flags that later packets look at (lastsegmentflags)
A_KEEP_ALIVE, A_ZERO_WINDOW_PROBE = 1, 2

FAST_RETRANSMIT_WINDOW_NS = 20_000_000  # Wireshark: fast retransmission within 20 ms of the last dup ACK
OOO_DEFAULT_NS = 3_000_000  # Wireshark: out-of-order threshold when the iRTT is unknown
DUPLICATE_GAP_NS = 5_000_000  # same packet captured twice: at most 5 ms apart

# event columns
(E_KIND, E_CONV, E_DIR, E_SEQ, E_LEN, E_OVERLAP, E_ORIG_FRAME, E_ORIG_TS, E_COUNT, E_GAP, E_LIMIT,
 E_REF_FRAME, E_NOTE,
 # the packet's own fields, for the table
 E_FRAME, E_TS, E_SEQ_RAW, E_FLAGS, E_SENDER_LO,
 # later evidence that the retransmission was unnecessary (filled from the refinement rows, see below)
 E_SPUR, E_SPUR_FRAME, E_SPUR_A, E_SPUR_B, E_SPUR_C,
 E_N) = range(24)

NOTE_FIN_REPEATED = 1  # E_NOTE bit: the segment's FIN repeats a FIN sent before at the same sequence number

# Refinement rows, written when the receiver shows a retransmission (kind retransmission or fast) was
# unnecessary; the engine copies them into the event row with global index RF_EV (possibly of an earlier
# batch): how (SP_*), the evidence frame and three values for the reason: D-SACK: left and right edge
# (relative), 0; Eifel: the echoed TSecr, the retransmission's TSval, the original's TSval.
RF_EV, RF_HOW, RF_FRAME, RF_A, RF_B, RF_C, RF_N = range(7)
SP_DSACK, SP_EIFEL = 1, 2

_M32 = 0xFFFFFFFF


@njit(cache=True, nogil=True, inline="always")
def _unwrap(dirs, row, raw):
    """Unwrapped 64-bit sequence number, relative to the direction's base, nearest to its reference."""
    rel = (raw - dirs[row, D_BASE]) & _M32
    ref = dirs[row, D_UREF]
    diff = (rel - ref) & _M32
    if diff >= 0x80000000:
        diff -= 0x100000000
    return ref + diff


@njit(cache=True, nogil=True, inline="always")
def _init_direction(dirs, holes, row):
    for k in range(dirs.shape[1]):
        dirs[row, k] = NONE
    for k in (D_BASE_SET, D_UREF, D_NEXTSEQ_SET, D_LASTACK_SET, D_DUPACKS, D_LASTSEGFLAGS, D_SEEN, D_PKTS,
              D_BYTES, D_RETX, D_RETX_BYTES, D_OOO, D_DUPS, D_KA, D_ZWP, D_SYN_PKTS, D_FIN_PKTS, D_RST_PKTS,
              D_ZSTATE, D_ZONCE, D_Z_RXMIT, D_Z_ZWIN, D_PEND_LIVE, D_PEND_EIFEL):
        dirs[row, k] = 0
    dirs[row, D_ZSTATE] = ZS_INACTIVE
    for k in range(HOLES):
        holes[row, k, 0] = 0
        holes[row, k, 1] = 0


@njit(cache=True, nogil=True, inline="always")
def _new_conversation(conv, dirs, holes, history, counter, t, lo, frame, ts, vlan, reused):
    c = counter[0]
    counter[0] = c + 1
    for k in range(conv.shape[1]):
        conv[c, k] = NONE
    for k in (C_IRTT, C_COMPLETENESS, C_HS_STATE, C_HS_END, C_HS_SIMOPEN, C_SYN_N, C_SA_N, C_HIST_LEN):
        conv[c, k] = 0
    conv[c, C_TUPLE] = t
    conv[c, C_FIRST_LO] = lo
    conv[c, C_CLIENT_DIR] = 0
    conv[c, C_FIRST_FRAME] = frame
    conv[c, C_FIRST_TS] = ts
    conv[c, C_VLAN] = vlan
    conv[c, C_REUSED] = reused
    history[c, :] = 0
    _init_direction(dirs, holes, 2 * c)
    _init_direction(dirs, holes, 2 * c + 1)
    return c


@njit(cache=True, nogil=True, inline="always")
def _seen_bytes(dirs, holes, row, s, e):
    """How many bytes of [s, e) were already seen in this direction (exact, up to HOLES gaps)."""
    if dirs[row, D_SEEN] == 0 or e <= s:
        return 0
    a = max(s, dirs[row, D_LO])
    b = min(e, dirs[row, D_TOP])
    if b <= a:
        return 0
    n = b - a
    for k in range(HOLES):
        x = max(a, holes[row, k, 0])
        y = min(b, holes[row, k, 1])
        if y > x:
            n -= y - x
    return n


@njit(cache=True, nogil=True, inline="always")
def _add_hole(holes, row, lo, hi):
    slot = 0
    for k in range(HOLES):  # an empty slot, else the lowest gap (the oldest, least likely to be filled)
        if holes[row, k, 1] <= holes[row, k, 0]:
            slot = k
            break
        if holes[row, k, 0] < holes[row, slot, 0]:
            slot = k
    holes[row, slot, 0] = lo
    holes[row, slot, 1] = hi


@njit(cache=True, nogil=True, inline="always")
def _mark_seen(dirs, holes, row, s, e):
    """Record [s, e) as seen: trim gaps it fills, open a gap when it jumps past the top."""
    if e <= s:
        return
    if dirs[row, D_SEEN] == 0:
        dirs[row, D_SEEN] = 1
        dirs[row, D_LO] = s
        dirs[row, D_TOP] = e
        return
    for k in range(HOLES):
        hl, hh = holes[row, k, 0], holes[row, k, 1]
        if hh <= hl or e <= hl or s >= hh:
            continue
        if s <= hl and e >= hh:
            holes[row, k, 1] = hl  # filled
        elif s <= hl:
            holes[row, k, 0] = e
        elif e >= hh:
            holes[row, k, 1] = s
        else:  # split: keep the lower part here, the upper part in a free slot if any
            holes[row, k, 1] = s
            for j in range(HOLES):
                if holes[row, j, 1] <= holes[row, j, 0]:
                    holes[row, j, 0] = e
                    holes[row, j, 1] = hh
                    break
    if s > dirs[row, D_TOP]:
        _add_hole(holes, row, dirs[row, D_TOP], s)
    if s < dirs[row, D_LO]:
        if e < dirs[row, D_LO]:
            _add_hole(holes, row, e, dirs[row, D_LO])
        dirs[row, D_LO] = s
    if e > dirs[row, D_TOP]:
        dirs[row, D_TOP] = e


@njit(cache=True, nogil=True, inline="always")
def _add_record(dirs, records, n_records, row, s, e, frame, ts, tsval):
    r = n_records[0]
    n_records[0] = r + 1
    records[r, R_START] = s
    records[r, R_END] = e
    records[r, R_FRAME] = frame
    records[r, R_TS] = ts
    records[r, R_TSVAL] = tsval
    records[r, R_PREV] = dirs[row, D_REC_HEAD]
    dirs[row, D_REC_HEAD] = r


@njit(cache=True, nogil=True, inline="always")
def _original(dirs, records, row, s, e):
    """Record index of the oldest recent transmission overlapping [s, e), or -1."""
    found = -1
    r = dirs[row, D_REC_HEAD]
    steps = 0
    while r >= 0 and steps < RECORD_WALK:
        if records[r, R_START] < e and records[r, R_END] > s:
            found = r
        r = records[r, R_PREV]
        steps += 1
    return found


@njit(cache=True, nogil=True, inline="always")
def _is_duplicate(dirs, fw, rv, frame, ts, seq, ack, plen, flags, win, ipid, tsval):
    """The same packet captured twice: identical to this direction's previous packet, within 5 ms,
    with the same non-zero IPv4 ID; or, without a usable ID (IPv6, ID 0), the same TCP TSval and no
    packet of the opposite direction in between (a resend triggered by the peer, such as a SYN-ACK
    answering a repeated SYN within the same TSval tick, always follows a peer packet)."""
    if dirs[fw, D_PREV_FRAME] == NONE or ts - dirs[fw, D_PREV_TS] > DUPLICATE_GAP_NS:
        return False
    if (dirs[fw, D_PREV_SEQ] != seq or dirs[fw, D_PREV_ACK] != ack or dirs[fw, D_PREV_LEN] != plen
            or dirs[fw, D_PREV_FLAGS] != flags or dirs[fw, D_PREV_WIN] != win):
        return False
    if ipid > 0:
        return dirs[fw, D_PREV_IPID] == ipid and dirs[fw, D_PREV_TSVAL] == tsval
    return (tsval >= 0 and dirs[fw, D_PREV_TSVAL] == tsval and dirs[fw, D_PREV_IPID] == ipid
            and (dirs[rv, D_PREV_FRAME] == NONE or dirs[rv, D_PREV_FRAME] < dirs[fw, D_PREV_FRAME]))


@njit(cache=True, nogil=True, inline="always")
def _serial_le(a, b):
    """a <= b for 32-bit TCP timestamps (RFC 7323 serial arithmetic)."""
    return ((b - a) & _M32) < 0x80000000


@njit(cache=True, nogil=True, inline="always")
def _refine(refine, counter, pend, p, k, how, frame, x, y, z):
    """Write a refinement row for slot ``k`` of pool row ``p`` (the caller frees the slot)."""
    r = counter[CT_REFINED]
    counter[CT_REFINED] = r + 1
    refine[r, RF_EV] = pend[p, k, P_EV]
    refine[r, RF_HOW] = how
    refine[r, RF_FRAME] = frame
    refine[r, RF_A] = x
    refine[r, RF_B] = y
    refine[r, RF_C] = z


@njit(cache=True, nogil=True, inline="always")
def _pend_row(dirs, pend, counter, row):
    """The ``pend`` pool row of direction ``row``, lent from the pool (all slots free) if it has none."""
    p = dirs[row, D_PEND_ROW]
    if p == NONE:
        p = counter[CT_PEND_FREE]
        if p != NONE:
            counter[CT_PEND_FREE] = pend[p, 0, P_START]
        else:
            p = counter[CT_PEND_ROWS]
            counter[CT_PEND_ROWS] = p + 1
        for k in range(PEND_SLOTS):
            pend[p, k, P_EV] = NONE
        dirs[row, D_PEND_ROW] = p
    return p


@njit(cache=True, nogil=True, inline="always")
def _free_slot(dirs, pend, counter, row, k):
    """Free slot ``k`` of direction ``row``; its pool row goes back to the pool with its last live slot."""
    p = dirs[row, D_PEND_ROW]
    if pend[p, k, P_EIFEL] == 1:
        dirs[row, D_PEND_EIFEL] -= 1
    pend[p, k, P_EV] = NONE
    dirs[row, D_PEND_LIVE] -= 1
    counter[CT_PENDING] -= 1
    if dirs[row, D_PEND_LIVE] == 0:
        pend[p, 0, P_START] = counter[CT_PEND_FREE]
        counter[CT_PEND_FREE] = p
        dirs[row, D_PEND_ROW] = NONE


@njit(cache=True, nogil=True, inline="always")
def _add_pending(dirs, pend, counter, row, ev_index, s, e, tsv_orig, tsv_retx):
    """Keep a retransmission [s, e) of direction ``row`` until the receiver shows whether it was needed."""
    p = _pend_row(dirs, pend, counter, row)
    k = 0
    for j in range(PEND_SLOTS):  # a free slot, else the oldest
        if pend[p, j, P_EV] == NONE:
            k = j
            break
        if pend[p, j, P_EV] < pend[p, k, P_EV]:
            k = j
    if pend[p, k, P_EV] != NONE:
        _free_slot(dirs, pend, counter, row, k)  # all 8 slots live: the row stays lent
    pend[p, k, P_EV] = ev_index
    pend[p, k, P_START] = s
    pend[p, k, P_END] = e
    pend[p, k, P_TSV_ORIG] = tsv_orig
    pend[p, k, P_TSV_RETX] = tsv_retx
    eifel = 1 if (tsv_orig >= 0 and tsv_retx >= 0 and tsv_orig != tsv_retx and _serial_le(tsv_orig, tsv_retx)) else 0
    pend[p, k, P_EIFEL] = eifel
    dirs[row, D_PEND_EIFEL] += eifel
    dirs[row, D_PEND_LIVE] += 1
    counter[CT_PENDING] += 1


@njit(cache=True, nogil=True, inline="always")
def _check_pending(dirs, pend, refine, counter, rv, frame, a, tsecr, nsack, le0, re0, le1, re1):
    """An ACK from the receiver of direction ``rv`` (cumulative ACK ``a``, unwrapped; TSecr; raw edges
    of its first two SACK blocks) against the retransmissions of ``rv`` waiting for evidence.

    D-SACK (RFC 2883): the first SACK block starts below the cumulative ACK, or lies inside the second
    block; the latest waiting retransmission whose whole range it covers was received twice.
    Eifel (RFC 3522): the first ACK covering a waiting retransmission echoes a TSecr at or after the
    original's TSval and before the retransmission's: the ACK was sent for the original, so the original
    had arrived. A TSecr of 0 is taken as no echo."""
    p = dirs[rv, D_PEND_ROW]
    if p == NONE:
        return
    if nsack > 0:
        l0 = _unwrap(dirs, rv, le0)
        r0 = _unwrap(dirs, rv, re0)
        dsack = l0 < a
        if not dsack and nsack > 1:
            dsack = _unwrap(dirs, rv, le1) <= l0 and r0 <= _unwrap(dirs, rv, re1)
        if dsack and r0 > l0:
            best = -1
            for k in range(PEND_SLOTS):
                if (pend[p, k, P_EV] != NONE and pend[p, k, P_START] >= l0 and pend[p, k, P_END] <= r0
                        and (best < 0 or pend[p, k, P_EV] > pend[p, best, P_EV])):
                    best = k
            if best >= 0:
                _refine(refine, counter, pend, p, best, SP_DSACK, frame, l0, r0, 0)
                _free_slot(dirs, pend, counter, rv, best)
    # (once the last live slot is freed the row is back in the pool and D_PEND_EIFEL is 0: nothing below runs)
    if tsecr > 0 and dirs[rv, D_PEND_EIFEL] > 0:  # 0: nothing echoed (or absent, -1)
        for k in range(PEND_SLOTS):
            if dirs[rv, D_PEND_ROW] == NONE:
                break
            if pend[p, k, P_EV] != NONE and pend[p, k, P_EIFEL] == 1 and a >= pend[p, k, P_END]:
                pend[p, k, P_EIFEL] = 0
                dirs[rv, D_PEND_EIFEL] -= 1
                orig = pend[p, k, P_TSV_ORIG]
                retx = pend[p, k, P_TSV_RETX]
                if _serial_le(orig, tsecr) and tsecr != retx and _serial_le(tsecr, retx):
                    _refine(refine, counter, pend, p, k, SP_EIFEL, frame, tsecr, retx, orig)
                    _free_slot(dirs, pend, counter, rv, k)


@njit(cache=True, nogil=True, _nrt=False)
def analyze_batch(tid, is_lo, frame, ts, flags, seq, ack, win, plen, ipid, tsval, tsecr, sack_n, sack1_le,
                  sack1_re, sack2_le, sack2_re, mss, wscale, sackp, tfo, vlan, conv, dirs, holes, pend, history,
                  tuple_conv, records, n_records, counter, evicted, start, stream_out, ev, refine):
    """Analyze packets ``start:`` of a batch in frame order; returns the number of event rows written to
    ``ev``. Refinements of earlier event rows (a retransmission shown unnecessary) go to ``refine``, their
    number to ``counter[CT_REFINED]``; event row ``j`` has global index ``counter[CT_EVENTS] + j``.

    A packet of a connection whose state was moved out (``evicted``) stops the pass before that packet:
    ``counter[CT_STOP]`` is its index and ``counter[CT_RESTORE]`` the connection; the caller puts the
    state back and calls again from there (``start``)."""
    batch = counter[CT_BATCH]
    ev_base = counter[CT_EVENTS]
    if start == 0:
        counter[CT_REFINED] = 0
    counter[CT_STOP] = NONE
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
            counter[CT_STOP] = i
            counter[CT_RESTORE] = c
            return n_ev
        if c >= 0:
            d = 0 if lo == conv[c, C_FIRST_LO] else 1
            if syn and not ackf and dirs[2 * c + d, D_BASE_SET] == 1 and sq != dirs[2 * c + d, D_BASE]:
                c = _new_conversation(conv, dirs, holes, history, counter, t, lo, fr, now, np.int64(vlan[i]), 1)
                tuple_conv[t] = c
        else:
            c = _new_conversation(conv, dirs, holes, history, counter, t, lo, fr, now, np.int64(vlan[i]), 0)
            tuple_conv[t] = c
        stream_out[i] = c
        d = 0 if lo == conv[c, C_FIRST_LO] else 1
        fw = 2 * c + d
        rv = 2 * c + 1 - d
        conv[c, C_LAST_FRAME] = fr
        conv[c, C_LAST_TS] = now
        seglen = np.int64(plen[i])
        dirs[fw, D_PKTS] += 1
        # ---- the same packet captured twice: a row of its own, no effect on any state
        if (seglen > 0 or syn or fin) and _is_duplicate(dirs, fw, rv, fr, now, sq, ak, seglen, f,
                                                        wn, ip_id, tv):
            dirs[fw, D_DUPS] += 1
            if syn and not ackf:
                conv[c, C_MRU_SYN_TS] = now  # Wireshark's iRTT starts at the latest copy of the SYN
            ev[n_ev, E_FRAME] = fr
            ev[n_ev, E_TS] = now
            ev[n_ev, E_SEQ_RAW] = sq
            ev[n_ev, E_FLAGS] = f
            ev[n_ev, E_SENDER_LO] = lo
            ev[n_ev, E_KIND] = K_DUPLICATE
            ev[n_ev, E_CONV] = c
            ev[n_ev, E_DIR] = d
            ev[n_ev, E_SEQ] = _unwrap(dirs, fw, sq) if dirs[fw, D_BASE_SET] == 1 else NONE
            ev[n_ev, E_LEN] = seglen
            ev[n_ev, E_OVERLAP] = seglen
            ev[n_ev, E_ORIG_FRAME] = dirs[fw, D_PREV_FRAME]
            ev[n_ev, E_ORIG_TS] = dirs[fw, D_PREV_TS]
            ev[n_ev, E_COUNT] = ip_id
            ev[n_ev, E_GAP] = now - dirs[fw, D_PREV_TS]
            ev[n_ev, E_LIMIT] = DUPLICATE_GAP_NS
            ev[n_ev, E_REF_FRAME] = dirs[fw, D_PREV_FRAME]
            ev[n_ev, E_NOTE] = 0
            ev[n_ev, E_SPUR] = 0
            ev[n_ev, E_SPUR_FRAME] = NONE
            n_ev += 1
            continue
        dirs[fw, D_PREV_FRAME] = fr
        dirs[fw, D_PREV_TS] = now
        dirs[fw, D_PREV_SEQ] = sq
        dirs[fw, D_PREV_ACK] = ak
        dirs[fw, D_PREV_LEN] = seglen
        dirs[fw, D_PREV_FLAGS] = f
        dirs[fw, D_PREV_WIN] = wn
        dirs[fw, D_PREV_IPID] = ip_id
        dirs[fw, D_PREV_TSVAL] = tv
        dirs[fw, D_BYTES] += seglen
        if syn:
            dirs[fw, D_SYN_PKTS] += 1
        if fin:
            dirs[fw, D_FIN_PKTS] += 1
        if rst:
            dirs[fw, D_RST_PKTS] += 1
        # ---- handshake and window scaling (Wireshark: scaling only when both SYN and SYN-ACK carry WS)
        track_handshake(conv, c, d, f, sq, ak, fr, now, seglen, np.int64(mss[i]), ws, np.int64(sackp[i]),
                        tv, np.int64(tfo[i]), batch)
        if syn:
            if not ackf:
                dirs[fw, D_WSCALE] = ws
            else:
                if ws < 0 or dirs[rv, D_WSCALE] < 0:
                    dirs[fw, D_WSCALE] = -2
                    dirs[rv, D_WSCALE] = -2
                else:
                    dirs[fw, D_WSCALE] = ws
        window = wn
        if not syn and dirs[fw, D_WSCALE] >= 0 and dirs[rv, D_WSCALE] >= 0:
            window = window << dirs[fw, D_WSCALE]
        # ---- relative sequence bases (reference B.2)
        if dirs[fw, D_BASE_SET] == 0:
            dirs[fw, D_BASE] = sq if syn else (sq - 1) & _M32
            dirs[fw, D_BASE_SET] = 1
        if ackf and dirs[rv, D_BASE_SET] == 0:
            dirs[rv, D_BASE] = (ak - 1) & _M32
            dirs[rv, D_BASE_SET] = 1
        s = _unwrap(dirs, fw, sq)
        a = _unwrap(dirs, rv, ak) if ackf else 0
        ack_raw = ak if ackf else 0
        # ---- does this ACK show that a retransmission of the other side was unnecessary?
        if ackf and dirs[rv, D_PEND_LIVE] > 0:
            _check_pending(dirs, pend, refine, counter, rv, fr, a, np.int64(tsecr[i]), np.int64(sack_n[i]),
                           np.int64(sack1_le[i]), np.int64(sack1_re[i]), np.int64(sack2_le[i]),
                           np.int64(sack2_re[i]))
        nextseq_set = dirs[fw, D_NEXTSEQ_SET] == 1
        nextseq = dirs[fw, D_NEXTSEQ]
        # ---- Wireshark forward checks (reference B.5)
        aflags = 0
        plain = not (syn or fin or rst)
        if seglen == 1 and nextseq_set and s == nextseq and dirs[rv, D_WINDOW] == 0:
            aflags |= A_ZERO_WINDOW_PROBE
        else:
            if (seglen == 0 or seglen == 1) and nextseq_set and s == nextseq - 1 and plain:
                aflags |= A_KEEP_ALIVE
            same = (seglen == 0 and nextseq_set and s == nextseq and dirs[fw, D_LASTACK_RAW] == ack_raw and plain
                    and window == dirs[fw, D_WINDOW])
            if same and window != 0 and (dirs[rv, D_LASTSEGFLAGS] & A_KEEP_ALIVE) != 0:
                pass  # keep-alive ACK
            elif same and window == 0 and (dirs[rv, D_LASTSEGFLAGS] & A_ZERO_WINDOW_PROBE) != 0:
                pass  # zero-window-probe ACK
            elif same and window != 0:
                dirs[fw, D_DUPACKS] += 1
        if ack_raw != dirs[fw, D_LASTACK_RAW]:
            dirs[fw, D_LASTNONDUPACK] = fr
            dirs[fw, D_DUPACKS] = 0
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
                irtt = conv[c, C_IRTT]
                ooo_limit = irtt if irtt != 0 else OOO_DEFAULT_NS
                if seglen > 0 and dirs[rv, D_LASTACK_SET] == 1 and s + seglen <= dirs[rv, D_LASTACK]:
                    kind = K_SPURIOUS
                    ev_ref = dirs[rv, D_LASTACK_FRAME]
                    ev_gap = now - dirs[rv, D_LASTACK_TS]
                elif (not_advanced and dirs[rv, D_DUPACKS] >= 2 and dirs[rv, D_LASTACK_SET] == 1
                      and dirs[rv, D_LASTACK] == s and now - dirs[rv, D_LASTACK_TS] < FAST_RETRANSMIT_WINDOW_NS):
                    kind = K_FAST
                    ev_count = dirs[rv, D_DUPACKS]
                    ev_gap = now - dirs[rv, D_LASTACK_TS]
                    ev_limit = FAST_RETRANSMIT_WINDOW_NS
                    ev_ref = dirs[rv, D_LASTACK_FRAME]
                elif (not_advanced and now - dirs[fw, D_NEXTSEQ_TS] < ooo_limit
                      and nextseq != s + seglen + sf):
                    kind = K_OUT_OF_ORDER
                    ev_gap = now - dirs[fw, D_NEXTSEQ_TS]
                    ev_limit = ooo_limit
                    ev_count = 1 if irtt != 0 else 0
                    ev_ref = dirs[fw, D_NEXTSEQ_FRAME]
                elif not_advanced and syn and ackf and s == 0 and conv[c, C_HS_SIMOPEN] == 1 \
                        and dirs[fw, D_SYN_PKTS] == 2:
                    pass  # simultaneous open: a side's first SYN-ACK repeats its own SYN by design (RFC 9293)
                elif not_advanced:
                    kind = K_SYN if syn else K_RETRANSMISSION
                    ev_gap = now - dirs[fw, D_NEXTSEQ_TS]
                    ev_ref = dirs[fw, D_NEXTSEQ_FRAME]
        if (aflags & A_KEEP_ALIVE) != 0:
            dirs[fw, D_KA] += 1
        if (aflags & A_ZERO_WINDOW_PROBE) != 0:
            dirs[fw, D_ZWP] += 1
        # ---- exact byte accounting: which bytes repeat, and where they were first sent
        end = s + seglen + sf
        top_before = dirs[fw, D_TOP]
        seen_before = dirs[fw, D_SEEN] == 1
        repeated = _seen_bytes(dirs, holes, fw, s + (1 if syn else 0), s + (1 if syn else 0) + seglen)
        if kind != 0:
            orig = _original(dirs, records, fw, s, end)
            ev[n_ev, E_FRAME] = fr
            ev[n_ev, E_TS] = now
            ev[n_ev, E_SEQ_RAW] = sq
            ev[n_ev, E_FLAGS] = f
            ev[n_ev, E_SENDER_LO] = lo
            ev[n_ev, E_KIND] = kind
            ev[n_ev, E_CONV] = c
            ev[n_ev, E_DIR] = d
            ev[n_ev, E_SEQ] = s
            ev[n_ev, E_LEN] = seglen
            ev[n_ev, E_OVERLAP] = repeated
            ev[n_ev, E_ORIG_FRAME] = records[orig, R_FRAME] if orig >= 0 else NONE
            ev[n_ev, E_ORIG_TS] = records[orig, R_TS] if orig >= 0 else NONE
            ev[n_ev, E_COUNT] = ev_count
            ev[n_ev, E_GAP] = ev_gap
            ev[n_ev, E_LIMIT] = ev_limit
            ev[n_ev, E_REF_FRAME] = ev_ref
            ev[n_ev, E_NOTE] = (NOTE_FIN_REPEATED if fin and not syn and not rst
                                and dirs[fw, D_Z_FIN_SEQ] == ((sq + seglen) & _M32) else 0)
            ev[n_ev, E_SPUR] = 0
            ev[n_ev, E_SPUR_FRAME] = NONE
            if kind == K_RETRANSMISSION or kind == K_FAST:
                _add_pending(dirs, pend, counter, fw, ev_base + n_ev, s, end,
                             records[orig, R_TSVAL] if orig >= 0 else NONE, tv)
            n_ev += 1
            if kind == K_OUT_OF_ORDER:
                dirs[fw, D_OOO] += 1
            else:
                dirs[fw, D_RETX] += 1
                dirs[fw, D_RETX_BYTES] += repeated
        if end > s and (_seen_bytes(dirs, holes, fw, s, end) < end - s):
            _add_record(dirs, records, n_records, fw, s, end, fr, now, tv)
        _mark_seen(dirs, holes, fw, s, end)
        # ---- Wireshark bookkeeping (reference B.5)
        nxt = s + seglen + sf
        if (not nextseq_set or nxt > nextseq) and (aflags & A_ZERO_WINDOW_PROBE) == 0:
            dirs[fw, D_NEXTSEQ] = nxt
            dirs[fw, D_NEXTSEQ_SET] = 1
            dirs[fw, D_NEXTSEQ_TS] = now
            dirs[fw, D_NEXTSEQ_FRAME] = fr
        dirs[fw, D_WINDOW] = window
        dirs[fw, D_LASTACK_RAW] = ack_raw
        if ackf:
            dirs[fw, D_LASTACK] = a
            dirs[fw, D_LASTACK_SET] = 1
        else:
            dirs[fw, D_LASTACK_SET] = 0
        dirs[fw, D_LASTACK_TS] = now
        dirs[fw, D_LASTACK_FRAME] = fr
        dirs[fw, D_LASTSEGFLAGS] = aflags
        if dirs[fw, D_UREF] < s:
            dirs[fw, D_UREF] = s
        if ackf and dirs[rv, D_UREF] < a:
            dirs[rv, D_UREF] = a
        # ---- Zeek history/state, Wireshark completeness
        rexmit = (seglen > 0 and seen_before and end <= top_before and dirs[fw, D_ZSTATE] != ZS_RESET)
        track_connection(conv, dirs, history, c, d, f, sq, seglen, wn, rexmit)
    return n_ev


@njit(cache=True, nogil=True, inline="always")
def _fin_acked(dirs, row, other):
    """Direction ``row`` sent its FIN and the other side acknowledged all of it, the FIN included."""
    return (dirs[row, D_ZSTATE] == ZS_CLOSED and dirs[row, D_NEXTSEQ_SET] == 1 and dirs[other, D_LASTACK_SET] == 1
            and dirs[other, D_LASTACK] >= dirs[row, D_NEXTSEQ])


@njit(cache=True, nogil=True, inline="always")
def _records_to_keep(conv, dirs, tuple_conv, c):
    """How many sent-segment records per direction connection ``c`` needs: none once a new connection took
    its 4-tuple (no packet reaches it again), RECORD_KEEP_OVER once it is over (reset, or both FINs
    acknowledged), else the RECORD_WALK that ``_original`` may search."""
    a = 2 * c
    b = a + 1
    if tuple_conv[conv[c, C_TUPLE]] != c:
        return 0
    if (dirs[a, D_ZSTATE] == ZS_RESET or dirs[b, D_ZSTATE] == ZS_RESET
            or (_fin_acked(dirs, a, b) and _fin_acked(dirs, b, a))):
        return RECORD_KEEP_OVER
    return RECORD_WALK


@njit(cache=True, nogil=True, _nrt=False)
def records_to_keep(conv, dirs, tuple_conv, cs, out):
    """``_records_to_keep`` of each connection of ``cs``, into ``out``. The engine moves a connection out
    of memory only when this is below RECORD_WALK (it is over), with that many records (``spill.py``)."""
    for i in range(len(cs)):
        out[i] = _records_to_keep(conv, dirs, tuple_conv, cs[i])


@njit(cache=True, nogil=True, _nrt=False)
def compact_records(conv, n_conv, dirs, tuple_conv, records, n_records, evicted, keep, moved):
    """Drop the sent-segment records no later packet can reach, in place; return how many were kept.

    ``_original`` only walks the last RECORD_WALK records of a direction, so that many are kept while a
    connection is open (a run with compactions gives the same rows as one without). A connection that is
    over (both FINs acknowledged, or reset) keeps RECORD_KEEP_OVER per direction, enough to find the
    original of a late repeat of its last segments; one replaced by a new connection on the same 4-tuple
    (port reuse) gets no packet again and keeps none. Kept records stay in their order, so each moves to
    a lower or equal index and the pool is rewritten in one forward pass. ``keep`` and ``moved`` are work
    arrays of at least ``n_records[0]`` elements (bool and int64)."""
    n = n_records[0]
    keep[:n] = False
    for c in range(n_conv):
        if evicted[c] != 0:  # its records are in the spill file; its rows may be unmapped pages
            continue
        walk = _records_to_keep(conv, dirs, tuple_conv, c)
        for row in (2 * c, 2 * c + 1):
            r = dirs[row, D_REC_HEAD]
            k = 0
            while r >= 0 and k < walk:
                keep[r] = True
                r = records[r, R_PREV]
                k += 1
            if walk == 0:
                dirs[row, D_REC_HEAD] = NONE
    # moved[r]: the new index of kept record r
    m = 0
    for r in range(n):
        if keep[r]:
            moved[r] = m
            p = records[r, R_PREV]
            for k in range(records.shape[1]):
                records[m, k] = records[r, k]
            records[m, R_PREV] = moved[p] if p >= 0 and keep[p] else NONE
            m += 1
    for row in range(2 * n_conv):
        if evicted[row >> 1] != 0:
            continue
        r = dirs[row, D_REC_HEAD]
        if r >= 0:
            dirs[row, D_REC_HEAD] = moved[r]  # a head is always kept unless its chain was dropped above
    n_records[0] = m
    return m
