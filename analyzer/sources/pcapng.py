"""pcapng framing (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html).

Blocks are ``type, total_length, body, total_length``. Packet blocks (EPB 6, SPB 3, obsolete
Packet Block 2) are walked compiled; Section Header (SHB) and Interface Description (IDB) blocks stop
the walk so that Python can read them (they change the byte order, link types and time resolution).
Every other block type is skipped. Each section may have its own byte order and interfaces.
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

WALK_OK = 0  # end of data or max_records reached
WALK_BAD_LENGTH = 1  # impossible block length
WALK_PYTHON = 2  # stopped at an SHB or IDB: Python reads it
WALK_BAD_PACKET = 3  # packet block whose captured length does not fit the block


@dataclass
class Interface:
    linktype: int
    snaplen: int
    tsresol: int = 6  # raw if_tsresol byte: MSB clear = 10^-n, MSB set = 2^-n
    tsoffset: int = 0  # seconds

    def to_ns(self, raw: np.ndarray) -> np.ndarray:
        """Convert raw 64-bit timestamps of this interface to integer nanoseconds."""
        raw = raw.astype(np.int64)
        n = self.tsresol & 0x7F
        if self.tsresol & 0x80:
            sec = raw >> n
            frac = raw & ((1 << n) - 1)
            ns = sec * 1_000_000_000 + ((frac * 1_000_000_000) >> n if n <= 33 else
                                         (frac >> (n - 30)) * 1_000_000_000 >> 30)
        elif n <= 9:
            ns = raw * (10 ** (9 - n))
        else:
            ns = raw // (10 ** (n - 9))
        return ns + self.tsoffset * 1_000_000_000


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


@njit(cache=True, nogil=True, _nrt=False)
def walk_pcapng_blocks(buf, pos, end, big, max_records,
                       out_off, out_cap, out_wire, out_ts, out_iface):
    """Walk blocks in ``buf[pos:end]``; returns (records, next_pos, status).

    ``out_ts`` receives raw 64-bit timestamps (units depend on the interface), -1 for SPBs.
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
            out_iface[n] = iface
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
            out_iface[n] = 0
            n += 1
        pos += blen
    return n, pos, status
