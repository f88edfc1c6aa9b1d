"""Direction-agnostic 4-tuple ids, stable across batches.

An endpoint is ``address_id << 16 | port``; a 4-tuple is the ordered pair (lower endpoint, higher
endpoint), so both directions of a connection get the same tuple id. VLAN and interface are not part
of the key: Wireshark 4.0 ignores them too (design.md; the VLAN is kept as a connection column).
Splitting a 4-tuple into several connections on port reuse is sequential work and happens in
``sequence.py``.

Ids come from an open-addressing hash table held in plain numpy arrays and probed by one compiled
pass per batch (numba typed containers would be compiled again on every run: their types are not
cached on disk). Address ids come from the batch's category list, one Python step per new address.
"""
from __future__ import annotations

import numpy as np

from ..jit import njit
from .state import grow, new_array

_EMPTY = -1
_MUL_LO = np.uint64(0x9E3779B97F4A7C15)
_MUL_HI = np.uint64(0xC2B2AE3D27D4EB4F)


@njit(cache=True, nogil=True, _nrt=False)
def _slot(lo, hi, bits):
    h = (np.uint64(lo) * _MUL_LO) ^ (np.uint64(hi) * _MUL_HI)
    return np.int64((h ^ (h >> np.uint64(29))) >> np.uint64(64 - bits))


@njit(cache=True, nogil=True, _nrt=False)
def _tuple_ids(src_code, src_ids, sport, dst_code, dst_ids, dport, start, slots, bits, lo_out, hi_out, count, free,
               ids, is_lo):
    """Tuple id and sender-is-lower-endpoint of packets ``start`` onwards; new pairs get a free id (one a
    forgotten pair gave back, else the next one). Addresses are category codes and, per code, the address
    id (``TupleTable.address_ids``).

    ``slots`` (size ``2**bits``) holds tuple ids, ``_EMPTY`` where free; ``lo_out``/``hi_out`` the
    endpoints of each id (``_EMPTY`` for an id given back); ``count``: ids handed out so far (the highest
    plus one), ids given back (on the stack ``free``), pairs in the table, pairs ever added. Stops early,
    returning the index of the first packet not done, when a new pair would fill ``lo_out`` or the table
    beyond half: the caller grows them and calls again. (No allocation here, so no reference counting in
    the loop.)"""
    n = count[0]
    mask = (1 << bits) - 1
    for i in range(start, len(src_code)):
        s = (src_ids[src_code[i]] << 16) | np.int64(sport[i])
        d = (dst_ids[dst_code[i]] << 16) | np.int64(dport[i])
        lo = min(s, d)
        hi = max(s, d)
        h = _slot(lo, hi, bits)
        while True:
            tid = slots[h]
            if tid == _EMPTY or (lo_out[tid] == lo and hi_out[tid] == hi):
                break
            h = (h + 1) & mask
        if tid == _EMPTY:
            if 2 * (count[2] + 1) > len(slots) or (count[1] == 0 and n == len(lo_out)):
                count[0] = n
                return i
            if count[1] > 0:
                count[1] -= 1
                tid = free[count[1]]
            else:
                tid = n
                n += 1
            lo_out[tid] = lo
            hi_out[tid] = hi
            slots[h] = tid
            count[2] += 1
            count[3] += 1
        ids[i] = tid
        is_lo[i] = s <= d
    count[0] = n
    return len(src_code)


@njit(cache=True, nogil=True, _nrt=False)
def _forget(tids, slots, bits, lo_out, hi_out, count, free):
    """Take pairs ``tids`` out of the table (backward-shift deletion: no tombstones, probes stay short)
    and give their ids back."""
    mask = (1 << bits) - 1
    for tid in tids:
        g = _slot(lo_out[tid], hi_out[tid], bits)
        while slots[g] != tid:
            g = (g + 1) & mask
        j = g
        while True:  # move up any later entry of the run whose home slot is not in (g, j]
            j = (j + 1) & mask
            other = slots[j]
            if other == _EMPTY:
                break
            home = _slot(lo_out[other], hi_out[other], bits)
            if (home <= g or home > j) if g <= j else (home <= g and home > j):
                slots[g] = other
                g = j
        slots[g] = _EMPTY
        lo_out[tid] = _EMPTY
        hi_out[tid] = _EMPTY
        free[count[1]] = tid
        count[1] += 1
        count[2] -= 1


@njit(cache=True, nogil=True, _nrt=False)
def _rehash(slots, bits, lo_out, hi_out, n):
    """Insert tuple ids 0..n-1 (but those given back) into the empty table ``slots`` of size ``2**bits``."""
    mask = (1 << bits) - 1
    for k in range(n):
        if lo_out[k] == _EMPTY:
            continue
        g = _slot(lo_out[k], hi_out[k], bits)
        while slots[g] != _EMPTY:
            g = (g + 1) & mask
        slots[g] = k


def column_getter(packets):
    """A function giving a packet-table column's values (numpy array; addresses as ``Codes`` or a Categorical),
    for a ``ColumnStore`` (what the reader yields) or a packet-table DataFrame.

    ``packets[name]`` costs ~20 µs a column in pandas (index look-up, a Series, a deep copy of ``attrs``),
    which adds up over 18 columns and thousands of batches; the block manager gives the same values in
    ~1 µs. Falls back to the public path if that internal API is not there."""
    if hasattr(packets, "packet_column"):
        return packets.packet_column
    mgr = getattr(packets, "_mgr", None)
    if mgr is None or not hasattr(mgr, "iget_values"):
        return lambda name: packets[name].array
    loc = packets.columns.get_loc

    def get(name: str):
        i = loc(name)
        return mgr.iget_values(i) if isinstance(i, int) else packets[name].array

    return get


