"""Finished connections' state moved out of memory, to a temporary file, and back when needed.

The engine keeps every connection's state until the end, since the connections and handshakes tables are
built from it: about 2 KB per connection, so memory would grow with the number of connections in the
capture. Once a connection is over (both FINs acknowledged, or reset, or replaced on its 4-tuple by a
new one) and has had no packet for a whole batch, ``Spill.evict`` writes its rows (conversation, both
directions, holes, history, the sent-segment records a compaction keeps for it, its pending
retransmissions) to the file and hands back the memory pages that held only such connections
(``madvise(MADV_DONTNEED)``). Nothing is lost: a later packet of that connection makes the compiled pass
stop, ``restore`` puts the rows back exactly, and the pass goes on; ``restore_all`` puts everything back
before the tables are built.

Each connection takes one fixed-size record of int64 values in the file (``RECORD``); ``_position[c]``
is its record number.
"""
from __future__ import annotations

import mmap
import tempfile
import weakref

import numpy as np

from .state import (C_N, CT_PEND_FREE, CT_PEND_ROWS, D_N, D_PEND_ROW, D_REC_HEAD, HISTORY_LEN, HOLES, NONE, P_N,
                    P_START, PEND_SLOTS, R_N, R_PREV, RECORD_KEEP_OVER, FlowState, room)

PAGE = mmap.PAGESIZE

# One connection's record in the spill file: int64 values, in these fields (sizes per side where there are two).
_SIZES = {
    "conv": C_N,
    "dirs_a": D_N, "dirs_b": D_N,  # the direction rows 2c and 2c+1
    "holes_a": HOLES * 2, "holes_b": HOLES * 2,
    "history": HISTORY_LEN // 8,
    "n_records": 2,  # records kept per side (<= RECORD_KEEP_OVER), newest first:
    "records_a": RECORD_KEEP_OVER * R_N, "records_b": RECORD_KEEP_OVER * R_N,
    "has_pend": 2,  # 1 when the side had a ``pend`` row lent:
    "pend_a": PEND_SLOTS * P_N, "pend_b": PEND_SLOTS * P_N,
}
_AT = dict(zip(_SIZES, np.cumsum([0, *_SIZES.values()]).tolist()))
F = {name: slice(_AT[name], _AT[name] + size) for name, size in _SIZES.items()}
RECORD = sum(_SIZES.values())


def _mapping(a: np.ndarray) -> mmap.mmap | None:
    """The anonymous mapping under ``a`` (``state.new_array``), or None when ``a`` came from malloc."""
    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    return base


