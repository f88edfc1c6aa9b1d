"""Per-flow state carried from one batch to the next, held in plain numpy arrays.

The sequential part of the engine (``sequence.analyze_batch``, compiled with numba) reads and writes
these arrays; nothing else is kept between batches. Three arrays hold almost everything:

- ``conv``  int64 ``[conversations, C_N]``: one row per connection (``stream`` = row index).
- ``dirs``  int64 ``[2 * conversations, D_N]``: one row per direction; row ``2*c`` is the direction of
  the connection's first packet, row ``2*c+1`` the opposite one (the client may be either).
- ``holes`` int64 ``[2 * conversations, HOLES, 2]``: sequence ranges below the highest byte sent that
  were never seen, so that retransmitted bytes are counted exactly.

Plus ``history`` (uint8 ``[conversations, HISTORY_LEN]``, Zeek history letters), ``tuple_conv`` (the
current connection of each 4-tuple, for port reuse), a pool of sent-segment records used to find a
retransmission's original frame (compacted by the engine, ``sequence.compact_records``), and ``pend``
(int64 ``[rows, PEND_SLOTS, P_N]``), the recent retransmissions still waiting for the receiver's D-SACK or
timestamp echo: a pool whose rows are lent to a direction while it has such retransmissions (most
directions never have one, so memory follows the connections with pending ones, not all connections).
Column indices are module constants so the numba code can use them.

A connection that is over may be moved out to the engine's spill file (``spill.py``); ``evicted`` marks
it, and its rows' pages may have been handed back (they read as zeros until it is put back).
"""
from __future__ import annotations

import mmap

import numpy as np

NONE = -1  # "not set" for frames, times and options

# --- conversation columns -------------------------------------------------------------------
(C_TUPLE, C_FIRST_LO, C_CLIENT_DIR, C_FIRST_FRAME, C_FIRST_TS, C_LAST_FRAME, C_LAST_TS, C_VLAN,
 C_IRTT, C_MRU_SYN_TS, C_COMPLETENESS, C_REUSED,
 # handshake progress (see handshake.py)
 C_HS_STATE, C_HS_END, C_HS_SIMOPEN, C_HS_DECIDED, C_CLIENT_ISN, C_SERVER_ISN,
 C_SYN_N, C_SYN1_FRAME, C_SYN1_TS, C_LASTSYN_FRAME, C_LASTSYN_TS,
 C_SA_N, C_LASTSA_FRAME, C_LASTSA_TS, C_LASTSA_SYN_FRAME, C_LASTSA_SYN_TS,
 C_SYN_FRAME, C_SYN_TS, C_SA_FRAME, C_SA_TS, C_ACK_FRAME, C_ACK_TS, C_END_FRAME, C_END_TS,
 C_MSS_C, C_MSS_S, C_WS_C, C_WS_S, C_SACK_C, C_SACK_S, C_TS_C, C_TS_S, C_TFO, C_SYN_DATA,
 C_HIST_LEN,
 C_N) = range(48)

# --- direction columns ----------------------------------------------------------------------
(D_BASE, D_BASE_SET, D_UREF,
 # Wireshark's tcp_analyze_sequence_number state (reference B.5)
 D_NEXTSEQ, D_NEXTSEQ_SET, D_NEXTSEQ_TS, D_NEXTSEQ_FRAME,
 D_LASTACK_RAW, D_LASTACK, D_LASTACK_SET, D_LASTACK_TS, D_LASTACK_FRAME,
 D_WINDOW, D_WSCALE, D_DUPACKS, D_LASTNONDUPACK, D_LASTSEGFLAGS,
 # exact byte accounting (our own)
 D_SEEN, D_LO, D_TOP, D_REC_HEAD,
 # the previous packet, to recognise the same packet captured twice
 D_PREV_FRAME, D_PREV_TS, D_PREV_SEQ, D_PREV_ACK, D_PREV_LEN, D_PREV_FLAGS, D_PREV_WIN, D_PREV_IPID,
 D_PREV_TSVAL,
 # counters
 D_PKTS, D_BYTES, D_RETX, D_RETX_BYTES, D_OOO, D_DUPS, D_KA, D_ZWP, D_SYN_PKTS, D_FIN_PKTS, D_RST_PKTS,
 # Zeek endpoint state and history bookkeeping (connections.py)
 D_ZSTATE, D_ZONCE, D_Z_SYN_SEQ, D_Z_FIN_SEQ, D_Z_RST_SEQ, D_Z_RXMIT, D_Z_ZWIN,
 # retransmissions waiting for D-SACK / Eifel evidence: live slots, slots awaiting an ACK, and the
 # ``pend`` pool row holding this direction's slots (NONE while it has none)
 D_PEND_LIVE, D_PEND_EIFEL, D_PEND_ROW,
 D_N) = range(52)

HOLES = 4  # gaps remembered per direction; when full the lowest one is forgotten (its bytes count as seen)
HISTORY_LEN = 32  # Zeek history letters kept per connection
RECORD_WALK = 64  # sent-segment records searched back for a retransmission's original frame
# records a compaction keeps per direction of a connection that is over (both FINs acknowledged, or reset):
# enough for a late repeat of its last segments (the FIN), whose original is then still found
RECORD_KEEP_OVER = 4

