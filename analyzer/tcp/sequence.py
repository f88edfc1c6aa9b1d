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
   copy becomes ``spurious_retransmission``. Copies are found in the direction's recent sent-segment
   records, and hole fills are remembered longer (``fills``), for originals delayed past many segments.
2. A range never captured, below the highest byte: either a late original (network reordering: sent
   before the highest segment, so an older IP ID / TSval) or a retransmission whose original was lost
   before the capture point (a newer one; ``original_captured`` false). Sent after any segment above it
   (``_copies``), it is a resend even when the highest segment's IP ID / TSval cannot order them: new bytes
   are sent in order, so the original came before those. Without IP IDs or timestamps, timing decides:
   within the RTT estimate of the lowest segment above it captured (sent next after its original), it is
   reordering, as RACK (RFC 8985) calls nothing lost sooner; the reason says it was ambiguous. The highest
   byte sent includes a pure ACK's sequence number (the sender's next byte), so a resend of data the
   capture never saw is recognised even when nothing after it was captured; and when the sender's IP IDs
   show packets missing while the peer gave it nothing to answer (or only too recently for it to have
   arrived: ``_answer_floor``), an in-order segment sent a timeout
   later is the resend of what those packets carried (a tail loss), unless the packet before the skip
   may have taken the IDs itself (a segmentation-offload packet, captured on the sending host).
3. A retransmission is ``spurious`` when the receiver had every byte (acknowledged or SACKed before it),
   else ``fast_retransmission`` when the receiver was signalling the loss (2+ duplicate ACKs for it, a SACK
   above it, or a partial ACK during recovery) and it followed that signal promptly (before a timeout
   could fire), or later but as a SACK hole above the cumulative ACK (a timeout resends the ACK point
   first), outside the loss recovery after a timeout, else ``retransmission`` (a timeout, or resent in
   the recovery after one). Later evidence shows a retransmission was not needed and is written to its
   row: a D-SACK (``_check_pending``), the TSecr of the ACK that moves the receiver's left edge
   (``_eifel``), or, without SACK, a repeated ACK with nothing from the sender since that it could answer
   (``_dupack_evidence``; not when a later copy of bytes it had acknowledged explains that ACK). Without
   SACK, a resend above the receiver's ACK is ``spurious`` too when its duplicate ACKs, one per segment
   it got above a hole (Linux counts them so: tcp_add_reno_sack), number all the segments captured
   above that ACK (``reno_held``): it held them all.
4. The same packet captured twice (``_duplicate_of``): identical header fields and IP ID, or without an ID,
   what no TCP stack would send again that soon; genuine duplicate-ACK trains are told apart.