class Spill:
    """The spill file of one engine and the bookkeeping of what is in it."""

    def __init__(self) -> None:
        self._file = None
        self._records = 0  # records written so far
        self._position = np.empty(0, dtype=np.int64)  # record number of each evicted connection
        # per state array: (its mapping, weakly, and which of its pages were handed back); a new mapping (the
        # array was replaced by a larger copy) starts with none
        self._released: dict[str, tuple[weakref.ref, np.ndarray]] = {}
        self.evictions = 0  # connections moved out (a connection may be moved out and back several times)
        self.restores = 0  # ... and put back because a packet of theirs came (not counting the end of the run)

    # ---- out ------------------------------------------------------------------------------------
    def evict(self, st: FlowState, cs: np.ndarray, keep: np.ndarray) -> None:
        """Move connections ``cs`` (over, not evicted) to the file with the newest ``keep[i]`` records of each
        direction (``sequence.records_to_keep``), and hand back pages left with none."""
        if not len(cs):
            return
        n = len(cs)
        a, b = 2 * cs, 2 * cs + 1
        out = np.zeros((n, RECORD), dtype=np.int64)
        out[:, F["conv"]] = st.conv[cs]
        out[:, F["history"]] = np.ascontiguousarray(st.history[cs]).view(np.int64)
        for side, rows in (("a", a), ("b", b)):
            out[:, F["dirs_" + side]] = st.dirs[rows]
            out[:, F["holes_" + side]] = st.holes[rows].reshape(n, HOLES * 2)
            # the newest records, newest first: what a compaction keeps for the connection
            cur = st.dirs[rows, D_REC_HEAD]
            count = np.zeros(n, dtype=np.int64)
            first = F["records_" + side].start
            for k in range(RECORD_KEEP_OVER):
                live = (cur >= 0) & (k < keep)
                out[live, first + k * R_N:first + (k + 1) * R_N] = st.records[cur[live]]
                count += live
                cur = np.where(live, st.records[np.maximum(cur, 0), R_PREV], NONE)
            out[:, F["n_records"].start + (side == "b")] = count
            st.dirs[rows, D_REC_HEAD] = NONE  # (the rows are about to be dropped; a compaction skips them)
            prow = st.dirs[rows, D_PEND_ROW]
            lent = prow >= 0
            out[:, F["has_pend"].start + (side == "b")] = lent
            out[lent, F["pend_" + side]] = st.pend[prow[lent]].reshape(-1, PEND_SLOTS * P_N)
            for p in prow[lent].tolist():  # pool rows go back to the pool
                st.pend[p, 0, P_START] = st.counter[CT_PEND_FREE]  # (as sequence._free_slot does)
                st.counter[CT_PEND_FREE] = p
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="tcp-analyzer-spill-")
        self._file.seek(self._records * RECORD * 8)
        self._file.write(out.tobytes())
        self._position = room(self._position, len(self._position), st.conversations)  # (read for evicted only)
        self._position[cs] = np.arange(self._records, self._records + n)
        self._records += n
        st.evicted[cs] = 1
        self.evictions += n
        self.release(st)

    def release(self, st: FlowState) -> None:
        """Hand back the pages of the per-connection arrays that hold evicted connections only."""
        n = st.conversations
        ev = st.evicted[:n] != 0
        for name, rows in (("conv", ev), ("dirs", np.repeat(ev, 2)), ("holes", np.repeat(ev, 2)), ("history", ev)):
            arr = getattr(st, name)
            mm = _mapping(arr)
            if mm is None or not hasattr(mm, "madvise"):
                continue
            rs = arr.strides[0]
            pages = len(rows) * rs // PAGE
            if not pages:
                continue
            bad = np.concatenate([[0], np.cumsum(~rows)])
            p = np.arange(pages)
            first, last = p * PAGE // rs, ((p + 1) * PAGE - 1) // rs
            free = (bad[np.minimum(last + 1, len(rows))] - bad[first]) == 0
            was_mm, was = self._released.get(name, (lambda: None, None))
            done = np.zeros(pages, dtype=bool)
            if was_mm() is mm:
                done[:len(was)] = was[:pages]
            new = free & ~done
            if new.any():
                edges = np.flatnonzero(np.diff(np.concatenate([[0], new.astype(np.int8), [0]])))
                for s, e in zip(edges[::2].tolist(), edges[1::2].tolist()):
                    mm.madvise(mmap.MADV_DONTNEED, s * PAGE, (e - s) * PAGE)
                done |= new
            self._released[name] = (weakref.ref(mm), done)

    # ---- back -------------------------------------------------------------------------------------
    def restore(self, st: FlowState, cs: np.ndarray) -> None:
        """Put connections ``cs`` (evicted) back, exactly as they were."""
        if not len(cs):
            return
        n = len(cs)
        order = np.argsort(self._position[cs])
        cs = cs[order]
        pos = self._position[cs]
        data = np.empty((n, RECORD), dtype=np.int64)
        for i, p in enumerate(pos.tolist()):
            self._file.seek(p * RECORD * 8)
            data[i] = np.frombuffer(self._file.read(RECORD * 8), dtype=np.int64)
        self._put_back(st, cs, data)
        self.restores += n

    def restore_all(self, st: FlowState) -> None:
        """Put every evicted connection back (before the tables are built)."""
        cs = np.flatnonzero(st.evicted[:st.conversations])
        if not len(cs):
            return
        self._file.seek(0)
        everything = np.frombuffer(self._file.read(self._records * RECORD * 8), dtype=np.int64).reshape(-1, RECORD)
        self._put_back(st, cs, everything[self._position[cs]])

    def _put_back(self, st: FlowState, cs: np.ndarray, data: np.ndarray) -> None:
        n = len(cs)
        st.conv[cs] = data[:, F["conv"]]
        st.history[cs] = np.ascontiguousarray(data[:, F["history"]]).view(np.uint8).reshape(n, HISTORY_LEN)
        counts = data[:, F["n_records"]]
        used = int(st.n_records[0])
        st.records = room(st.records, used, used + int(counts.sum()))
        nxt = used
        for i, (side, rows) in enumerate((("a", 2 * cs), ("b", 2 * cs + 1))):
            st.dirs[rows] = data[:, F["dirs_" + side]]
            st.holes[rows] = data[:, F["holes_" + side]].reshape(n, HOLES, 2)
            # oldest first, so that each record's R_PREV points to a lower index (the pool's order)
            head = np.full(n, NONE, dtype=np.int64)
            first = F["records_" + side].start
            for k in reversed(range(RECORD_KEEP_OVER)):
                has = counts[:, i] > k
                m = int(has.sum())
                if not m:
                    continue
                idx = np.arange(nxt, nxt + m)
                st.records[idx] = data[has, first + k * R_N:first + (k + 1) * R_N]
                st.records[idx, R_PREV] = head[has]
                head[has] = idx
                nxt += m
            st.dirs[rows, D_REC_HEAD] = head
            lent = data[:, F["has_pend"].start + i] == 1
            prow = np.full(n, NONE, dtype=np.int64)
            m = int(lent.sum())
            if m:
                taken = int(st.counter[CT_PEND_ROWS])
                st.pend = room(st.pend, taken, taken + m)
                new = np.arange(taken, taken + m)
                st.counter[CT_PEND_ROWS] = taken + m
                st.pend[new] = data[lent, F["pend_" + side]].reshape(m, PEND_SLOTS, P_N)
                prow[lent] = new
            st.dirs[rows, D_PEND_ROW] = prow
        st.n_records[0] = nxt
        st.evicted[cs] = 0
        for _, done in self._released.values():  # pages written again are no longer handed back
            done[:] = False
