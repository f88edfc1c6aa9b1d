"""Finished connections' state moved out of memory, to a temporary file, and back when needed.

The engine keeps every connection's state until the end, since the connections and handshakes tables are
built from it: about 1 KB per connection, so memory would grow with the number of connections in the
capture. Once a connection is over (both FINs acknowledged, or reset, or replaced on its 4-tuple by a
new one) and has had no packet for a whole batch, ``Spill.evict`` writes its records (the connection,
both directions, the sent-segment records a compaction keeps for it, its pending retransmissions) to the
file and hands back the memory pages that held only such connections (``madvise(MADV_DONTNEED)``).
Nothing is lost: a later packet of that connection makes the compiled pass stop, ``restore`` puts the
records back exactly, and the pass goes on; ``restore_all`` puts everything back before the tables are
built.

Each connection takes one ``SPILLED`` record in the file; ``_position[c]`` is its record number.
"""
from __future__ import annotations

import mmap
import tempfile
import weakref

import numpy as np

from .state import (CONVERSATION, DIRECTION, NONE, PEND_SLOTS, PENDING, RECORD_KEEP_OVER, SENT, FlowState,
                    record, room)

PAGE = mmap.PAGESIZE

# One connection in the spill file (``a``/``b``: its directions 2c and 2c+1)
SPILLED, _ = record(
    ("conv", CONVERSATION, 0, "the connection"),
    ("dir_a", DIRECTION, 0, "direction 2c"),
    ("dir_b", DIRECTION, 0, "direction 2c+1"),
    ("n_records", ("i8", 2), 0, "sent-segment records kept per direction (<= RECORD_KEEP_OVER)"),
    ("records_a", (SENT, RECORD_KEEP_OVER), 0, "direction a's newest records, newest first"),
    ("records_b", (SENT, RECORD_KEEP_OVER), 0, "direction b's"),
    ("has_pend", ("i8", 2), 0, "1 when the direction had a ``pend`` row lent"),
    ("pend_a", (PENDING, PEND_SLOTS), 0, "that row's slots"),
    ("pend_b", (PENDING, PEND_SLOTS), 0, "that row's slots"),
)


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
        out = np.zeros(n, dtype=SPILLED)
        out["conv"] = st.conv[cs]
        count = st.count
        for i, side in enumerate("ab"):
            rows = 2 * cs + i
            out["dir_" + side] = st.dirs[rows]
            # the newest records, newest first: what a compaction keeps for the connection
            cur = st.dirs["rec_head"][rows]
            kept = np.zeros(n, dtype=np.int64)
            for k in range(RECORD_KEEP_OVER):
                live = (cur >= 0) & (k < keep)
                out["records_" + side][live, k] = st.records[cur[live]]
                kept += live
                cur = np.where(live, st.records["prev"][np.maximum(cur, 0)], NONE)
            out["n_records"][:, i] = kept
            st.dirs["rec_head"][rows] = NONE  # (the records are about to be dropped; a compaction skips them)
            prow = st.dirs["pend_row"][rows]
            lent = prow >= 0
            out["has_pend"][:, i] = lent
            out["pend_" + side][lent] = st.pend[prow[lent]]
            for p in prow[lent].tolist():  # pool rows go back to the pool (as sequence._free_slot does)
                st.pend[p, 0]["start"] = count["pend_free"]
                count["pend_free"] = p
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="tcp-analyzer-spill-")
        self._file.seek(self._records * SPILLED.itemsize)
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
        for name, rows in (("conv", ev), ("dirs", np.repeat(ev, 2))):
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
        order = np.argsort(self._position[cs])
        cs = cs[order]
        data = np.empty(len(cs), dtype=SPILLED)
        for i, p in enumerate(self._position[cs].tolist()):
            self._file.seek(p * SPILLED.itemsize)
            data[i] = np.frombuffer(self._file.read(SPILLED.itemsize), dtype=SPILLED)[0]
        self._put_back(st, cs, data)
        self.restores += len(cs)

    def restore_all(self, st: FlowState) -> None:
        """Put every evicted connection back (before the tables are built)."""
        cs = np.flatnonzero(st.evicted[:st.conversations])
        if not len(cs):
            return
        self._file.seek(0)
        everything = np.frombuffer(self._file.read(self._records * SPILLED.itemsize), dtype=SPILLED)
        self._put_back(st, cs, everything[self._position[cs]])

    def _put_back(self, st: FlowState, cs: np.ndarray, data: np.ndarray) -> None:
        n = len(cs)
        st.conv[cs] = data["conv"]
        counts = data["n_records"]
        used = int(st.count["records"])
        st.records = room(st.records, used, used + int(counts.sum()))
        nxt = used
        for i, side in enumerate("ab"):
            rows = 2 * cs + i
            st.dirs[rows] = data["dir_" + side]
            # oldest first, so that each record's ``prev`` points to a lower index (the pool's order)
            head = np.full(n, NONE, dtype=np.int64)
            for k in reversed(range(RECORD_KEEP_OVER)):
                has = counts[:, i] > k
                m = int(has.sum())
                if not m:
                    continue
                idx = np.arange(nxt, nxt + m)
                st.records[idx] = data["records_" + side][has, k]
                st.records["prev"][idx] = head[has]
                head[has] = idx
                nxt += m
            st.dirs["rec_head"][rows] = head
            lent = data["has_pend"][:, i] == 1
            prow = np.full(n, NONE, dtype=np.int64)
            m = int(lent.sum())
            if m:
                taken = int(st.count["pend_rows"])
                st.pend = room(st.pend, taken, taken + m)
                new = np.arange(taken, taken + m)
                st.count["pend_rows"] = taken + m
                st.pend[new] = data["pend_" + side][lent]
                prow[lent] = new
            st.dirs["pend_row"][rows] = prow
        st.count["records"] = nxt
        st.evicted[cs] = 0
        for _, done in self._released.values():  # pages written again are no longer handed back
            done[:] = False