Rows are written for every frame either rule flags (``EVENT.kind`` ours, ``EVENT.ws_kind`` Wireshark's).

All state lives in the record arrays of ``state.FlowState`` (``cv`` is a connection's record, ``d`` the
packet's direction, ``r`` the reverse one, as Wireshark's ``tcpd->fwd`` and ``tcpd->rev``); a batch
boundary changes nothing, so a batched run equals a whole-file run.

Compiled with ``numba.njit(cache=True, nogil=True, _nrt=False)`` (no reference counting: nothing
allocates). Every helper is a compiled function of its own, not inlined by numba (``inline="always"``
doubled the cold compile time of ``analyze_batch``, to 19 s, for no measurable speed); LLVM inlines
what pays. Numba checks only this file's timestamp for its cache:
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
from .state import (FILL_END, FILL_EV, FILL_FRAME, FILL_IPID, FILL_START, FILL_TS, FILL_TSVAL, FILLS, HOLES,
                    NEW_CONVERSATION, RECENT, NEW_DIRECTION, NEW_EVENT, NONE, NOTE_FIN_REPEATED, PEND_SLOTS,
                    RECORD_KEEP_OVER, RECORD_WALK, Evidence, Finding, Kind)
from .wireshark import (TCP_A_ACK_LOST_PACKET, TCP_A_DUPLICATE_ACK, TCP_A_FAST_RETRANSMISSION, TCP_A_KEEP_ALIVE,
                        TCP_A_KEEP_ALIVE_ACK, TCP_A_LOST_PACKET, TCP_A_OUT_OF_ORDER, TCP_A_RETRANSMISSION,
                        TCP_A_SPURIOUS_RETRANSMISSION, TCP_A_WINDOW_FULL, TCP_A_WINDOW_UPDATE, TCP_A_ZERO_WINDOW,
                        TCP_A_ZERO_WINDOW_PROBE, TCP_A_ZERO_WINDOW_PROBE_ACK)
from .wireshark import analyze as wireshark_analyze
from .wireshark import free_unacked

DUPLICATE_GAP_NS = 5_000_000  # the same packet captured twice: at most 5 ms apart
FAST_MIN_NS = 20_000_000  # a fast retransmission follows the loss signal within 2 RTT, and at least this
FAST_UNKNOWN_RTT_NS = 200_000_000  # ... or, without an RTT estimate, within Linux's minimum RTO
REORDER_UNKNOWN_RTT_NS = 3_000_000  # without IP ID or TSval evidence nor an RTT: Wireshark's 3 ms
IPID_STEP_MAX = 1024  # an IP ID this far above the highest is "the next packets" (per-host counters too)
IPID_GAP_MAX = 8  # at most this many packets of a direction missing between two captured ones (a tail loss)
IPID_COUNTED = 16  # steps of one needed before a skipped IP ID is taken as a missing packet of the connection
# no stack resends a segment within 1 ms of sending it unless the receiver asked (Linux's RTO and tail-loss
# probe wait at least 200 ms and 2 jiffies, RFC 6298 and RFC 8985 more): so the same data segment captured
# twice, without an IP ID to compare and with a peer packet in between, is a capture copy when at most this
# far apart, and an in-order segment this soon after IP IDs skipped is no resend of what they carried
UNASKED_RESEND_MIN_NS = 1_000_000
DUP_NO_ID_NS = UNASKED_RESEND_MIN_NS
DUP_RECORDS = 8  # records searched for a copy that is not the direction's previous packet
GAP_MAX = 1 << 30  # an ACK this far beyond the last one accounted is no evidence of missed bytes (RFC 7323's
# largest window); past that it is garbage

# how the receiver signalled a loss (``DIRECTION.signal_how`` bits)
SIG_DUPACKS, SIG_SACK, SIG_PARTIAL = 1, 2, 4

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
EV_IPID_GAP = 16384  # at the highest byte, but IP IDs show packets of the sender missing: their resend
EV_RTO_RECOVERY = 32768  # resent in the loss recovery after a timeout, whatever the receiver signalled
EV_COPY_GONE = 65536  # its bytes were captured before, in a copy no longer kept: ordered against the highest sent
EV_ABOVE = 131072  # never captured before, and sent after a copy of bytes above it: no original (those came later)
EV_SACK_HOLE = 262144  # a SACK hole above the cumulative ACK resent late, not by a timeout (that resends the ACK point)
EV_RENO_HELD = 524288  # without SACK, the receiver's duplicate ACKs count every segment captured above its ACK: held

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


@njit(cache=True, nogil=True, _nrt=False)
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


@njit(cache=True, nogil=True, _nrt=False)
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
    for k in range(d.hole_n):
        x = max(a, holes[k, 0])
        y = min(b, holes[k, 1])
        if y > x:
            n -= y - x
    return n


@njit(cache=True, nogil=True, _nrt=False)
def _free_hole(d):
    """A slot of ``d.holes`` for a new gap: an empty one in use, else the next unused, else -1."""
    holes = d.holes
    for k in range(d.hole_n):
        if holes[k, 1] <= holes[k, 0]:
            return k
    if d.hole_n < HOLES:
        d.hole_n += 1
        return d.hole_n - 1
    return -1


@njit(cache=True, nogil=True, _nrt=False)
def _add_hole(d, lo, hi):
    """Remember the gap [lo, hi); with every slot taken, in place of the lowest (the oldest, least likely to
    be filled: its bytes then count as seen)."""
    holes = d.holes
    slot = _free_hole(d)
    if slot < 0:
        slot = 0
        for k in range(HOLES):
            if holes[k, 0] < holes[slot, 0]:
                slot = k
    holes[slot, 0] = lo
    holes[slot, 1] = hi


@njit(cache=True, nogil=True, _nrt=False)
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
    for k in range(d.hole_n):
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
            j = _free_hole(d)
            if j >= 0:
                holes[j, 0] = e
                holes[j, 1] = hh
    while d.hole_n > 0 and holes[d.hole_n - 1, 1] <= holes[d.hole_n - 1, 0]:
        d.hole_n -= 1
    if s > d.top:
        _add_hole(d, d.top, s)
    if s < d.lo:
        if e < d.lo:
            _add_hole(d, e, d.lo)
        d.lo = s
    if e > d.top:
        d.top = e
        d.top_frame = frame
        d.top_ts = ts


@njit(cache=True, nogil=True, _nrt=False)
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


@njit(cache=True, nogil=True, _nrt=False)
def _copies(d, records, s, e):
    """(oldest, newest) indexes of the recent transmissions of direction ``d`` overlapping [s, e), and the one
    lowest above it (starting at or after ``e``: sent after the first transmission of any byte below ``e``,
    as a sender sends new bytes in order); -1 where none."""
    oldest = -1
    newest = -1
    above = -1
    i = d.rec_head
    steps = 0
    while i >= 0 and steps < RECORD_WALK:
        if records[i].start < e and records[i].end > s:
            oldest = i
            if newest < 0:
                newest = i
        elif records[i].start >= e and (above < 0 or records[i].start <= records[above].start):
            above = i
        i = records[i].prev
        steps += 1
    return oldest, newest, above


@njit(cache=True, nogil=True, _nrt=False)
def _fill_of(d, s, e):
    """The slot of direction ``d``'s newest remembered hole fill overlapping [s, e), or -1."""
    best = np.int64(-1)
    for k in range(FILLS):
        f = d.fills[k]
        if (f[FILL_FRAME] != NONE and f[FILL_START] < e and f[FILL_END] > s
                and (best < 0 or f[FILL_FRAME] > d.fills[best, FILL_FRAME])):
            best = k
    return best


@njit(cache=True, nogil=True, _nrt=False)
def _add_fill(d, s, e, frame, ts, ipid, tsval, ev_index):
    """Remember a segment that filled a gap below the top (a resend, or a late original) beyond the record
    walk: if another copy of its bytes comes much later, the two can still be ordered."""
    k = d.fills_next
    d.fills_next = (k + 1) % FILLS
    f = d.fills[k]
    f[FILL_START] = s
    f[FILL_END] = e
    f[FILL_FRAME] = frame
    f[FILL_TS] = ts
    f[FILL_IPID] = ipid
    f[FILL_TSVAL] = tsval
    f[FILL_EV] = ev_index


@njit(cache=True, nogil=True, _nrt=False)
def _segments_from(d, records, lo, hi):
    """How many of direction ``d``'s recorded segments start in [lo, hi), among the last RECORD_WALK;
    unbounded (2**62) when the walk ends on one that does (there may be more)."""
    n = 0
    i = d.rec_head
    steps = 0
    last = False
    while i >= 0 and steps < RECORD_WALK:
        last = lo <= records[i].start < hi
        if last:
            n += 1
        i = records[i].prev
        steps += 1
    return 1 << 62 if last and steps == RECORD_WALK else n


@njit(cache=True, nogil=True, _nrt=False)
def _segments_above(d, records, a):
    """How many of direction ``d``'s recorded segments end above ``a`` (each may draw a duplicate ACK from
    the receiver), among the last RECORD_WALK; unbounded (2**62) when all of those do."""
    n = 0
    i = d.rec_head
    steps = 0
    while i >= 0 and steps < RECORD_WALK:
        if records[i].end > a:
            n += 1
        i = records[i].prev
        steps += 1
    return 1 << 62 if n == RECORD_WALK else n


@njit(cache=True, nogil=True, _nrt=False)
def _header_hash(seq, ack, plen, flags, win, ipid, tsval, tsecr, sack):
    """One number for the header fields a capture copy repeats exactly (64-bit wrapping polynomial)."""
    h = seq
    for v in (ack, plen, flags, win, ipid, tsval, tsecr, sack):
        h = h * 0x100000001B3 + v
    return h


@njit(cache=True, nogil=True, _nrt=False)
def _duplicate_of(d, r, records, ts, seq, ack, plen, flags, win, ipid, tsval, tsecr, sack, h):
    """The same packet captured twice: (frame, time, EV_* bits) of the first copy, or NONE.

    The copy is direction ``d``'s previous packet, identical (seq, ack, length, flags, window, TSval,
    TSecr, first SACK block) and at most 5 ms earlier, with the same non-zero IPv4 ID; without a usable ID
    (IPv6, ID 0), no packet of the opposite direction ``r`` may lie in between (whatever a stack sends
    again, a retransmitted SYN-ACK or a genuine duplicate ACK, answers a packet of the peer), unless it
    carries data and follows within 1 ms with no loss signal from the receiver in between (no TCP resends
    data that soon unasked). A pure ACK repeated without a peer packet in between may still be a genuine
    duplicate ACK (a capture next to the data sender sees a train of them one after another): see below.
    Or the copy is one of the last few data
    segments recorded (the two copies came interleaved with other packets): same range, flags, TSval and
    IP ID, the same limits. Or, when it differs from the previous packet, it repeats one of the direction's
    last RECENT packets exactly, at most 5 ms later: no stack sends a packet identical to one before its
    last (ACKs only grow; a later duplicate ACK carries the latest window and SACK blocks)."""
    same_prev = (d.prev_seq == seq and d.prev_ack == ack and d.prev_len == plen and d.prev_flags == flags
                 and d.prev_win == win and d.prev_tsval == tsval and d.prev_tsecr == tsecr and d.prev_sack == sack
                 and d.prev_ipid == ipid)
    if d.prev_frame != NONE and 0 <= ts - d.prev_ts <= DUPLICATE_GAP_NS and same_prev:
        if ipid > 0:
            return d.prev_frame, d.prev_ts, 0
        pure_ack = plen == 0 and (flags & (TH_SYN | TH_FIN | TH_RST)) == 0 and (flags & TH_ACK) != 0
        if pure_ack and sack != NONE:
            # the same SACK blocks again: a duplicate ACK answering new out-of-order data would report it in
            # its first block, and one answering a duplicate segment would carry a D-SACK (RFC 2018, 2883)
            return d.prev_frame, d.prev_ts, 0
        quiet = r.prev_frame == NONE or r.prev_frame < d.prev_frame
        if pure_ack and not quiet and r.prev_len > 0 and r.prev_seq == ack:
            quiet = True  # the peer's packet in between starts at this ACK: it would move it, not repeat it
        if quiet:
            if not pure_ack or d.acked == NONE:
                return d.prev_frame, d.prev_ts, 0
            # a pure ACK repeated: a capture copy, unless a genuine duplicate ACK: a third identical one (a
            # capture copies a packet once), one more of a running train that the peer's segments above it
            # still ask for, or one more answer to the peer's repeated SYN-ACK (RFC 9293 3.10.7.4)
            if not (d.dup_copies >= 1
                    or (d.dupacks >= 1 and d.dupacks + 1 <= _segments_above(r, records, d.acked))
                    or (d.acked == 1 and d.dupacks + 1 < r.syn_pkts)):
                return d.prev_frame, d.prev_ts, 0
        if plen > 0 and ts - d.prev_ts <= DUP_NO_ID_NS and (r.signal_ts == NONE or r.signal_ts < d.prev_ts):
            return d.prev_frame, d.prev_ts, EV_TIMING
    elif not same_prev:
        for k in range(RECENT):
            if (d.recent[k, 0] == h and d.recent[k, 1] != NONE and d.recent[k, 1] != d.prev_frame
                    and 0 <= ts - d.recent[k, 2] <= DUPLICATE_GAP_NS):
                return d.recent[k, 1], d.recent[k, 2], 0
    if plen > 0 and d.base_set == 1 and d.seen == 1:
        s = _unwrap(d, seq)
        e = s + plen + (1 if (flags & (TH_SYN | TH_FIN)) != 0 else 0)
        i = d.rec_head
        steps = 0
        while i >= 0 and steps < DUP_RECORDS:
            rec = records[i]
            if ts - rec.ts > DUPLICATE_GAP_NS:
                break
            if (rec.start == s and rec.end == e and rec.flags == flags and rec.tsval == tsval and rec.ipid == ipid
                    and rec.ts <= ts):
                if ipid > 0:
                    return rec.frame, rec.ts, 0
                if ts - rec.ts <= DUP_NO_ID_NS and (r.signal_ts == NONE or r.signal_ts < rec.ts):
                    return rec.frame, rec.ts, EV_TIMING
                break
            i = rec.prev
            steps += 1
    return NONE, NONE, 0


@njit(cache=True, nogil=True, _nrt=False)
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


@njit(cache=True, nogil=True, _nrt=False)
def _note_send_order(d, ipid, tsval, before_ipid, before_len, lost):
    """Follow the sender's IP ID and TSval counters (``ipid_max``, ``tsval_max``). An IP ID a little above
    the highest is a step of a counter; a little below, a packet sent earlier and delayed (which says nothing
    against the counter); anything else (zero, repeated, far off) counts against it. ``before_ipid`` and
    ``before_len`` are the sender's previous packet's IP ID and payload: one step up from it, it was a single
    segment (``one_seg``). ``lost``: the capture shows packets of the sender lost before this one (bytes
    missing below it, or a tail loss), which a bigger step of a per-connection counter counts."""
    if ipid > 0:
        if d.ipid_max == NONE:
            d.ipid_max = ipid
        else:
            step = (ipid - d.ipid_max) & 0xFFFF
            if 0 < step <= IPID_STEP_MAX:
                d.ipid_steps += 1
                if step == 1:
                    d.ipid_ones += 1
                    if before_ipid == d.ipid_max and before_len > d.one_seg:
                        d.one_seg = before_len
                elif lost and step <= IPID_GAP_MAX:
                    d.ipid_lost += 1
                d.ipid_max = ipid
            elif step < 0x10000 - IPID_STEP_MAX:
                d.ipid_other += 1
                if 0 < step < 0x8000:
                    d.ipid_max = ipid
    elif ipid == 0:
        d.ipid_other += 1
    if tsval >= 0 and (d.tsval_max == NONE or _order(tsval, d.tsval_max, np.int64(32)) > 0):
        d.tsval_max = tsval


@njit(cache=True, nogil=True, _nrt=False)
def _ipid_trusted(d):
    """The sender's IP IDs count its packets (Linux per connection, Windows per host): mostly small steps up."""
    return d.ipid_steps >= 2 and d.ipid_other * 4 <= d.ipid_steps


@njit(cache=True, nogil=True, _nrt=False)
def _ipid_per_connection(d):
    """The sender's IP IDs count this connection's packets one by one (Linux's per-socket counter), so a
    skipped value is a packet of this connection the capture did not see: at least IPID_COUNTED steps of
    exactly one, and almost no larger step but those the capture shows packets lost for (a per-host counter,
    as Windows keeps, skips values for the host's other connections all the time)."""
    return d.ipid_ones >= IPID_COUNTED and (d.ipid_steps - d.ipid_ones - d.ipid_lost) * 50 <= d.ipid_ones


@njit(cache=True, nogil=True, _nrt=False)
def _note_ack(d, r, a, seglen, flags, window_same, now, frame, nsack, sack_le, sack_re, i, reno, records):
    """This packet of direction ``d`` as the receiver's word about direction ``r``'s data: cumulative ACK
    ``a`` (unwrapped in ``r``'s space), duplicate ACKs (RFC 5681: no data, no SYN/FIN/RST, same window,
    same ACK), SACK blocks (raw edges ``sack_le[k, i]``/``sack_re[k, i]``, D-SACK blocks left out) and the
    loss signals. ``reno``: the connection has no SACK, so each duplicate ACK says the receiver got one more
    segment above its ACK (``reno_held``, as Linux counts them without SACK: tcp_add_reno_sack); an ACK that
    moves up over k segments took all but the first (the hole it filled) out of those held."""
    new_ack = d.acked == NONE or a > d.acked
    if new_ack:
        if reno and d.reno_held > 0:
            k = _segments_from(r, records, d.acked, a) if d.acked != NONE else np.int64(1 << 62)
            d.reno_held = max(np.int64(0), d.reno_held - (k - 1)) if k < (1 << 62) else np.int64(0)
        d.acked = a
        d.dupacks = 0
        d.dupack_ts = NONE
        d.signal_ts = NONE
        d.signal_how = 0
        d.sacked_hi = NONE
        if r.rto_recovery != NONE and a >= r.rto_recovery:
            r.rto_recovery = NONE  # everything outstanding at the timeout is acknowledged: the loss recovery is over
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
        if reno and nsack == 0:
            d.reno_held = min(d.reno_held + 1, _segments_from(r, records, a + 1, np.int64(1 << 62)))
        if d.dupacks == 2:
            if d.signal_ts == NONE:
                d.signal_ts = now
                d.signal_frame = frame
            d.signal_how |= SIG_DUPACKS
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
        d.signal_how |= SIG_SACK


@njit(cache=True, nogil=True, _nrt=False)
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
    d.hole_n = 0  # (slots past hole_n are never read: each is written when taken)
    d.rec_head = NONE
    for k in range(FILLS):
        d.fills[k, FILL_FRAME] = NONE
    d.recovery = NONE
    d.rto_recovery = NONE
    d.wait_head = NONE  # its waiting resends belong to the old sequence space
    d.h_gap_to = NONE
    r.acked = NONE
    r.dupacks = 0
    r.signal_ts = NONE
    r.signal_how = 0
    r.sacks_n = 0
    r.sacked_hi = NONE


@njit(cache=True, nogil=True, _nrt=False)
def _refine(events, ev_index, how, frame, x, y, z):
    """Later evidence that the retransmission of event row ``ev_index`` (global, possibly of an earlier
    batch) was not needed, written to that row."""
    e = events[ev_index]
    e.spur = how
    e.spur_frame = frame
    e.spur_a = x
    e.spur_b = y
    e.spur_c = z


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
    slot.ev = NONE
    d.pend_live -= 1
    ct.pending -= 1
    if d.pend_live == 0:
        pend[p, 0].start = ct.pend_free
        ct.pend_free = p
        d.pend_row = NONE


@njit(cache=True, nogil=True, _nrt=False)
def _add_pending(d, pend, ct, ev_index, s, e):
    """Keep a retransmission [s, e) of direction ``d`` until the receiver shows whether it was needed."""
    p = _pend_row(d, pend, ct)
    k = np.int64(0)
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
    d.pend_live += 1
    ct.pending += 1


@njit(cache=True, nogil=True, _nrt=False)
def _check_pending(r, pend, events, ct, frame, a, nsack, le0, re0, le1, re1):
    """An ACK from the receiver of direction ``r`` (cumulative ACK ``a``, unwrapped; raw edges of its first
    two SACK blocks) against the retransmissions of ``r`` waiting for a D-SACK (RFC 2883): the first SACK
    block starts below the cumulative ACK, or lies inside the second block; the waiting retransmissions
    whose whole range it covers were received twice. (The Eifel check is ``_eifel``.)"""
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
            # the block reports every duplicate it spans (Linux extends one block over consecutive ones,
            # tcp_dsack_extend): each waiting retransmission inside it was received twice, the latest one
            # of each range (an earlier resend of the same bytes may be the copy that arrived first)
            for k in range(PEND_SLOTS):
                slot = pend[p, k]
                if slot.ev == NONE or slot.start < l0 or slot.end > r0:
                    continue
                latest = True
                for j in range(PEND_SLOTS):
                    other = pend[p, j]
                    if (other.ev > slot.ev and other.start < slot.end and slot.start < other.end
                            and other.start >= l0 and other.end <= r0):
                        latest = False
                        break
                if latest:
                    _refine(events, slot.ev, Evidence.DSACK, frame, l0, r0, np.int64(0))
                    _free_slot(r, pend, ct, k)
                    if r.pend_live == 0:
                        break


@njit(cache=True, nogil=True, _nrt=False)
def _eifel(r, events, frame, edge, a, tsecr):
    """An ACK moved the receiver's left edge from ``edge`` to ``a`` (unwrapped, in ``r``'s space) echoing
    ``tsecr``: the Eifel check (RFC 3522) for direction ``r``'s retransmissions waiting for their first
    covering ACK (the rows linked from ``r.wait_head``); those it covers stop waiting.

    The TSecr is the TSval of the segment that moved the edge, which the receiver answers at once when it
    fills a gap (RFC 7323 4.3, RFC 5681 4.2). If that segment is a waiting resend, it arrived, and every
    resend captured after it and sent after it (newer TSval) that this ACK covers arrived after it, so
    after the ACK left: it brought nothing new. If no waiting resend at the edge has that TSval but the
    first one captured there is newer than the echo, the ACK left before that resend arrived (or it never
    did): an earlier copy filled the edge, and that resend was not needed; of the resends after it nothing
    follows, as it may have been lost."""
    filler = NONE
    first = NONE
    i = r.wait_head
    while i != NONE:  # newest first
        e = events[i]
        end = e.seq + e.len + (1 if (e.flags & (TH_SYN | TH_FIN)) != 0 else 0)
        if e.seq <= edge < end:
            if filler == NONE and e.tsv == tsecr:
                filler = i
            first = i
        i = e.wait_prev
    anchor = NONE
    if tsecr > 0:
        if filler != NONE:
            anchor = filler
        elif first != NONE and events[first].tsv != tsecr and _serial_le(tsecr, events[first].tsv):
            anchor = first
    prev = NONE  # relink the rows still waiting (not covered), newest first
    i = r.wait_head
    r.wait_head = NONE
    while i != NONE:
        e = events[i]
        nxt = e.wait_prev
        end = e.seq + e.len + (1 if (e.flags & (TH_SYN | TH_FIN)) != 0 else 0)
        if end <= a:
            e.wait_prev = NONE
            if anchor != NONE and e.spur == 0 and e.tsv != tsecr and _serial_le(tsecr, e.tsv) and (
                    i == anchor if anchor == first and filler == NONE else i > anchor):
                _refine(events, i, Evidence.EIFEL, frame, tsecr, e.tsv,
                        e.ref_tsv if (e.why & EV_SEEN) != 0 else NONE)
        else:
            if prev == NONE:
                r.wait_head = i
            else:
                events[prev].wait_prev = i
            prev = i
            e.wait_prev = NONE
        i = nxt


@njit(cache=True, nogil=True, _nrt=False)
def _dupack_evidence(r, pend, events, ct, frame, a):
    """The receiver of direction ``r`` repeated its ACK ``a`` unprompted (``analyze_batch`` checks when): it
    answered a copy of bytes it had: the latest waiting retransmission at or below ``a`` was not needed;
    unless a segment captured later had been acknowledged in full before it came (``r.known_dup``), a copy
    that explains the repeated ACK."""
    p = r.pend_row
    best = np.int64(-1)
    for k in range(PEND_SLOTS):
        slot = pend[p, k]
        if slot.ev != NONE and slot.end <= a and (best < 0 or slot.ev > pend[p, best].ev):
            best = k
    if best >= 0 and pend[p, best].ev > r.known_dup:
        _refine(events, pend[p, best].ev, Evidence.DUPACK, frame, a, np.int64(0), np.int64(0))
        _free_slot(r, pend, ct, best)


@njit(cache=True, nogil=True, _nrt=False)
def _sent_order(ipid, tsval, ref_ipid, ref_tsval, ipid_ok):
    """Whether a packet was sent after (1) or before (-1) a reference, by IP ID (when the sender's IP IDs
    are trusted) then TSval; 0 when neither tells. Returns (order, EV_* bits)."""
    if ipid_ok and ipid > 0 and ref_ipid > 0:
        o = _order(ipid, ref_ipid, np.int64(16))
        if o > 0:
            return 1, EV_IPID_LATER
        if o < 0:
            return -1, EV_IPID_EARLIER
    if tsval >= 0 and ref_tsval >= 0:
        o = _order(tsval, ref_tsval, np.int64(32))
        if o > 0:
            return 1, EV_TSVAL_LATER
        if o < 0:
            return -1, EV_TSVAL_EARLIER
    return 0, 0


@njit(cache=True, nogil=True, _nrt=False)
def _trigger(cv, d, r, s, end, now, records, held):
    """Why a needed retransmission [s, end) of direction ``d`` was sent, from the receiver ``r``'s signals:
    (kind, EV_* bits, dup ACK count, signal frame, time since the signal, the limit it was held to).
    ``held``: every byte of it was captured before (its original may be one the receiver holds)."""
    if r.acked != NONE and r.acked >= end:
        return Kind.SPURIOUS_RETRANSMISSION, EV_ACKED, 0, NONE, 0, 0
    for k in range(r.sacks_n):
        if r.sacks[k, 0] <= s and end <= r.sacks[k, 1]:
            return Kind.SPURIOUS_RETRANSMISSION, EV_SACKED, 0, NONE, 0, 0
    if (held and r.reno_held > 0 and r.acked != NONE and s > r.acked
            and _segments_from(d, records, r.acked + 1, np.int64(1 << 62)) == r.reno_held):
        # without SACK, the receiver drew one duplicate ACK per segment captured above its ACK: it held
        # them all, this one's original (captured: ``held``) among them
        return Kind.SPURIOUS_RETRANSMISSION, EV_RENO_HELD, r.reno_held, NONE, 0, 0
    signalled = False
    bits = 0
    if r.signal_ts != NONE and r.acked != NONE and r.acked <= s:
        how = r.signal_how
        if (how & SIG_SACK) != 0 and r.sacked_hi != NONE and r.sacked_hi > s:
            signalled, bits = True, EV_SACK
        elif (how & SIG_DUPACKS) != 0 and r.acked == s:
            signalled, bits = True, EV_DUPACKS
        elif (how & SIG_PARTIAL) != 0 and r.acked == s:
            signalled, bits = True, EV_PARTIAL
    if d.rto_recovery != NONE:  # after a timeout the sender resends the rest of the window as lost (RFC 5681 5.1)
        return Kind.RETRANSMISSION, bits | EV_RTO_RECOVERY, r.dupacks, d.rto_frame, now - d.rto_ts, 0
    if not signalled:
        return Kind.RETRANSMISSION, 0, r.dupacks, NONE, 0, 0
    limit = max(2 * cv.rtt, FAST_MIN_NS) if cv.rtt > 0 else FAST_UNKNOWN_RTT_NS
    gap = now - r.signal_ts
    again = d.retx_seq == s and d.retx_ts >= r.signal_ts  # resent once already since the signal: a timeout
    if 0 <= gap < limit and not again:
        return Kind.FAST_RETRANSMISSION, bits, r.dupacks, r.signal_frame, gap, limit
    if bits == EV_SACK and s > r.acked and not again and gap >= 0:
        # a hole above the cumulative ACK: a timeout resends the first unacknowledged byte (RFC 6298 5.4), and
        # no such resend began a recovery; holes are resent one by one as the SACK scoreboard lets the sender
        # (RFC 6675 NextSeg), however long after the first signal the recovery reaches this one
        return Kind.FAST_RETRANSMISSION, bits | EV_SACK_HOLE, r.dupacks, r.signal_frame, gap, limit
    return Kind.RETRANSMISSION, bits | EV_LATE, r.dupacks, r.signal_frame, gap, limit


@njit(cache=True, nogil=True, _nrt=False)
def _finding(findings, ct, frame, ts, c, di, what, x, y):
    """One events-table row (global index ``ct.findings``; the engine keeps room for FINDINGS_PER_PACKET a packet)."""
    k = ct.findings
    ct.findings = k + 1
    f = findings[k]
    f.frame = frame
    f.ts = ts
    f.conv = c
    f.dir = di
    f.what = what
    f.a = x
    f.b = y
    f.c = 0


@njit(cache=True, nogil=True, _nrt=False)
def _findings(d, findings, ct, frame, ts, c, di, a, lost, ack_lost, window):
    """The events-table rows of Wireshark's flags ``a`` on a packet of direction ``d``, counted per direction."""
    NO = np.int64(0)  # (not the constant 0: numba would compile _finding once more for its literal type)
    if a & TCP_A_DUPLICATE_ACK:
        d.h_dupacks += 1
        _finding(findings, ct, frame, ts, c, di, Finding.DUPLICATE_ACK, d.ws_dupacknum, d.ws_dupack_frame)
    if a & TCP_A_ZERO_WINDOW:
        d.h_zero_windows += 1
        _finding(findings, ct, frame, ts, c, di, Finding.ZERO_WINDOW, NO, NO)
    if a & TCP_A_ZERO_WINDOW_PROBE:
        _finding(findings, ct, frame, ts, c, di, Finding.ZERO_WINDOW_PROBE, NO, NO)
    if a & TCP_A_ZERO_WINDOW_PROBE_ACK:
        _finding(findings, ct, frame, ts, c, di, Finding.ZERO_WINDOW_PROBE_ACK, NO, NO)
    if a & TCP_A_WINDOW_FULL:
        d.h_window_full += 1
        _finding(findings, ct, frame, ts, c, di, Finding.WINDOW_FULL, NO, NO)
    if a & TCP_A_WINDOW_UPDATE:
        _finding(findings, ct, frame, ts, c, di, Finding.WINDOW_UPDATE, window, NO)
    if a & TCP_A_KEEP_ALIVE:
        _finding(findings, ct, frame, ts, c, di, Finding.KEEP_ALIVE, NO, NO)
    if a & TCP_A_KEEP_ALIVE_ACK:
        _finding(findings, ct, frame, ts, c, di, Finding.KEEP_ALIVE_ACK, NO, NO)
    if a & TCP_A_LOST_PACKET:
        d.h_lost += 1
        _finding(findings, ct, frame, ts, c, di, Finding.LOST_SEGMENT, lost, NO)
    if a & TCP_A_ACK_LOST_PACKET:
        d.h_ack_lost += 1
        _finding(findings, ct, frame, ts, c, di, Finding.ACK_LOST_SEGMENT, ack_lost, NO)


@njit(cache=True, nogil=True, _nrt=False)
def _p2(q, qn, n, x):
    """Add sample ``x`` (the ``n``-th, 1-based) to a P-square median estimator (Jain and Chlamtac, CACM
    1985): five marker heights ``q`` and positions ``qn``; the first five samples are kept sorted."""
    if n <= 5:
        k = n - 1
        while k > 0 and q[k - 1] > x:
            q[k] = q[k - 1]
            k -= 1
        q[k] = x
        if n == 5:
            for j in range(5):
                qn[j] = j + 1.0
        return
    if x < q[0]:
        q[0] = x
        k = 0
    elif x >= q[4]:
        q[4] = max(q[4], x)
        k = 3
    else:
        k = 0
        while k < 3 and x >= q[k + 1]:
            k += 1
    for j in range(k + 1, 5):
        qn[j] += 1.0
    for j in range(1, 4):  # desired positions of the quartile markers for the median: 1, (n+1)/4 ... n
        want = 1.0 + (n - 1) * (0.25 * j)
        dd = want - qn[j]
        if (dd >= 1.0 and qn[j + 1] - qn[j] > 1.0) or (dd <= -1.0 and qn[j - 1] - qn[j] < -1.0):
            s = 1.0 if dd > 0 else -1.0
            hp = q[j] + s / (qn[j + 1] - qn[j - 1]) * ((qn[j] - qn[j - 1] + s) * (q[j + 1] - q[j]) / (qn[j + 1] - qn[j])
                                                        + (qn[j + 1] - qn[j] - s) * (q[j] - q[j - 1]) / (qn[j] - qn[j - 1]))
            if not (q[j - 1] < hp < q[j + 1]):  # the parabola overshoots: linear instead
                k2 = j + 1 if s > 0 else j - 1
                hp = q[j] + s * (q[k2] - q[j]) / (qn[k2] - qn[j])
            q[j] = hp
            qn[j] += s


@njit(cache=True, nogil=True, _nrt=False)
def _rtt_sample(d, rtt, karn):
    """An RTT sample (Wireshark's ack_rtt) of direction ``d``'s data. The Karn estimator is kept apart only
    from the first sample of a resent segment on (until then it would be the same as the other)."""
    if karn == 0 and d.karn_apart == 0:
        d.karn_apart = 1
        for j in range(5):
            d.karn_q[j] = d.rtt_q[j]
            d.karn_qn[j] = d.rtt_qn[j]
    d.rtt_n += 1
    if d.rtt_min == NONE or rtt < d.rtt_min:
        d.rtt_min = rtt
    if d.rtt_max == NONE or rtt > d.rtt_max:
        d.rtt_max = rtt
    _p2(d.rtt_q, d.rtt_qn, d.rtt_n, float(rtt))
    if karn == 1:
        d.karn_n += 1
        if d.karn_apart == 1:
            _p2(d.karn_q, d.karn_qn, d.karn_n, float(rtt))


@njit(cache=True, nogil=True, _nrt=False)
def _answer_floor(cv, r, di):
    """Less than the time from a packet of direction ``r`` passing the capture point to the other side's
    answer to it passing it (the round trip between the capture point and that side), ns: half the
    smallest such round trip measured (the handshake's part on that side, which no delayed ACK lengthens;
    the RTT samples of ``r``'s data): queues only add to it. 0 while none is known."""
    m = NONE
    if cv.syn_ts != NONE and cv.sa_ts != NONE and cv.ack_ts != NONE:
        m = cv.ack_ts - cv.sa_ts if di == cv.client_dir else cv.sa_ts - cv.syn_ts
    if r.rtt_min > 0 and (m <= 0 or r.rtt_min < m):
        m = r.rtt_min
    return m // 2 if m > 0 else np.int64(0)


@njit(cache=True, nogil=True, _nrt=False)
def _cause(cv, d, r, c, di, lo, records, events, ev_base, n_ev, fr, now, s, end, seglen, f, ip_id, tv, top_before,
           seen_before, probe, ipid_ok, before_frame, before_ts, before_acked, before_len, why, quiet, peer_top):
    """The cause of a segment of direction ``d`` (module docstring, 1-3): (kind, EV_* bits, original
    captured, bytes seen before, bytes sent before, first transmission's frame and time, count, the gap
    and limit the rule measured, evidence frame, the IP ID and TSval compared with, event rows written).
    A late original also labels its earlier copy (that row written here, or refined). ``quiet``: the peer
    sent nothing since the sender's previous packet that asks for an answer, or only too recently for the
    sender to have received it; ``peer_top``: the peer's highest byte before those packets."""
    syn = (f & TH_SYN) != 0
    fin = (f & TH_FIN) != 0
    rst = (f & TH_RST) != 0
    ackf = (f & TH_ACK) != 0
    kind = 0
    captured = 1
    overlap = 0
    resent = 0
    o_frame = NONE  # the first transmission of these bytes, when known
    o_ts = NONE
    count = 0
    gap = 0
    limit = 0
    ref = NONE
    ref_ipid = NONE
    ref_tsv = NONE
    if (seglen > 0 or syn or fin) and not rst and not probe and seen_before and s < top_before:
        orig, copy, above = _copies(d, records, s, end)
        # the newest copy captured before: a kept record, else a remembered hole fill
        c_frame = NONE
        c_ts = NONE
        c_ipid = NONE
        c_tsv = NONE
        c_ev = NONE
        if copy >= 0:
            c_frame = records[copy].frame
            c_ts = records[copy].ts
            c_ipid = records[copy].ipid
            c_tsv = records[copy].tsval
            c_ev = records[copy].ev
        elif not syn:
            k = _fill_of(d, s, end)
            if k >= 0:
                c_frame = d.fills[k, FILL_FRAME]
                c_ts = d.fills[k, FILL_TS]
                c_ipid = d.fills[k, FILL_IPID]
                c_tsv = d.fills[k, FILL_TSVAL]
                c_ev = d.fills[k, FILL_EV]
        if orig >= 0:
            o_frame = records[orig].frame
            o_ts = records[orig].ts
        elif c_frame != NONE:
            o_frame = c_frame
            o_ts = c_ts
        if syn:
            if ackf and s == 0 and cv.hs_simopen == 1 and d.syn_pkts == 2:
                why |= EV_SIMOPEN  # simultaneous open: a side's first SYN-ACK repeats its own SYN (RFC 9293)
            else:
                kind = Kind.SYN_RETRANSMISSION
                why |= EV_SEEN
                ref = c_frame if c_frame != NONE else d.top_frame
                gap = now - (o_ts if o_ts != NONE else d.top_ts)
        else:
            overlap = _seen_bytes(d, s, s + seglen)
            fin_again = fin and _seen_bytes(d, s + seglen, end) == 1
            below = max(0, min(s + seglen, top_before) - s)  # payload bytes sent before this one
            resent = below
            if overlap > 0 or fin_again:  # ---- a second copy of bytes captured before
                why |= EV_SEEN
                order, bits = 0, 0
                if c_frame != NONE:
                    ref_ipid = c_ipid
                    ref_tsv = c_tsv
                    order, bits = _sent_order(ip_id, tv, ref_ipid, ref_tsv, ipid_ok)
                else:  # the copy is no longer known: sent before the highest segment, it is no resend of it
                    ref_ipid = d.ipid_max
                    ref_tsv = d.tsval_max
                    order, bits = _sent_order(ip_id, tv, ref_ipid, ref_tsv, ipid_ok)
                    if order > 0:
                        order, bits = 0, 0  # sent after the highest: that says nothing about the copy
                    else:
                        bits |= EV_COPY_GONE
                if order < 0:  # sent before the copy captured first: the original, arriving late
                    kind = Kind.OUT_OF_ORDER
                    why |= bits
                    resent = 0
                    ref = c_frame if c_frame != NONE else d.top_frame
                    gap = now - (c_ts if c_frame != NONE else d.top_ts)
                    if c_ev != NONE:
                        _refine(events, c_ev, Evidence.LATE_ORIGINAL, fr, ip_id, tv, np.int64(0))
                    elif copy >= 0:  # the copy had no row (it arrived in order): it gets one now
                        rec = records[copy]
                        events[ev_base + n_ev] = NEW_EVENT[0]
                        e = events[ev_base + n_ev]
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
                    if order == 0 and c_frame != NONE:
                        why |= EV_TIMING
                    kind, tb, count, ref, gap, limit = _trigger(cv, d, r, s, end, now, records, overlap >= seglen)
                    why |= tb
                    captured = 1 if overlap >= below else 0
            else:  # ---- bytes never captured, below the highest: a late original, or an upstream loss
                ref_ipid = d.ipid_max
                ref_tsv = d.tsval_max
                order, bits = _sent_order(ip_id, tv, ref_ipid, ref_tsv, ipid_ok)
                if order <= 0 and above >= 0:  # not after the highest; but after a copy of bytes above it, no original
                    above_order, above_bits = _sent_order(ip_id, tv, records[above].ipid, records[above].tsval, ipid_ok)
                    if above_order > 0:
                        order, bits = 1, above_bits | EV_ABOVE
                        ref_ipid = records[above].ipid
                        ref_tsv = records[above].tsval
                why |= bits
                # timing: how late after the segment sent next after its original (the lowest captured above
                # it), else after the highest segment
                after_frame = records[above].frame if above >= 0 else d.top_frame
                after_ts = records[above].ts if above >= 0 else d.top_ts
                if order == 0:
                    why |= EV_TIMING
                    window = cv.rtt if cv.rtt > 0 else REORDER_UNKNOWN_RTT_NS
                    order = -1 if 0 <= now - after_ts < window else 1
                    gap = now - after_ts
                    limit = window
                if order < 0:
                    kind = Kind.OUT_OF_ORDER
                    resent = 0
                    ref = after_frame
                    if limit == 0:
                        gap = now - after_ts
                else:
                    kind, tb, count, sig, sgap, slimit = _trigger(cv, d, r, s, end, now, records, False)
                    why |= tb
                    captured = 0
                    if sig != NONE or limit == 0:
                        ref, gap, limit = sig, sgap, slimit
    elif (end > s and not syn and not rst and not probe and seen_before and s == top_before and ipid_ok
          and ip_id > 0 and d.ipid_max > 0 and before_frame != NONE):
        # ---- at the highest byte, in order; but when the sender's IP IDs show packets missing since its
        # previous captured one, which had already acknowledged all the peer's data, and the peer sent
        # nothing since that those packets could answer (``quiet``: no data, SYN, FIN or keep-alive, or only
        # so recently that the sender cannot have received it) and had acknowledged everything, the missing
        # packets carried data or a FIN, which can only be these: a resend whose
        # original was lost before the capture point (a tail loss). Unasked, such a resend comes from a
        # timer, never within UNASKED_RESEND_MIN_NS of the original; sooner, the IDs skipped for another
        # reason. And a capture on the sending host shows segmentation-offload (TSO/GSO) packets, each
        # taking one IP ID per segment it is cut into on the wire (Linux's ip_select_ident_segs), their
        # segment size not in the capture (Linux bounds it by half the peer's largest window, too): the
        # previous packet may have taken as many IDs as it holds payloads of the largest packet shown to
        # be one segment (``one_seg``); only one when it is no bigger; with no such packet yet, any number
        missing = ((ip_id - d.ipid_max) & 0xFFFF) - 1
        if before_len > 0:
            missing -= (before_len + d.one_seg - 1) // d.one_seg - 1 if d.one_seg > 0 else IPID_GAP_MAX
        if (1 <= missing < IPID_GAP_MAX and _ipid_per_connection(d)
                and quiet and (peer_top == NONE or (before_acked != NONE and before_acked >= peer_top))
                and r.acked != NONE and r.acked >= s and now - before_ts >= max(cv.rtt, UNASKED_RESEND_MIN_NS)):
            kind, tb, count, sig, sgap, slimit = _trigger(cv, d, r, s, end, now, records, False)
            why |= EV_IPID_GAP | tb
            captured = 0
            resent = seglen
            count = missing
            ref = before_frame
            ref_ipid = d.ipid_max
            gap = now - before_ts
    return kind, why, captured, overlap, resent, o_frame, o_ts, count, gap, limit, ref, ref_ipid, ref_tsv, n_ev


@njit(cache=True, nogil=True, _nrt=False)
def analyze_batch(tid, is_lo, frame, ts, clock, flags, seq, ack, win, plen, ipid, tsval, tsecr, sack_n, sack_le, sack_re,
                  mss, wscale, sackp, tfo, vlan, conv, dirs, pend, tuple_conv, tuple_last, records, counter, gone,
                  stream_out, events, ua, findings, rtt_samples, close_delay, idle_timeout, late_window):
    """Analyze packets ``start:`` of a batch in frame order; returns the number of event rows written to
    ``events`` from global index ``counter[0].events`` on (``events`` holds every row so far: later evidence
    that an earlier row's retransmission was not needed is written to it). ``sack_le``/``sack_re`` are the
    packets' four SACK blocks (4 x n, raw).

    A connection ends (``_ended``) when a packet on its 4-tuple comes more than ``close_delay`` ns after its
    last one once it is over (both FINs acknowledged, reset, or replaced on its 4-tuple: ``gone[c]`` 1), or
    more than ``idle_timeout`` ns after it in any case (``gone[c]`` 2), by the capture's clock (``clock``,
    the latest frame time so far, as between batches: a packet's own time may go back): Zeek's tcp_close_delay and
    tcp_inactivity_timeout. The engine writes its rows and frees its state, also between batches. A later
    packet on its 4-tuple opens a new connection if it is a SYN, or if the old one was only idle (a new
    connection seen from its middle, as Zeek starts one); a straggler of a connection that was over, up to
    ``late_window`` ns after its last packet (``tuple_last``, per 4-tuple), is counted (``counter[0].late``)
    under the old stream and not analyzed; later, the 4-tuple is free again and a packet opens a new one."""
    ct = counter[0]
    batch = ct.batch
    ev_base = ct.events
    n_ev = np.int64(0)
    for i in range(len(tid)):
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
        clk = clock[i]
        if c >= 0 and gone[c] == 0:
            gone[c] = _ended(conv, dirs, tuple_conv, c, clk, close_delay, idle_timeout)
        if c >= 0 and gone[c] != 0:  # ---- the 4-tuple's connection has ended
            if gone[c] == 1 and not (syn and not ackf) and clk - tuple_last[t] <= late_window:
                ct.late += 1
                stream_out[i] = c
                continue
            c = _new_conversation(conv, dirs, counter, t, lo, fr, now, np.int64(vlan[i]), np.int64(0))
            tuple_conv[t] = c
        elif c >= 0:
            d = dirs[2 * c + (0 if lo == conv[c].first_lo else 1)]
            if syn and not ackf and d.ws_base_set == 1 and sq != d.ws_base:
                c = _new_conversation(conv, dirs, counter, t, lo, fr, now, np.int64(vlan[i]), np.int64(1))
                tuple_conv[t] = c
        else:
            c = _new_conversation(conv, dirs, counter, t, lo, fr, now, np.int64(vlan[i]), np.int64(0))
            tuple_conv[t] = c
        stream_out[i] = c
        tuple_last[t] = now
        cv = conv[c]
        di = 0 if lo == cv.first_lo else 1
        d = dirs[2 * c + di]  # this packet's direction (Wireshark's tcpd->fwd)
        r = dirs[2 * c + 1 - di]  # the reverse one (tcpd->rev)
        cv.last_frame = fr
        cv.last_ts = now
        d.pkts += 1
        tse = np.int64(tsecr[i])
        hh = _header_hash(sq, ak, seglen, f, wn, ip_id, tv, tse, sack_key)
        dup_frame, dup_ts, dup_why = _duplicate_of(d, r, records, now, sq, ak, seglen, f, wn, ip_id, tv, tse, sack_key,
                                                   hh)
        dup = dup_frame != NONE
        # ---- Wireshark's analysis, on every packet (duplicates too: Wireshark sees them)
        aflags, rtt, acked_frame, bif, lost, ack_lost, karn = wireshark_analyze(
            cv, d, r, fr, now, sq, ak, seglen, f, wn, ws, ua, ct, dup, nsack, sack_le, sack_re, i)
        ws_kind = _ws_kind(aflags)
        # ---- health (issue 13): Wireshark's expert findings on this packet, its data's RTT and bytes in flight
        if aflags != 0:
            _findings(d, findings, ct, fr, now, c, 0 if lo == cv.first_lo else 1, aflags, lost, ack_lost, wn)
        if acked_frame != NONE and rtt != 0:  # (Wireshark shows no ack_rtt of 0)
            _rtt_sample(r, rtt, karn)
            if rtt_samples:
                _finding(findings, ct, fr, now, c, 0 if lo == cv.first_lo else 1, Finding.RTT_SAMPLE, rtt, acked_frame)
                findings[ct.findings - 1].c = karn
        if bif != NONE and bif > d.bif_max:
            d.bif_max = bif
        if seglen > 0 and not dup:
            if d.data_first_ts == NONE:
                d.data_first_ts = now
            d.data_last_ts = now
        if dup:  # ---- the same packet captured twice: a row of its own, no effect on our state
            d.dups += 1
            d.dup_copies += 1
            events[ev_base + n_ev] = NEW_EVENT[0]
            e = events[ev_base + n_ev]
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
            e.orig_frame = dup_frame
            e.orig_ts = dup_ts
            e.count = ip_id
            e.ipid = ip_id
            e.tsv = tv
            e.why = dup_why
            e.gap = now - dup_ts
            e.limit = DUP_NO_ID_NS if dup_why != 0 else DUPLICATE_GAP_NS
            e.ref_frame = dup_frame
            n_ev += 1
            continue
        clock_back = d.prev_frame != NONE and now < d.prev_ts
        window_same = d.prev_win == wn
        before_frame = d.prev_frame  # this direction's previous packet (for the IP ID gap below)
        before_len = d.prev_len
        before_ipid = d.prev_ipid
        before_ts = d.prev_ts
        before_acked = d.acked  # and what it acknowledged
        # the peer's packets since that one that ask for an answer (data, SYN, FIN, keep-alive): none, or the
        # first passed the capture point too recently for this packet's sender to have received it
        # (``_answer_floor``), so neither this packet nor any it sent before (missing from the capture)
        # answers them (``quiet``); ``peer_top``: the peer's highest byte before them
        quiet = d.peer_since_ts == NONE or 0 <= now - d.peer_since_ts < _answer_floor(cv, r, di)
        peer_top = r.top if d.peer_since_ts == NONE else d.peer_since_top
        d.peer_since_ts = NONE
        d.prev_frame = fr
        d.prev_ts = now
        d.dup_copies = 0
        k = d.recent_next
        d.recent_next = (k + 1) % RECENT
        d.recent[k, 0] = hh
        d.recent[k, 1] = fr
        d.recent[k, 2] = now
        d.prev_seq = sq
        d.prev_ack = ak
        d.prev_len = seglen
        d.prev_flags = f
        d.prev_win = wn
        d.prev_ipid = ip_id
        d.prev_tsval = tv
        d.prev_tsecr = tse
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
        if r.peer_since_ts == NONE and (seglen > 0 or syn or fin or (aflags & TCP_A_KEEP_ALIVE) != 0):
            r.peer_since_ts = now  # the first packet since the other side's latest that it will answer
            r.peer_since_top = d.top
        # ---- this packet as the receiver's word about the other direction's data
        if ackf:
            a = _unwrap(r, ak)
            if r.seen == 1 and not rst:  # ---- bytes the receiver acknowledges that the capture never saw
                since = r.lo if r.h_gap_to == NONE else max(r.h_gap_to, r.lo)
                if since < a <= since + GAP_MAX:
                    missed = (a - since) - _seen_bytes(r, since, a)
                    if missed > 0:
                        r.h_missed += missed
                        _finding(findings, ct, fr, now, c, di, Finding.CAPTURE_GAP, missed, a)
                    r.h_gap_to = a
            if r.pend_live > 0:  # does it show that a retransmission of the other side was unnecessary?
                _check_pending(r, pend, events, ct, fr, a, nsack, np.int64(sack_le[0, i]),
                               np.int64(sack_re[0, i]), np.int64(sack_le[1, i]), np.int64(sack_re[1, i]))
                # without SACK blocks: the receiver, which had acknowledged all the sender had sent, repeats
                # that ACK with nothing from the sender in between that asks for an answer (or only so
                # recently that it cannot have received it: ``quiet``): it answered a segment that brought
                # nothing new (RFC 5681 4.2), a second copy: a retransmission's original had arrived
                if (r.pend_live > 0 and nsack == 0 and seglen == 0 and not syn and not fin and not rst
                        and window_same and before_acked == a and r.seen == 1 and quiet and peer_top != NONE
                        and a >= peer_top):
                    _dupack_evidence(r, pend, events, ct, fr, a)
            if r.wait_head != NONE and d.acked != NONE and a > d.acked:
                _eifel(r, events, fr, d.acked, a, tse)
            _note_ack(d, r, a, seglen, f, window_same, now, fr, nsack, sack_le, sack_re, i,
                      cv.sack_c != 1 or cv.sack_s != 1, records)
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
        probe = (aflags & (TCP_A_KEEP_ALIVE | TCP_A_ZERO_WINDOW_PROBE)) != 0
        kind, why, captured, overlap, resent, o_frame, o_ts, count, gap, limit, ref, ref_ipid, ref_tsv, n_ev = _cause(
            cv, d, r, c, di, lo, records, events, ev_base, n_ev, fr, now, s, end, seglen, f, ip_id, tv, top_before,
            seen_before, probe, _ipid_trusted(d), before_frame, before_ts, before_acked, before_len,
            EV_CLOCK_BACK if clock_back else 0, quiet, peer_top)
        # ---- a row for every frame either rule flags
        if kind != 0 or ws_kind != 0:
            events[ev_base + n_ev] = NEW_EVENT[0]
            e = events[ev_base + n_ev]
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
            if o_frame != NONE and kind != Kind.OUT_OF_ORDER:
                e.orig_frame = o_frame
                e.orig_ts = o_ts
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
                _add_pending(d, pend, ct, ev_base + n_ev, s, end)
                if tv >= 0:  # waits for its first covering ACK (the Eifel check, ``_eifel``)
                    e.wait_prev = d.wait_head
                    d.wait_head = ev_base + n_ev
            if kind == Kind.FAST_RETRANSMISSION and d.recovery == NONE:
                d.recovery = top_before  # fast recovery until the receiver acknowledges everything sent so far
            elif kind == Kind.RETRANSMISSION and d.rto_recovery == NONE:
                d.rto_recovery = top_before  # a timeout: loss recovery until all that was sent is acknowledged
                d.rto_frame = fr
                d.rto_ts = now
                d.recovery = NONE
            if kind == Kind.SPURIOUS_RETRANSMISSION or (r.acked != NONE and end <= r.acked):
                d.known_dup = ev_base + n_ev  # the receiver had all of it: it answers with a repeated ACK
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
                    if seen_before and s < top_before and kind != 0:
                        _add_fill(d, s, end, fr, now, ip_id, tv, ev_base + n_ev - 1)
            elif seglen == 0 and not syn and not fin and seen_before and s > d.top:
                # a pure ACK carries the sender's next sequence number: the bytes below it were sent, and the
                # capture did not see them (lost before the capture point, or missed by the capture)
                _add_hole(d, d.top, s)
                d.top = s
                d.top_frame = fr
                d.top_ts = now
            _mark_seen(d, s, end, fr, now)
            if d.uref < s:
                d.uref = s
            if end > s:
                d.data_frame = fr
        _note_send_order(d, ip_id, tv, before_ipid, before_len,
                         (seen_before and s > top_before) or (why & EV_IPID_GAP) != 0)
        # ---- Zeek history/state, Wireshark completeness
        rexmit = seglen > 0 and seen_before and end <= top_before and d.zstate != ZS.RESET
        track_connection(cv, d, r, di, f, sq, seglen, wn, rexmit)
    return n_ev


@njit(cache=True, nogil=True, _nrt=False)
def _fin_acked(d, other):
    """Direction ``d`` sent its FIN and the other side acknowledged all of it, the FIN included."""
    return d.zstate == ZS.CLOSED and d.seen == 1 and other.acked != NONE and other.acked >= d.top


@njit(cache=True, nogil=True, _nrt=False)
def _over(conv, dirs, tuple_conv, c):
    """Connection ``c`` is over: both FINs acknowledged, reset, or replaced by a new connection on its 4-tuple."""
    if tuple_conv[conv[c].tuple] != c:
        return True
    a = dirs[2 * c]
    b = dirs[2 * c + 1]
    return a.zstate == ZS.RESET or b.zstate == ZS.RESET or (_fin_acked(a, b) and _fin_acked(b, a))


@njit(cache=True, nogil=True, _nrt=False)
def _ended(conv, dirs, tuple_conv, c, now, close_delay, idle_timeout):
    """At time ``now``, has connection ``c`` ended? 1: over, and silent for ``close_delay``; 2: silent for
    ``idle_timeout`` while open; 0: no."""
    idle = now - conv[c].last_ts
    if idle > close_delay and _over(conv, dirs, tuple_conv, c):
        return 1
    return 2 if idle > idle_timeout else 0


@njit(cache=True, nogil=True, _nrt=False)
def ended(conv, dirs, tuple_conv, gone, cs, now, close_delay, idle_timeout, out):
    """Which connections of ``cs`` (live) have ended at time ``now`` (``_ended``): marked in ``gone`` and ``out``."""
    for i in range(len(cs)):
        c = cs[i]
        if gone[c] == 0:
            gone[c] = _ended(conv, dirs, tuple_conv, c, now, close_delay, idle_timeout)
        out[i] = gone[c] != 0


@njit(cache=True, nogil=True, _nrt=False)
def release(dirs, pend, ua, counter, cs):
    """Give the pool entries of ended connections ``cs`` back: their unacknowledged-segment lists and lent
    ``pend`` rows (their sent-segment records go at the next compaction)."""
    ct = counter[0]
    for i in range(len(cs)):
        for row in (2 * cs[i], 2 * cs[i] + 1):
            d = dirs[row]
            free_unacked(d, ua, ct)
            if d.pend_row != NONE:
                ct.pending -= d.pend_live
                pend[d.pend_row, 0].start = ct.pend_free
                ct.pend_free = d.pend_row
                d.pend_row = NONE
                d.pend_live = 0
            d.rec_head = NONE


@njit(cache=True, nogil=True, _nrt=False)
def _records_to_keep(conv, dirs, tuple_conv, c):
    """How many sent-segment records per direction connection ``c`` needs: none once a new connection took
    its 4-tuple (no packet reaches it again), RECORD_KEEP_OVER once it is over (reset, or both FINs
    acknowledged), else the RECORD_WALK that ``_copies`` may search."""
    if tuple_conv[conv[c].tuple] != c:
        return 0
    return RECORD_KEEP_OVER if _over(conv, dirs, tuple_conv, c) else RECORD_WALK


@njit(cache=True, nogil=True, _nrt=False)
def compact_records(conv, live, dirs, tuple_conv, records, counter, keep, moved):
    """Drop the sent-segment records no later packet can reach, in place; return how many were kept.

    ``_copies`` only walks the last RECORD_WALK records of a direction, so that many are kept while a
    connection is open (a run with compactions gives the same rows as one without). A connection that is
    over (both FINs acknowledged, or reset) keeps RECORD_KEEP_OVER per direction, enough to find the
    original of a late repeat of its last segments; one replaced by a new connection on the same 4-tuple
    (port reuse) gets no packet again and keeps none. Kept records stay in their order, so each moves to
    a lower or equal index and the pool is rewritten in one forward pass. Only the connections ``live``
    (not ended) keep records. ``keep`` and ``moved`` are work arrays of at least ``counter[0].records``
    elements (bool and int64)."""
    ct = counter[0]
    n = ct.records
    keep[:n] = False
    for c in live:
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
    for c in live:
        for row in (2 * c, 2 * c + 1):
            d = dirs[row]
            if d.rec_head >= 0:
                d.rec_head = moved[d.rec_head]  # a head is always kept unless its chain was dropped above
    ct.records = m
    return m