# record pool columns (R_TSVAL: the TCP TSval of that transmission, -1 without timestamps)
R_START, R_END, R_FRAME, R_TS, R_PREV, R_TSVAL, R_N = range(7)

# Retransmissions kept per direction until the receiver shows whether they were needed (when all
# slots are taken, the oldest is forgotten). Columns of ``pend``: the event's global index (NONE = free slot), the
# unwrapped range [start, end) it covered, TSval of the original and of the retransmission, and whether
# it still waits for the first ACK that covers it (the Eifel check, RFC 3522).
PEND_SLOTS = 8
P_EV, P_START, P_END, P_TSV_ORIG, P_TSV_RETX, P_EIFEL, P_N = range(7)

# counter array: conversations, batch number, event rows so far (the next event's global index),
# live pending slots over all directions, refinements written by the current batch, ``pend`` pool rows
# handed out so far, and the first free pool row (a free row's slot 0 P_START links to the next; NONE ends)
CT_CONVERSATIONS, CT_BATCH, CT_EVENTS, CT_PENDING, CT_REFINED, CT_PEND_ROWS, CT_PEND_FREE, CT_N = range(8)
# set by ``analyze_batch`` when it stops before the end of a batch: the packet it stopped at and the
# connection it needs back (its state was moved out to the engine's spill file); NONE when it did not stop
CT_STOP, CT_RESTORE = CT_N, CT_N + 1
CT_N += 2


class FlowState:
    """All arrays the sequential engine carries between batches, grown as connections appear."""

    def __init__(self, capacity: int = 1024, records: int = 4096):
        self.conv = new_array((capacity, C_N))
        self.dirs = new_array((2 * capacity, D_N))
        self.holes = new_array((2 * capacity, HOLES, 2))
        self.history = new_array((capacity, HISTORY_LEN), np.uint8)
        self.tuple_conv = np.full(1024, NONE, dtype=np.int64)
        self.pend = np.empty((64, PEND_SLOTS, P_N), dtype=np.int64)
        self.records = np.zeros((records, R_N), dtype=np.int64)
        self.n_records = np.zeros(1, dtype=np.int64)  # array so the compiled code can update it
        self.counter = np.zeros(CT_N, dtype=np.int64)  # CT_* entries
        self.counter[CT_PEND_FREE] = NONE
        self.evicted = np.zeros(capacity, dtype=np.uint8)  # 1: the connection's state is in the spill file

    def reserve(self, conversations: int, tuples: int, records: int) -> bool:
        """Make room for ``conversations`` more connections, ``tuples`` 4-tuples and ``records`` records
        (and as many ``pend`` rows: a batch takes at most one per retransmission, so one per record).
        Returns whether the per-connection arrays were replaced by larger copies."""
        need = int(self.counter[CT_CONVERSATIONS]) + conversations
        grown = need > len(self.conv)
        if grown:
            cap = max(need, 2 * len(self.conv))
            used = self.conversations
            self.conv = grow(self.conv, cap, used)
            self.dirs = grow(self.dirs, 2 * cap, 2 * used)
            self.holes = grow(self.holes, 2 * cap, 2 * used)
            self.evicted = grow(self.evicted, cap, used)
            self.evicted[used:] = 0
            self.history = grow(self.history, cap, used)
        if tuples > len(self.tuple_conv):
            old = len(self.tuple_conv)
            self.tuple_conv = grow(self.tuple_conv, max(tuples, 2 * old), old)
            self.tuple_conv[old:] = NONE
        self.records = room(self.records, int(self.n_records[0]), int(self.n_records[0]) + records)
        rows = int(self.counter[CT_PEND_ROWS])
        self.pend = room(self.pend, rows, rows + min(records, 2 * need))
        return grown

    @property
    def conversations(self) -> int:
        return int(self.counter[CT_CONVERSATIONS])


_MAPPED_FROM = 1 << 20  # arrays of this many bytes or more get pages of their own (``new_array``)


def new_array(shape: tuple, dtype=np.int64) -> np.ndarray:
    """An uninitialised array; from 1 MiB on, in an anonymous memory mapping of its own, whose pages the
    system provides when first written and takes back as soon as the array is freed. Through malloc, the
    engine's growing and batch-long arrays would raise glibc's dynamic mmap threshold and leave its heap
    fragmented around the long-lived ones: RSS would creep up batch after batch."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < _MAPPED_FROM or not hasattr(mmap, "MAP_PRIVATE"):  # (no MAP_PRIVATE on Windows)
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE), dtype=dtype).reshape(shape)


def grow(a: np.ndarray, rows: int, used: int) -> np.ndarray:
    """A larger copy of ``a`` keeping its first ``used`` rows. New rows are left uninitialised: the
    compiled code initialises a row when it creates the connection, so untouched memory stays free."""
    out = new_array((rows,) + a.shape[1:], a.dtype)
    out[:used] = a[:used]
    return out


def room(a: np.ndarray, used: int, rows: int) -> np.ndarray:
    """``a``, or a copy of its first ``used`` rows with room for at least ``rows`` (doubling)."""
    return a if len(a) >= rows else grow(a, max(rows, 2 * len(a)), used)
