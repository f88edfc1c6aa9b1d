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
I64_COLS = ("frame", "ts_ns", "tsval", "tsecr")
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

# matrix row of each column (numba folds these module constants into the kernel)
Q_FRAME, Q_TSNS, Q_TSVAL, Q_TSECR = range(4)
Q_VLAN, Q_VLAN2, Q_IPID, Q_PLEN, Q_CAPLEN, Q_WIRELEN, Q_MSS, Q_SRCID, Q_DSTID = range(9)
Q_SEQ, Q_ACK, Q_SACK0 = 0, 1, 2
Q_SRC0 = Q_SACK0 + 2 * SACK_MAX_BLOCKS
Q_DST0 = Q_SRC0 + 4
Q_SPORT, Q_DPORT, Q_FLAGS, Q_WIN = range(4)
Q_IFACE, Q_TTL, Q_HLEN, Q_WS, Q_TFO = range(5)
Q_IPVER, Q_SACKN = range(2)
Q_FRAG, Q_TRUNC, Q_SACKP = range(3)

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
        """A store whose matrices live in one anonymous shared memory map (no file, no name): processes
        forked after it is made read the rows this one writes (``report.parallel``). It never grows."""
        import mmap

        out = cls.__new__(cls)
        out.capacity = -(-max(int(capacity), 1) // 8) * 8  # a multiple of 8: every matrix stays aligned
        out.n = out.address_count = 0
        out.addresses = []
        sizes = [len(names) * out.capacity * np.dtype(dt).itemsize for dt, names in GROUPS]
        memory = mmap.mmap(-1, sum(sizes))  # MAP_SHARED | MAP_ANONYMOUS
        offsets = np.cumsum([0, *sizes[:-1]]).tolist()
        out.mats = tuple(np.frombuffer(memory, dtype=dt, count=len(names) * out.capacity, offset=at)
                         .reshape(len(names), out.capacity) for (dt, names), at in zip(GROUPS, offsets))
        return out

    def take(self, rows: np.ndarray, into: "ColumnStore | None" = None) -> "ColumnStore":
        """A store holding rows ``rows`` (indices of filled rows, in the order given): a new one, or ``into``
        emptied and refilled (its pages touched already: no page faults for a fresh copy each batch)."""
        out = into if into is not None else ColumnStore(len(rows))
        out.n = 0
        out.reserve(len(rows))
        for m, o in zip(self.mats, out.mats):
            for r in range(m.shape[0]):
                np.take(m[r], rows, out=o[r, :len(rows)])
        out.n = len(rows)
        out.addresses, out.address_count = self.addresses, self.address_count
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
        for (dt, names), m in zip(GROUPS, self.mats):
            if name in names:
                col = m[names.index(name), :self.n]
                return col.view(bool) if dt == "uint8" else col
        raise KeyError(name)

    def __len__(self) -> int:
        return self.n

    def packet_column(self, name: str):
        """The packet-table column ``name`` over the filled rows: ``Codes`` for ``src``/``dst``, seconds for ``ts``."""
        if name in ("src", "dst"):
            return Codes(self.column(name + "_id"), self.addresses)
        if name == "ts":
            return seconds(self.column("ts_ns"))
        return self.column(name)

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
