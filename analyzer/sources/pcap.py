"""Classic pcap framing (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html).

File header (24 bytes): magic, version 2.4, thiszone, sigfigs, snaplen, linktype.
Record header (16 bytes): ts_sec, ts_frac (µs or ns by magic), caplen, wirelen, then caplen bytes.

The record walk is the one inherently sequential step of reading (each length says where the next
record starts), so it runs compiled (numba) over the raw bytes and returns arrays of offsets.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..jit import njit

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_FILE_HEADER_LEN = 24
PCAP_RECORD_HEADER_LEN = 16
# Wireshark refuses records above 256 KiB (WTAP_MAX_PACKET_SIZE_STANDARD); we allow a little more
# (some writers use 1 MiB snaplens for loopback TSO frames) and call anything larger impossible.
PCAP_MAX_CAPLEN = 1 << 20

WALK_OK = 0  # stopped at the end of the data or after max_records
WALK_BAD_LENGTH = 1  # a record header holds an impossible length


@dataclass
class PcapHeader:
    big_endian: bool
    nanoseconds: bool
    snaplen: int
    linktype: int
    version: tuple[int, int]


def parse_pcap_header(head: bytes) -> PcapHeader | None:
    """Parse the 24-byte file header; None when the magic is not pcap's."""
    if len(head) < 4:
        return None
    for endian, big in (("<", False), (">", True)):
        (magic,) = struct.unpack(endian + "I", head[:4])
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            if len(head) < PCAP_FILE_HEADER_LEN:
                return PcapHeader(big, magic == PCAP_MAGIC_NS, 0, -1, (0, 0))
            vmaj, vmin, _zone, _sig, snaplen, linktype = struct.unpack(endian + "HHiIII", head[4:24])
            # The upper 16 bits of the link type field carry FCS info (pcap draft, section 4).
            return PcapHeader(big, magic == PCAP_MAGIC_NS, snaplen, linktype & 0x0FFFFFFF, (vmaj, vmin))
    return None


@njit(cache=True, nogil=True, _nrt=False)
def u16(buf, pos, big):
    if big:
        return (np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1])
    return (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos])


@njit(cache=True, nogil=True, _nrt=False)
def u32(buf, pos, big):
    if big:
        return ((np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16)
                | (np.int64(buf[pos + 2]) << 8) | np.int64(buf[pos + 3]))
    return ((np.int64(buf[pos + 3]) << 24) | (np.int64(buf[pos + 2]) << 16)
            | (np.int64(buf[pos + 1]) << 8) | np.int64(buf[pos]))


@njit(cache=True, nogil=True, _nrt=False)
def walk_pcap_records(buf, pos, end, big, max_records, max_caplen, nanos,
                      out_off, out_cap, out_wire, out_ts):
    """Walk whole records in ``buf[pos:end]``; returns (records, next_pos, status)."""
    n = 0
    status = WALK_OK
    scale = 1 if nanos else 1000
    while n < max_records and pos + 16 <= end:
        cap = u32(buf, pos + 8, big)
        if cap > max_caplen:
            status = WALK_BAD_LENGTH
            break
        if pos + 16 + cap > end:
            break
        sec = u32(buf, pos, big)
        frac = u32(buf, pos + 4, big)
        out_off[n] = pos + 16
        out_cap[n] = cap
        out_wire[n] = u32(buf, pos + 12, big)
        out_ts[n] = sec * 1_000_000_000 + frac * scale
        n += 1
        pos += 16 + cap
    return n, pos, status
