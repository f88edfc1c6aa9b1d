"""Frame batch -> packet table: the ``Decoder`` that runs the kernel, reassembles fragments, codes addresses.

The kernel (``headers.py``) writes the TCP rows of a batch into a ``ColumnStore`` (``store.py``);
fragments it hands back are reassembled (``fragments.py``) and decoded again; addresses become ids
into one growing list through a compiled hash table. State carried between batches: pending
fragments and the address list.
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..jit import njit
from ..sources.frames import LINKTYPE_NAMES, LINKTYPE_RAW, FrameBatch
from .fragments import Defragmenter
from .headers import KNOWN_LINKTYPES, SKIP_REASONS, ST_OTHER_GROUP, ST_UNKNOWN_LINK, _decode_frames, split_groups
from .store import (NO_CLOCK, Q_CAPLEN, Q_CLOCK, Q_DST0, Q_DSTID, Q_FRAG, Q_FRAME, Q_IFACE, Q_IPID, Q_IPVER, Q_SRC0,
                    Q_SRCID, Q_TSNS, Q_VLAN, Q_VLAN2, Q_WIRELEN, ColumnStore, running_clock, to_frame)

if TYPE_CHECKING:
    import pandas as pd

# -- batch decoder ----------------------------------------------------------------------------------
@dataclass
class DecodeStats:
    """What the decoder met: frames, TCP rows and skipped frames by reason."""

    frames: int = 0
    tcp_segments: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"frames": self.frames, "tcp_segments": self.tcp_segments, "skipped": dict(self.skipped)}


def _address_text(ipver: int, hi: int, lo: int) -> str:
    if ipver == 4:
        return str(ipaddress.IPv4Address(lo))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


class ConnectionGroup(NamedTuple):
    """Connection group ``index`` of ``count``: the TCP segments whose 4-tuple hashes to it
    (``headers.connection_group``; both directions of a connection, and its port reuses, hash alike)."""

    index: int
    count: int


ALL_CONNECTIONS = ConnectionGroup(0, 1)


def rows_by_group(store: ColumnStore, groups: int, rows: np.ndarray | None = None) -> list[np.ndarray]:
    """The indices of the rows of ``store`` in each of ``groups`` connection groups, in order (views of
    ``rows``, a (groups, n or more) int64 array, when given)."""
    rows = np.empty((groups, store.n), dtype=np.int64) if rows is None else rows
    counts = np.empty(groups, dtype=np.int64)
    split_groups(store.mats[2], store.mats[3], store.n, groups, rows, counts)
    return [rows[g, :counts[g]] for g in range(groups)]


class Decoder:
    """Decodes frame batches into a ``ColumnStore``, carrying state between batches.

    State carried: pending IP fragments, and the address list (``addresses``), so that the address
    codes of every batch index one list that only grows (first appearance order). With ``group``, only
    that connection group's segments become rows; every frame is still counted (frames, skipped ones).
    """

    def __init__(self, group: ConnectionGroup = ALL_CONNECTIONS):
        if not 0 <= group.index < group.count:
            raise ValueError(f"connection group {group.index} of {group.count} does not exist")
        self.group = group
        self.defrag = Defragmenter()
        self.stats = DecodeStats()
        self.addresses: list[str] = []
        self._table = np.full(0, -1, dtype=np.int64)  # address hash table (``_code_addresses``)
        self._keys = np.empty((0, 3), dtype=np.uint64)  # (version, high, low) of each address id
        self._clock = np.array([NO_CLOCK], dtype=np.int64)  # the latest frame time so far (``CLOCK_COLUMN``)

    @property
    def _group_args(self) -> tuple[int, int]:
        """The kernel's (groups, group) arguments."""
        return self.group.count, self.group.index

    def decode_into(self, batch: FrameBatch, store: ColumnStore, code_addresses: bool = True) -> None:
        """Append the TCP rows of ``batch`` to ``store``.

        With ``code_addresses=False`` the caller calls ``code_addresses`` once for many batches.
        """
        start = store.n
        store.reserve(len(batch))
        counts = np.zeros(ST_OTHER_GROUP + 1, dtype=np.int64)
        nfmax = len(batch)
        frag_idx, frag_off = np.empty(nfmax, np.int64), np.empty(nfmax, np.int64)
        frag_ver, frag_vlan = np.empty(nfmax, np.int64), np.empty((nfmax, 2), np.int64)
        clock_before = int(self._clock[0])
        rows, nf = _decode_frames(batch.data, batch.offsets, batch.caplens, batch.wirelens,
                                  batch.linktypes, batch.ts_ns, batch.interfaces, batch.first_frame,
                                  start, *store.mats, counts, frag_idx, frag_off, frag_ver, frag_vlan,
                                  *self._group_args, self._clock)
        store.n += rows
        self.stats.frames += len(batch)
        self._count_skips(counts, batch.linktypes)
        if nf:
            self._reassemble(batch, store, frag_idx[:nf], frag_off[:nf], frag_ver[:nf], frag_vlan[:nf], clock_before)
            order = np.argsort(store.mats[0][Q_FRAME, start:store.n], kind="stable")
            store.reorder(order, start)
        if code_addresses:
            self.code_addresses(store, start)
        self.stats.tcp_segments += store.n - start

    def finish(self) -> None:
        """Count fragment sets still incomplete at the end of the capture, and those dropped before."""
        self.defrag.drop_all()
        for count, reason in (("expired", "IP datagrams whose fragments never all arrived"),
                              ("evicted", "IP datagrams dropped to bound the fragments held (oldest first)"),
                              ("bad", "IP fragments that could not be reassembled (cut or malformed)")):
            if getattr(self.defrag, count):
                self.stats.skipped[reason] += getattr(self.defrag, count)
                setattr(self.defrag, count, 0)

    def _count_skips(self, counts: np.ndarray, linktypes: np.ndarray) -> None:
        for code, reason in SKIP_REASONS.items():
            if counts[code]:
                self.stats.skipped[reason] += int(counts[code])
        if counts[ST_UNKNOWN_LINK]:
            unknown = ~np.isin(linktypes, KNOWN_LINKTYPES)
            lts, n = np.unique(linktypes[unknown], return_counts=True)
            for lt, c in zip(lts.tolist(), n.tolist()):
                name = "frame on an undescribed pcapng interface" if lt == -1 else \
                    f"unknown link type {lt}" + (f" ({LINKTYPE_NAMES[lt]})" if lt in LINKTYPE_NAMES else "")
                self.stats.skipped[name] += c

    def _reassemble(self, batch, store, frag_idx, frag_off, frag_ver, frag_vlan, clock_before) -> None:
        whole, which = [], []
        for f, i in enumerate(frag_idx.tolist()):
            ts = int(batch.ts_ns[i])
            self.defrag.expire(ts)
            end = int(batch.offsets[i] + batch.caplens[i])
            got = self.defrag.add(bytes(batch.data[int(frag_off[f]):end]), int(frag_ver[f]), ts)
            if got is not None:
                whole.append(got)
                which.append(f)
        if not whole:
            return
        sub = FrameBatch.from_frames([w for w, _ in whole], [0] * len(whole), LINKTYPE_RAW)
        tmp = ColumnStore(len(sub))
        counts = np.zeros(ST_OTHER_GROUP + 1, dtype=np.int64)
        scratch = [np.empty(len(sub), np.int64) for _ in range(3)]
        tmp.n, _ = _decode_frames(sub.data, sub.offsets, sub.caplens, sub.wirelens, sub.linktypes,
                                  sub.ts_ns, sub.interfaces, 0, 0, *tmp.mats, counts, *scratch,
                                  np.empty((len(sub), 2), np.int64), *self._group_args,
                                  np.array([NO_CLOCK], dtype=np.int64))
        for code, reason in SKIP_REASONS.items():
            if counts[code]:
                self.stats.skipped[reason + " (reassembled datagram)"] += int(counts[code])
        # Rows of tmp are datagrams that turned out to be TCP; put back what the frames said.
        got = tmp.mats[0][Q_FRAME, :tmp.n].copy()  # index into `whole`
        f = np.asarray(which, dtype=np.int64)[got]
        i = frag_idx[f]
        i64, i32, u32, u16, i16, i8, b = (m[:, :tmp.n] for m in tmp.mats)
        i64[Q_FRAME] = batch.first_frame + i
        i64[Q_TSNS] = batch.ts_ns[i]
        i64[Q_CLOCK] = running_clock(batch.ts_ns, clock_before)[i]
        i16[Q_IFACE] = batch.interfaces[i]
        i32[Q_CAPLEN] = batch.caplens[i]
        i32[Q_WIRELEN] = np.maximum(batch.wirelens[i], batch.caplens[i])
        i32[Q_VLAN] = frag_vlan[f, 0]
        i32[Q_VLAN2] = frag_vlan[f, 1]
        i32[Q_IPID] = np.asarray([whole[g][1] for g in got.tolist()], dtype=np.int64)
        b[Q_FRAG] = 1
        store.append(tmp)

    def code_addresses(self, store: ColumnStore, start: int = 0) -> None:
        """Fill src_id/dst_id of rows ``start:`` with indices into ``self.addresses``.

        Ids are given in order of first appearance (sources of the rows, then destinations), through a
        hash table that lives as long as the decoder; only new addresses are turned into text here.
        """
        store.addresses = self.addresses
        store.address_count = len(self.addresses)
        n = store.n - start
        if n == 0:
            return
        known = len(self.addresses)
        table = self._table
        if 2 * (known + 2 * n) > len(table):  # keep the load under one half
            table = np.full(1 << max(12, (4 * (known + 2 * n)).bit_length()), -1, dtype=np.int64)
            _rehash_addresses(self._table, self._keys, table)
            self._table = table
        if len(self._keys) < known + 2 * n:
            keys = np.empty((max(2 * len(self._keys), known + 2 * n), 3), dtype=np.uint64)
            keys[:known] = self._keys[:known]
            self._keys = keys
        u32, i32 = store.mats[2], store.mats[1]
        coded = _code_addresses(store.mats[5][Q_IPVER], u32, start, store.n, table, self._keys, known,
                                i32[Q_SRCID], i32[Q_DSTID])
        for ver, hi, lo in self._keys[known:coded].tolist():
            self.addresses.append(_address_text(int(ver), int(hi), int(lo)))
        store.address_count = len(self.addresses)


