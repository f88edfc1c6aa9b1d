"""Writers for synthetic pcap and pcapng files, every variant the reader must handle.

Independent of the code under test: built from the format specifications with ``struct``.
"""
from __future__ import annotations

import gzip
import struct

MAGIC_US, MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D


def pcap(frames: list[tuple[int, bytes]], linktype: int = 1, big: bool = False, nanos: bool = False,
         snaplen: int = 65535, wirelens: list[int] | None = None) -> bytes:
    """frames: (ts_ns, bytes). Timestamps are cut to µs unless ``nanos``."""
    e = ">" if big else "<"
    out = [struct.pack(e + "IHHiIII", MAGIC_NS if nanos else MAGIC_US, 2, 4, 0, 0, snaplen, linktype)]
    for k, (ts, data) in enumerate(frames):
        sec, frac = divmod(ts, 1_000_000_000)
        if not nanos:
            frac //= 1000
        wire = wirelens[k] if wirelens else len(data)
        out.append(struct.pack(e + "IIII", sec, frac, len(data), wire) + data)
    return b"".join(out)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(e + "II", btype, length) + body + struct.pack(e + "I", length)


def _opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(big: bool = False) -> bytes:
    e = ">" if big else "<"
    return _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(linktype: int = 1, big: bool = False, tsresol: int | None = None, tsoffset: int | None = None,
        snaplen: int = 0) -> bytes:
    e = ">" if big else "<"
    opts = b""
    if tsresol is not None:
        opts += _opt(e, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += _opt(e, 14, struct.pack(e + "q", tsoffset))
    if opts:
        opts += _opt(e, 0, b"")
    return _block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts)


def epb(data: bytes, ts_units: int, iface: int = 0, big: bool = False, wirelen: int | None = None) -> bytes:
    e = ">" if big else "<"
    body = struct.pack(e + "IIIII", iface, ts_units >> 32, ts_units & 0xFFFFFFFF, len(data),
                       len(data) if wirelen is None else wirelen) + data
    return _block(e, 6, body)


def spb(data: bytes, big: bool = False) -> bytes:
    e = ">" if big else "<"
    return _block(e, 3, struct.pack(e + "I", len(data)) + data)


def opb(data: bytes, ts_units: int, iface: int = 0, big: bool = False) -> bytes:
    e = ">" if big else "<"
    body = struct.pack(e + "HHIIII", iface, 0, ts_units >> 32, ts_units & 0xFFFFFFFF, len(data), len(data)) + data
    return _block(e, 2, body)


def unknown_block(big: bool = False, btype: int = 0x0BAD) -> bytes:
    return _block(">" if big else "<", btype, b"some custom block payload")


def gz(data: bytes) -> bytes:
    return gzip.compress(data)
