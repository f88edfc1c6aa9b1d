"""The packet table's storage: typed column matrices the decoder writes into, and the DataFrame over them.

The decoding kernel (``headers.py``) writes each TCP row straight into typed matrices, one per dtype,
one matrix row per packet-table column; the DataFrame's columns are views of those rows (no conversion
pass). Addresses are stored as 128-bit words and coded to ids into the decoder's address list.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..schema import PACKET_COLUMNS, SACK_MAX_BLOCKS
from ..table import seconds, with_times

if TYPE_CHECKING:
    import pandas as pd

# The kernel writes each TCP row straight into typed matrices, one per dtype, one matrix row per
# packet-table column; the DataFrame's columns are views of those rows (no conversion pass).
I64_COLS = ("frame", "ts_ns", "tsval", "tsecr",
            "clock_ns")  # the last: not a packet-table column (``CLOCK_COLUMN``)
I32_COLS = ("vlan", "vlan_inner", "ip_id", "payload_len", "caplen", "wirelen", "mss",
            "src_id", "dst_id")  # the last two: address codes, filled in Python
U32_COLS = ("seq_raw", "ack_raw",
            *[f"sack{b}_{e}" for b in range(1, SACK_MAX_BLOCKS + 1) for e in ("le", "re")],
            "src_w0", "src_w1", "src_w2", "src_w3", "dst_w0", "dst_w1", "dst_w2", "dst_w3")
U16_COLS = ("sport", "dport", "flags", "window")
I16_COLS = ("interface", "ttl", "tcp_hlen", "wscale", "tfo_cookie_len")
I8_COLS = ("ip_version", "sack_count")
B_COLS = ("fragmented", "truncated", "sack_permitted")  # stored as uint8, shown as bool
GROUPS = (("int64", I64_COLS), ("int32", I32_COLS), ("uint32", U32_COLS), ("uint16", U16_COLS),
          ("int16", I16_COLS), ("int8", I8_COLS), ("uint8", B_COLS))

_PLACE = {name: (g, i) for g, (_, names) in enumerate(GROUPS) for i, name in enumerate(names)}  # (matrix, row)

# matrix row of each column (numba folds these module constants into the kernel)
Q_FRAME, Q_TSNS, Q_TSVAL, Q_TSECR, Q_CLOCK = range(5)
Q_VLAN, Q_VLAN2, Q_IPID, Q_PLEN, Q_CAPLEN, Q_WIRELEN, Q_MSS, Q_SRCID, Q_DSTID = range(9)
Q_SEQ, Q_ACK, Q_SACK0 = 0, 1, 2
Q_SRC0 = Q_SACK0 + 2 * SACK_MAX_BLOCKS
Q_DST0 = Q_SRC0 + 4
Q_SPORT, Q_DPORT, Q_FLAGS, Q_WIN = range(4)
Q_IFACE, Q_TTL, Q_HLEN, Q_WS, Q_TFO = range(5)
Q_IPVER, Q_SACKN = range(2)
Q_FRAG, Q_TRUNC, Q_SACKP = range(3)

# The capture's clock at each row: the latest time of any frame up to the row's own, read or not (the
# decoder's running maximum, carried from batch to batch). The TCP engine ends idle connections by it, so
# that wherever the rows are cut into batches or split among processes, a clock that goes back in the
# capture decides the same way (``tcp.engine``).
CLOCK_COLUMN = "clock_ns"
NO_CLOCK = -(1 << 62)  # its value before any frame


def running_clock(ts_ns: np.ndarray, before: int) -> np.ndarray:
    """The clock at each of these frames (times ``ts_ns``), the clock being ``before`` ahead of them (what
    the decoding kernel computes frame by frame)."""
    return np.maximum.accumulate(np.maximum(ts_ns, before))

# Columns where -1 means absent (the engine and the files keep -1); the API's nullable form shows NA there.
ABSENT_IS_MINUS_ONE = {"vlan": "Int32", "vlan_inner": "Int32", "ip_id": "Int32", "mss": "Int32", "wscale": "Int16",
                       "tsval": "Int64", "tsecr": "Int64", "tfo_cookie_len": "Int16"}


class Codes(NamedTuple):
    """An address column as ``codes`` (int32) into ``categories`` (the decoder's address texts)."""

    codes: np.ndarray
    categories: list[str]


class ColumnStore:
    """Typed matrices with room for ``capacity`` rows; ``n`` rows are filled.

    ``addresses`` is the decoder's address list the ``src_id``/``dst_id`` codes index (set by
    ``Decoder.code_addresses``; it goes on growing with later batches), ``address_count`` how many of
    them were known once these rows were coded; ``packet_column`` gives the packet table's columns over
    these rows."""

    def __init__(self, capacity: int):
        self.capacity = max(int(capacity), 1)
        self.n = 0
        self.addresses: list[str] = []
        self.address_count = 0
        # np.empty does not touch memory: an over-estimated capacity costs address space, not RSS.
        self.mats = tuple(np.empty((len(names), self.capacity), dtype=dt) for dt, names in GROUPS)

    @classmethod
    def shared(cls, capacity: int) -> "ColumnStore":
        """A store whose matrices are in anonymous shared memory (``shared_array``): processes forked after
        it is made read the rows this one writes (``report.parallel``). It must not grow."""
        out = cls.__new__(cls)
        out.capacity, out.n, out.addresses, out.address_count = max(int(capacity), 1), 0, [], 0
        out.mats = tuple(shared_array((len(names), out.capacity), dt) for dt, names in GROUPS)
        return out

    def copy(self) -> "ColumnStore":
        """A private copy of the filled rows (this store is about to be filled again)."""
        out = ColumnStore.__new__(ColumnStore)
        out.n = out.capacity = self.n
        out.addresses, out.address_count = self.addresses, self.address_count
        out.mats = tuple(m[:, :self.n].copy() for m in self.mats)
        return out

    def reserve(self, more: int) -> None:
        if self.n + more <= self.capacity:
            return
        cap = max(self.capacity * 2, self.n + more)
        mats = tuple(np.empty((m.shape[0], cap), dtype=m.dtype) for m in self.mats)
        for old, new in zip(self.mats, mats):
            new[:, :self.n] = old[:, :self.n]
        self.mats, self.capacity = mats, cap

    def column(self, name: str) -> np.ndarray:
        g, i = _PLACE[name]
        col = self.mats[g][i, :self.n]
        return col.view(bool) if GROUPS[g][0] == "uint8" else col

    def __len__(self) -> int:
        return self.n

    def packet_column(self, name: str):
        """The packet-table column ``name`` over the filled rows: ``Codes`` for ``src``/``dst``, seconds for ``ts``."""
        return _packet_column(self.column, self.addresses, name)

    def words(self, prefix: str) -> np.ndarray:
        """(n, 4) uint32 address words of ``src`` or ``dst``."""
        u32 = self.mats[2]
        first = U32_COLS.index(prefix + "_w0")
        return u32[first:first + 4, :self.n].T

    def append(self, other: "ColumnStore") -> None:
        self.reserve(other.n)
        for m, o in zip(self.mats, other.mats):
            m[:, self.n:self.n + other.n] = o[:, :other.n]
        self.n += other.n

    @classmethod
    def concat(cls, stores: list["ColumnStore"]) -> "ColumnStore":
        """One store holding the rows of ``stores`` in order (one copy per matrix)."""
        if len(stores) == 1:
            return stores[0]
        out = cls.__new__(cls)
        out.n = out.capacity = sum(s.n for s in stores)
        out.addresses = stores[0].addresses if stores else []
        out.address_count = max((s.address_count for s in stores), default=0)
        out.mats = tuple(np.concatenate([s.mats[g][:, :s.n] for s in stores], axis=1)
                         if stores else np.empty((len(names), 0), dtype=dt)
                         for g, (dt, names) in enumerate(GROUPS))
        return out

    def reorder(self, order: np.ndarray, start: int) -> None:
        """Reorder rows ``start:`` by ``order`` (indices relative to ``start``)."""
        for m in self.mats:
            m[:, start:self.n] = m[:, start:self.n][:, order]


class StoreRows:
    """Some rows of a ``ColumnStore`` (``rows``: indices, in order), read as the engine reads a batch
    (``packet_column``): each column is gathered when asked for, so columns nobody reads are not copied.
    ``addresses``: the address list the codes index (default the store's). ``scratch``: a store with room
    for the rows to gather them into (reused batch after batch: its pages are touched once, where fresh
    arrays would cost a page fault per 4 KiB each time); a column read is valid until it is reused."""

    def __init__(self, store: ColumnStore, rows: np.ndarray, addresses: list[str] | None = None,
                 scratch: ColumnStore | None = None):
        self.store, self.row_index, self.scratch = store, rows, scratch
        self.addresses = store.addresses if addresses is None else addresses

    def __len__(self) -> int:
        return len(self.row_index)

    def packet_column(self, name: str):
        return _packet_column(self._gathered, self.addresses, name)

    def _gathered(self, name: str) -> np.ndarray:
        values = self.store.column(name)
        if self.scratch is None:
            return values[self.row_index]
        g, i = _PLACE[name]
        out = self.scratch.mats[g][i, :len(self.row_index)]
        np.take(values.view(out.dtype), self.row_index, out=out)
        return out.view(values.dtype)


def _packet_column(column, addresses: list[str], name: str):
    """The packet-table column ``name`` from store columns (``column(name)``): ``Codes`` for ``src``/``dst``,
    seconds for ``ts``."""
    if name in ("src", "dst"):
        return Codes(column(name + "_id"), addresses)
    if name == "ts":
        return seconds(column("ts_ns"))
    return column(name)


def shared_array(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A zeroed array in anonymous shared memory (``mmap``, no file, no name): processes forked after it is
    made see what this one writes, and no other user can plant or read it."""
    import mmap

    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    return np.frombuffer(mmap.mmap(-1, max(size, 1)), dtype=dtype, count=int(np.prod(shape))).reshape(shape)


def nullable_packets(df: pd.DataFrame) -> pd.DataFrame:
    """The packet table as people read it: NA, not -1, where a value is absent (nullable Int dtypes, no
    copy of the values), and ``time`` (datetime64[ns, UTC], exact from ``ts_ns``) beside ``ts``."""
    import pandas as pd

    out = df.copy(deep=False)
    for name, dtype in ABSENT_IS_MINUS_ONE.items():
        values = out[name].to_numpy()
        out[name] = pd.arrays.IntegerArray(values.astype(dtype.lower(), copy=False), values == -1)
    return with_times(out)


def to_frame(store: ColumnStore) -> pd.DataFrame:
    """The packet table over ``store``'s rows, columns in the declared order and dtypes (no copy). The
    address categories are those known once the rows were coded, whenever this is called (a reader
    thread may have coded later batches by then)."""
    import pandas as pd

    cats = pd.CategoricalDtype(pd.Index(store.addresses[:store.address_count], dtype=object))
    data = {}
    for c in PACKET_COLUMNS:
        if c.name == "ts":
            data["ts"] = seconds(store.column("ts_ns"))
        elif c.name in ("src", "dst"):
            data[c.name] = pd.Categorical.from_codes(store.column(c.name + "_id"), dtype=cats)
        else:
            data[c.name] = store.column(c.name)
    return pd.DataFrame(data, copy=False)
