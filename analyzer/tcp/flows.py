"""Direction-agnostic 4-tuple ids, assigned vectorized and stable across batches.

An endpoint is ``address_id << 16 | port``; a 4-tuple is the ordered pair (lower endpoint, higher
endpoint), so both directions of a connection get the same tuple id. VLAN and interface are not part
of the key: Wireshark 4.0 ignores them too (design.md; the VLAN is kept as a connection column).
Splitting a 4-tuple into several connections on port reuse is sequential work and happens in
``sequence.py``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit, types
from numba.typed import Dict


@njit(cache=True)
def _tuple_ids(lo, hi, table, lo_out, hi_out, count):
    """Stable id of every (lo, hi) endpoint pair; new pairs get the next ids (hash table lookups)."""
    ids = np.empty(len(lo), dtype=np.int64)
    n = count[0]
    for i in range(len(lo)):
        key = (lo[i], hi[i])
        tid = table.get(key, -1)
        if tid < 0:
            tid = n
            table[key] = tid
            lo_out[n] = lo[i]
            hi_out[n] = hi[i]
            n += 1
        ids[i] = tid
    count[0] = n
    return ids


class TupleTable:
    """Stable ids for addresses and 4-tuples, grown batch by batch."""

    def __init__(self) -> None:
        self._addr_ids: dict[str, int] = {}
        self.addresses: list[str] = []
        self._cats: pd.Index | None = None  # the last batch's categories and their ids
        self._cat_ids = np.empty(0, dtype=np.int64)
        self._table = Dict.empty(key_type=types.UniTuple(types.int64, 2), value_type=types.int64)
        self._lo = np.empty(1024, dtype=np.int64)
        self._hi = np.empty(1024, dtype=np.int64)
        self._count = np.zeros(1, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._count[0])

    def address_ids(self, column: pd.Series) -> np.ndarray:
        """Address ids (int64) for a categorical (or text) column of IP addresses."""
        cat = column if isinstance(column.dtype, pd.CategoricalDtype) else column.astype("category")
        cats = cat.cat.categories
        known = 0  # readers usually keep one growing category list: only its new tail needs a look-up
        if self._cats is not None and len(cats) >= len(self._cats) and cats[: len(self._cats)].equals(self._cats):
            known = len(self._cats)
        lookup = np.empty(len(cats), dtype=np.int64)
        lookup[:known] = self._cat_ids[:known]
        for i in range(known, len(cats)):  # one step per new distinct address, not per packet
            text = cats[i]
            aid = self._addr_ids.get(text)
            if aid is None:
                aid = self._addr_ids[text] = len(self.addresses)
                self.addresses.append(str(text))
            lookup[i] = aid
        self._cats, self._cat_ids = cats, lookup
        return lookup[cat.cat.codes.to_numpy()]

    def assign(self, packets: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Return (tuple id, sender-is-lower-endpoint) for every packet of a batch."""
        src = (self.address_ids(packets["src"]) << 16) | packets["sport"].to_numpy().astype(np.int64)
        dst = (self.address_ids(packets["dst"]) << 16) | packets["dport"].to_numpy().astype(np.int64)
        is_lo = src <= dst
        lo = np.where(is_lo, src, dst)
        hi = np.where(is_lo, dst, src)
        need = len(self) + len(lo)
        if need > len(self._lo):
            cap = max(need, 2 * len(self._lo))
            self._lo = np.concatenate([self._lo, np.empty(cap - len(self._lo), dtype=np.int64)])
            self._hi = np.concatenate([self._hi, np.empty(cap - len(self._hi), dtype=np.int64)])
        return _tuple_ids(lo, hi, self._table, self._lo, self._hi, self._count), is_lo

    def endpoints(self, tuple_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lower address, lower port, higher address, higher port) for an array of tuple ids."""
        lo = self._lo[tuple_ids]
        hi = self._hi[tuple_ids]
        addrs = np.asarray(self.addresses, dtype=object)
        return addrs[lo >> 16], lo & 0xFFFF, addrs[hi >> 16], hi & 0xFFFF
