"""pcapng framing (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html).

Blocks are ``type, total_length, body, total_length``. Packet blocks (EPB 6, SPB 3, obsolete
Packet Block 2) are walked compiled; Section Header (SHB) and Interface Description (IDB) blocks stop
the walk so that Python can read them (they change the byte order, link types and clocks), and the
walk goes on after them. Every other block type is skipped. Each section may have its own byte order
and interfaces; the walk numbers interfaces across sections, frames show the number within theirs
(as tshark's ``frame.interface_id``).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..jit import njit
from .pcap import u16, u32

PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_OPB = 0x00000002  # obsolete Packet Block
PCAPNG_SPB = 0x00000003
PCAPNG_EPB = 0x00000006
PCAPNG_BOM = 0x1A2B3C4D
PCAPNG_MAX_BLOCK = 1 << 26  # 64 MiB: anything larger is an impossible block length

IDB_OPT_TSRESOL = 9
IDB_OPT_TSOFFSET = 14
MAX_INTERFACES = 1 << 15  # interfaces described per file; the packet table's interface column is int16

NS_PER_S = 1_000_000_000
# Times are kept within +-2^62 ns of the epoch (years 1823 to 2116), so that any two still subtract
# within int64; an absurd if_tsresol or if_tsoffset that goes beyond is clamped there (and reported).
TS_NS_LIMIT = 1 << 62
U64_MAX = (1 << 64) - 1

WALK_OK = 0  # end of data or max_records reached
WALK_BAD_LENGTH = 1  # impossible block length
WALK_PYTHON = 2  # stopped at an SHB or IDB: Python reads it
WALK_BAD_PACKET = 3  # packet block whose captured length does not fit the block
NO_INTERFACE = -1  # walk output for a packet naming an interface its section never described


@dataclass
class Interface:
    """One Interface Description Block: link type, snaplen and clock (if_tsresol, if_tsoffset)."""

    linktype: int
    snaplen: int
    tsresol: int = 6  # raw if_tsresol byte: MSB clear = 10^-n s, MSB set = 2^-n s (n = low 7 bits)
    tsoffset: int = 0  # seconds added to every time (if_tsoffset, signed)
    where: int = 0  # offset of the block in the capture, for messages
    number: int = 0  # interface id within its section

    def clock_text(self) -> str:
        base = 2 if self.tsresol & 0x80 else 10
        return f"if_tsresol {base}^-{self.tsresol & 0x7F} s, if_tsoffset {self.tsoffset} s"

    def to_ns(self, raw: np.ndarray) -> tuple[np.ndarray, int]:
        """Raw 64-bit timestamps -> integer ns since the epoch: floor(ticks * 10^9 / units per second)
        + if_tsoffset, exact for every if_tsresol (integers only: a float has 53 bits, times need 64).

        Times beyond +-``TS_NS_LIMIT`` are clamped to it; returns (times, how many were clamped).
        """
        ticks = np.asarray(raw, dtype=np.int64).view(np.uint64)  # the counter is unsigned 64-bit
        n = self.tsresol & 0x7F
        per_second = (2 if self.tsresol & 0x80 else 10) ** n
        offset = self.tsoffset * NS_PER_S
        # counts whose time (before the offset) is above ``top`` or below ``bottom`` are clamped
        top, bottom = TS_NS_LIMIT - offset, -TS_NS_LIMIT - offset
        last = ((top + 1) * per_second - 1) // NS_PER_S if top >= 0 else -1  # floor(t*1e9/per) <= top
        first = -(-bottom * per_second // NS_PER_S) if bottom > 0 else 0  # floor(t*1e9/per) >= bottom
        high = ticks > np.uint64(last) if 0 <= last < U64_MAX else np.full(len(ticks), last < 0)
        low = ticks < np.uint64(first) if first <= U64_MAX else np.ones(len(ticks), bool)
        # In between, the result fits int64, so arithmetic modulo 2^64 gives it exactly.
        ns = _binary_ticks_to_ns(ticks, n) if self.tsresol & 0x80 else _decimal_ticks_to_ns(ticks, n)
        ns = (ns + np.uint64(offset % (1 << 64))).view(np.int64)
        ns[high] = TS_NS_LIMIT
        ns[low] = -TS_NS_LIMIT
        return ns, int(np.count_nonzero(high | low))


def _decimal_ticks_to_ns(ticks: np.ndarray, n: int) -> np.ndarray:
    """floor(ticks * 10^9 / 10^n) modulo 2^64, as uint64."""
    if n <= 9:
        return ticks * np.uint64(10 ** (9 - n))
    if 10 ** (n - 9) > U64_MAX:
        return np.zeros_like(ticks)
    return ticks // np.uint64(10 ** (n - 9))


def _binary_ticks_to_ns(ticks: np.ndarray, n: int) -> np.ndarray:
    """floor(ticks * 10^9 / 2^n) modulo 2^64, as uint64, for any n (the 94-bit product is never formed:
    the fraction is split in 32-bit halves)."""
    if n < 64:
        sec, frac = ticks >> np.uint64(n), ticks & np.uint64((1 << n) - 1)
    else:
        sec, frac = np.zeros_like(ticks), ticks
    if n <= 34:  # frac < 2^34, so frac * 10^9 < 2^64
        part = (frac * np.uint64(NS_PER_S)) >> np.uint64(n)
    else:
        # frac * 1e9 = hi * 1e9 * 2^32 + lo * 1e9; the low 32 bits of the sum never reach the result
        hi, lo = frac >> np.uint64(32), frac & np.uint64(0xFFFFFFFF)
        carry = hi * np.uint64(NS_PER_S) + ((lo * np.uint64(NS_PER_S)) >> np.uint64(32))
        part = carry >> np.uint64(n - 32) if n - 32 < 64 else np.zeros_like(ticks)
    return sec * np.uint64(NS_PER_S) + part


def parse_shb(block: bytes) -> tuple[bool, int] | None:
    """Byte order and total length of a Section Header Block; None when the BOM is wrong."""
    if len(block) < 12:
        return None
    for endian, big in (("<", False), (">", True)):
        (bom,) = struct.unpack(endian + "I", block[8:12])
        if bom == PCAPNG_BOM:
            (length,) = struct.unpack(endian + "I", block[4:8])
            return big, length
    return None


def parse_idb(block: bytes, big: bool) -> Interface:
    """Read link type, snaplen, if_tsresol and if_tsoffset from an Interface Description Block."""
    e = ">" if big else "<"
    (length,) = struct.unpack(e + "I", block[4:8])
    linktype, _reserved, snaplen = struct.unpack(e + "HHI", block[8:16])
    iface = Interface(linktype=linktype, snaplen=snaplen)
    pos, end = 16, min(length - 4, len(block))
    while pos + 4 <= end:
        code, olen = struct.unpack(e + "HH", block[pos:pos + 4])
        if code == 0:
            break
        value = block[pos + 4:pos + 4 + olen]
        if code == IDB_OPT_TSRESOL and olen >= 1:
            iface.tsresol = value[0]
        elif code == IDB_OPT_TSOFFSET and olen >= 8:
            (iface.tsoffset,) = struct.unpack(e + "q", value[:8])
        pos += 4 + ((olen + 3) & ~3)
    return iface


class InterfaceTable:
    """The interfaces described so far, numbered across sections, and what a frame takes from its
    interface: link type, id within the section, snaplen (for SPBs) and clock."""

    def __init__(self) -> None:
        self.interfaces: list[Interface] = []
        self.section_first = 0  # id of the current section's first interface
        self._clocks: dict[tuple[int, int], int] = {}  # (tsresol, tsoffset) -> clock id
        self._columns = tuple(np.empty(0, np.int64) for _ in range(4))

    def new_section(self) -> None:
        self.section_first = len(self.interfaces)

    @property
    def in_section(self) -> int:
        """Interfaces the current section has described (the packet walk's ``n_ifaces``)."""
        return len(self.interfaces) - self.section_first

    def add(self, iface: Interface) -> bool:
        """Describe one more interface; False when ``MAX_INTERFACES`` are described already."""
        if len(self.interfaces) >= MAX_INTERFACES:
            return False
        iface.number = self.in_section
        self.interfaces.append(iface)
        self._clocks.setdefault((iface.tsresol, iface.tsoffset), len(self.interfaces) - 1)
        return True

    def resolve(self, ids: np.ndarray, raw_ts: np.ndarray, caplens: np.ndarray):
        """Per frame of walk output: link type (-1 without an interface), interface id within the section
        and time in ns; SPB captured lengths are cut to their interface's snaplen in place. Also returns
        the first interface of each clock that had times clamped (``Interface.to_ns``)."""
        linktype, number, snaplen, clock = self._lookup()
        known = ids >= 0
        at = np.where(known, ids, 0)
        if not len(linktype):
            return np.full(len(ids), -1, np.int32), ids.astype(np.int16), np.zeros(len(ids), np.int64), []
        ts_ns = np.zeros(len(ids), np.int64)  # simple packet blocks (raw -1) carry no time
        timed = known & (raw_ts != -1)
        spb = known & (raw_ts == -1)
        if spb.any():
            limit = snaplen[at[spb]]
            caplens[spb] = np.where(limit > 0, np.minimum(caplens[spb], limit), caplens[spb])
        clamped = []
        for c in np.unique(clock[at[timed]]).tolist():
            sel = timed & (clock[at] == c)
            ts_ns[sel], n = self.interfaces[c].to_ns(raw_ts[sel])
            if n:
                clamped.append(c)
        return (np.where(known, linktype[at], -1).astype(np.int32), np.where(known, number[at], -1).astype(np.int16),
                ts_ns, clamped)

    def _lookup(self) -> tuple[np.ndarray, ...]:
        if len(self._columns[0]) != len(self.interfaces):
            self._columns = tuple(np.array(column, np.int64) for column in zip(
                *((i.linktype, i.number, i.snaplen, self._clocks[i.tsresol, i.tsoffset]) for i in self.interfaces)))
        return self._columns


@njit(cache=True, nogil=True, _nrt=False)
def walk_pcapng_blocks(buf, pos, end, big, max_records, first_iface, n_ifaces,
                       out_off, out_cap, out_wire, out_ts, out_iface):
    """Walk blocks in ``buf[pos:end]``; returns (records, next_pos, status).

    The section's interfaces are numbered ``first_iface`` to ``first_iface + n_ifaces - 1`` in
    ``out_iface`` (``NO_INTERFACE`` for a packet naming another). ``out_ts`` receives raw 64-bit
    timestamps (units depend on the interface), -1 for SPBs.
    """
    n = 0
    status = WALK_OK
    while n < max_records and pos + 12 <= end:
        btype = u32(buf, pos, big)
        if btype == PCAPNG_SHB or btype == PCAPNG_IDB:
            status = WALK_PYTHON
            break
        blen = u32(buf, pos + 4, big)
        if blen < 12 or (blen & 3) != 0 or blen > PCAPNG_MAX_BLOCK:
            status = WALK_BAD_LENGTH
            break
        if pos + blen > end:
            break
        if btype == PCAPNG_EPB or btype == PCAPNG_OPB:
            if blen < 32:
                status = WALK_BAD_PACKET
                break
            if btype == PCAPNG_EPB:
                iface = u32(buf, pos + 8, big)
            else:
                iface = u16(buf, pos + 8, big)
            cap = u32(buf, pos + 20, big)
            if 28 + cap + 4 > blen:
                status = WALK_BAD_PACKET
                break
            out_off[n] = pos + 28
            out_cap[n] = cap
            out_wire[n] = u32(buf, pos + 24, big)
            out_ts[n] = (u32(buf, pos + 12, big) << 32) | u32(buf, pos + 16, big)
            out_iface[n] = first_iface + iface if iface < n_ifaces else NO_INTERFACE
            n += 1
        elif btype == PCAPNG_SPB:
            if blen < 16:
                status = WALK_BAD_PACKET
                break
            wire = u32(buf, pos + 8, big)
            cap = min(wire, blen - 16)
            out_off[n] = pos + 12
            out_cap[n] = cap
            out_wire[n] = wire
            out_ts[n] = -1
            out_iface[n] = first_iface if n_ifaces > 0 else NO_INTERFACE  # an SPB is on interface 0
            n += 1
        pos += blen
    return n, pos, status