def readonly(values, dtype) -> np.ndarray:
    """``values`` as a contiguous read-only array of ``dtype`` (no copy when it already is one). Always
    read-only, so that numba sees one signature and compiles (or loads from its cache) one version."""
    a = np.ascontiguousarray(values, dtype=dtype)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _same_prefix(a, b, k: int) -> bool:
    """The first ``k`` categories of ``a`` and ``b`` are the same."""
    head = a[:k]
    return head.equals(b[:k]) if hasattr(head, "equals") else head == list(b[:k])


class TupleTable:
    """Stable ids for addresses and 4-tuples, grown batch by batch."""

    def __init__(self) -> None:
        self._addr_ids: dict[str, int] = {}
        self.addresses: list[str] = []
        self._addr_array = np.empty(0, dtype=object)  # self.addresses as an array, rebuilt when it grows
        self._cats = None  # the last batch's category list (a list or an Index), and their address ids
        self._cat_ids = np.empty(0, dtype=np.int64)
        self._bits = 10
        self._slots = np.full(1 << self._bits, _EMPTY, dtype=np.int64)
        self._lo = np.empty(512, dtype=np.int64)
        self._hi = np.empty(512, dtype=np.int64)
        self._free = np.empty(512, dtype=np.int64)  # ids given back (``forget``), reused first
        self._count = np.zeros(4, dtype=np.int64)  # ids handed out, ids given back, pairs held, pairs ever added

    def __len__(self) -> int:
        """Tuple ids handed out: every id is below this."""
        return int(self._count[0])

    @property
    def added(self) -> int:
        """Pairs added so far (each forgotten one counted again when it comes back)."""
        return int(self._count[3])

    def address_ids(self, values) -> tuple[np.ndarray, np.ndarray]:
        """(codes as int32, address id of each code) for a column of IP addresses: ``Codes`` (from a
        ``ColumnStore``), a Categorical, or text."""
        if hasattr(values, "codes") and hasattr(values, "categories"):
            codes, cats = values.codes, values.categories
        else:
            import pandas as pd

            cat = pd.Categorical(np.asarray(values, dtype=object))
            codes, cats = cat.codes, cat.categories
        # readers keep one growing category list (a reader thread may be appending to it right now: only its
        # first n entries are used): only its new tail needs a look-up
        n = len(cats)
        seen = len(self._cat_ids)
        if self._cats is None or not (cats is self._cats or (n >= seen and _same_prefix(cats, self._cats, seen))):
            seen = 0
        if seen < n or self._cats is None:
            lookup = np.empty(n, dtype=np.int64)
            lookup[:seen] = self._cat_ids[:seen]
            for i, text in enumerate(list(cats[seen:n]), seen):  # one step per new address, not per packet
                aid = self._addr_ids.get(text)
                if aid is None:
                    aid = self._addr_ids[text] = len(self.addresses)
                    self.addresses.append(str(text))
                lookup[i] = aid
            self._cat_ids = lookup
        self._cats = cats
        return readonly(codes, np.int32), self._cat_ids

    def assign(self, src, sport, dst, dport) -> tuple[np.ndarray, np.ndarray]:
        """Return (tuple id, sender-is-lower-endpoint) for every packet of a batch, given its columns
        (addresses as ``Codes``, Categoricals or text, ports as integers)."""
        n = len(sport)
        ids = np.empty(n, dtype=np.int64)
        is_lo = np.empty(n, dtype=np.bool_)
        args = (*self.address_ids(src), readonly(sport, np.uint16), *self.address_ids(dst), readonly(dport, np.uint16))
        done = 0
        while True:
            done = _tuple_ids(*args, done, self._slots, self._bits, self._lo, self._hi, self._count, self._free,
                              ids, is_lo)
            if done == n:
                return ids, is_lo
            used = len(self)
            if used == len(self._lo):
                self._lo, self._hi, self._free = (grow(a, 2 * used, used) for a in (self._lo, self._hi, self._free))
            if 2 * (int(self._count[2]) + 1) > len(self._slots):
                self._bits += 1
                self._slots = new_array(1 << self._bits)
                self._slots[:] = _EMPTY
                _rehash(self._slots, self._bits, self._lo, self._hi, used)

    def forget(self, tids: np.ndarray) -> None:
        """Take 4-tuples ``tids`` out (their connections have ended for good): their ids will be given to
        new pairs, and the table holds only the pairs still in use."""
        if len(tids):
            _forget(np.ascontiguousarray(tids, dtype=np.int64), self._slots, self._bits, self._lo, self._hi,
                    self._count, self._free)

    def keys(self, tuple_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower endpoint, higher endpoint) of tuple ids, each ``address_id << 16 | port``: what ``endpoints``
        reads, still valid once the ids are forgotten."""
        return self._lo[tuple_ids], self._hi[tuple_ids]

    def endpoints(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lower address, lower port, higher address, higher port) of endpoint pairs (``keys``)."""
        if len(self._addr_array) != len(self.addresses):
            self._addr_array = np.asarray(self.addresses, dtype=object)
        addrs = self._addr_array
        return addrs[lo >> 16], lo & 0xFFFF, addrs[hi >> 16], hi & 0xFFFF