@njit(cache=True, nogil=True, _nrt=False)
def _address_slot(ver, hi, lo, mask):
    h = (hi * np.uint64(0x9E3779B97F4A7C15)) ^ (lo * np.uint64(0xC2B2AE3D27D4EB4F)) ^ ver
    h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(mask))


@njit(cache=True, nogil=True, _nrt=False)
def _code_addresses(ipver, u32, start, stop, table, keys, coded, src_id, dst_id):
    """Address ids of rows ``start:stop`` (sources first, then destinations) into ``src_id``/``dst_id``.

    ``table`` (open addressing, -1 = empty) maps an address to its id; ``keys[id]`` = (version, high
    64 bits, low 64 bits). New addresses get ids from ``coded`` on; returns the new count.
    """
    mask = len(table) - 1
    for side in range(2):
        w = Q_SRC0 if side == 0 else Q_DST0
        out = src_id if side == 0 else dst_id
        for j in range(start, stop):
            ver = np.uint64(ipver[j])
            hi = (np.uint64(u32[w, j]) << np.uint64(32)) | np.uint64(u32[w + 1, j])
            lo = (np.uint64(u32[w + 2, j]) << np.uint64(32)) | np.uint64(u32[w + 3, j])
            slot = _address_slot(ver, hi, lo, mask)
            while True:
                got = table[slot]
                if got < 0:
                    table[slot] = coded
                    keys[coded, 0], keys[coded, 1], keys[coded, 2] = ver, hi, lo
                    got = coded
                    coded += 1
                    break
                if keys[got, 2] == lo and keys[got, 1] == hi and keys[got, 0] == ver:
                    break
                slot = (slot + 1) & mask
            out[j] = got
    return coded


@njit(cache=True, nogil=True, _nrt=False)
def _rehash_addresses(old, keys, table):
    mask = len(table) - 1
    for i in range(len(old)):
        got = old[i]
        if got < 0:
            continue
        slot = _address_slot(keys[got, 0], keys[got, 1], keys[got, 2], mask)
        while table[slot] >= 0:
            slot = (slot + 1) & mask
        table[slot] = got


def decode_batch(batch: FrameBatch, decoder: Decoder | None = None) -> pd.DataFrame:
    """Decode one frame batch into a packet-table DataFrame (live capture uses this)."""
    decoder = decoder or Decoder()
    store = ColumnStore(len(batch))
    decoder.decode_into(batch, store)
    return to_frame(store)
