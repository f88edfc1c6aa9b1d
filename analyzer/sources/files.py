"""Capture files to frame batches: format by magic number, gzip, chunked reads, damage handling.

``FrameSource(path).batches(batch_size)`` yields ``FrameBatch`` objects. Memory stays flat: the file
is read in chunks and each batch references only its own chunk. Damage (a truncated file, an
impossible length) ends the reading with one line in ``problems``; every frame before it is kept.
"""
from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from ..errors import CaptureError
from . import pcap, pcapng
from .frames import FrameBatch

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 2 << 20  # read granularity: small enough that a piece is decoded while cached


def _open(path_or_file) -> tuple[BinaryIO, str, bool]:
    """Open a path or take a file object; transparently gunzip. Returns (file, name, owned)."""
    if hasattr(path_or_file, "read"):
        f, name, owned = path_or_file, getattr(path_or_file, "name", "<stream>"), False
    else:
        name = os.fspath(path_or_file)
        try:
            f = open(name, "rb")
        except OSError as exc:
            raise CaptureError(name, None, f"cannot open: {exc.strerror or exc}") from None
        owned = True
    head = _peek(f, 2)
    if head == GZIP_MAGIC:
        f = gzip.GzipFile(fileobj=f, mode="rb")
    return f, str(name), owned


def _peek(f: BinaryIO, n: int) -> bytes:
    if hasattr(f, "peek"):
        return f.peek(n)[:n]
    pos = f.tell()
    data = f.read(n)
    f.seek(pos)
    return data


class FrameSource:
    """Reads a pcap or pcapng file (optionally gzip-compressed) as frame batches."""

    def __init__(self, path_or_file):
        self.file, self.name, self._owned = _open(path_or_file)
        self.problems: list[str] = []
        self.frames = 0  # frames read so far (= last frame number)
        self.bytes_read = 0
        self._arr = np.empty(0, dtype=np.uint8)
        self._lo = self._hi = 0
        self._eof = False
        self._buf_base = 0  # file offset of self._buf[0]
        try:
            self._read_file_header()
        except BaseException:
            self.close()
            raise

    def _read_file_header(self) -> None:
        head = self._need(24)
        if len(head) < 4:
            raise CaptureError(self.name, 0, "not a capture file (empty or shorter than a file header)")
        self.pcap_header = pcap.parse_pcap_header(head)
        if self.pcap_header is not None:
            self.format = "pcap"
            if len(head) < pcap.PCAP_FILE_HEADER_LEN:
                raise CaptureError(self.name, len(head), "truncated pcap file header")
            self._drop(pcap.PCAP_FILE_HEADER_LEN)
        elif head[:4] == b"\x0a\x0d\x0d\x0a":
            self.format = "pcapng"
            self.big = False
            self.interfaces: list[pcapng.Interface] = []
        else:
            raise CaptureError(self.name, 0, f"not a pcap or pcapng file (magic {head[:4].hex()})")

    def file_size(self) -> int | None:
        """Size of a plain file being read (None for gzip and streams)."""
        if isinstance(self.file, gzip.GzipFile):
            return None
        try:
            return os.fstat(self.file.fileno()).st_size
        except (AttributeError, OSError, ValueError):
            return None
        except Exception:  # io.UnsupportedOperation from in-memory streams
            return None

    # -- buffer management -------------------------------------------------------------------
    # One reusable byte buffer: valid bytes are _arr[_lo:_hi]. A batch's data points into it, so
    # a batch must be decoded before the next one is requested (every consumer here does that).
    @property
    def _buf(self) -> np.ndarray:
        return self._arr[self._lo:self._hi]

    def _fill(self, want: int) -> None:
        have = self._hi - self._lo
        if have >= want or self._eof:
            return
        need = max(want, have + CHUNK_BYTES)
        if len(self._arr) < need:
            arr = np.empty(need, dtype=np.uint8)
            arr[:have] = self._arr[self._lo:self._hi]
            self._arr = arr
        elif self._lo:
            self._arr[:have] = self._arr[self._lo:self._hi]
        self._lo, self._hi = 0, have
        view = memoryview(self._arr)
        while self._hi < need and not self._eof:
            try:
                got = self.file.readinto(view[self._hi:need])
            except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
                self._eof = True
                self._problem(self._buf_base + self._hi - self._lo, f"read error: {exc}")
                break
            if not got:
                self._eof = True
                break
            self.bytes_read += got
            self._hi += got
            if self._hi - self._lo >= want:
                break

    def _need(self, n: int) -> bytes:
        self._fill(n)
        return bytes(self._buf[:n])

    def _drop(self, n: int) -> None:
        self._lo += n
        self._buf_base += n

    def _problem(self, offset: int, text: str) -> None:
        self.problems.append(f"{self.name} at offset {offset}: {text}")

    def close(self) -> None:
        if self._owned:
            self.file.close()

    # -- batches -------------------------------------------------------------------------------
    def batches(self, batch_size: int | Callable[[], int] = 262_144) -> Iterator[FrameBatch]:
        """Yield frame batches of at most ``batch_size`` frames (a number, or a function asked
        before each batch)."""
        limit = batch_size if callable(batch_size) else (lambda: batch_size)
        try:
            walk = self._walk_pcap if self.format == "pcap" else self._walk_pcapng
            while True:
                batch = walk(max(1, limit()))
                if batch is None:
                    break
                if len(batch):
                    yield batch
        finally:
            self.close()

    def _alloc(self, n: int):
        return (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64),
                np.empty(n, np.int64), np.empty(n, np.int64))

    def _walk_pcap(self, batch_size: int) -> FrameBatch | None:
        h = self.pcap_header
        max_cap = max(pcap.PCAP_MAX_CAPLEN, h.snaplen if h.snaplen < (1 << 28) else 0)
        want = 1  # read more only when the buffer holds no whole record
        while True:
            self._fill(want)
            if not len(self._buf):
                return None
            arr = self._buf
            off, cap, wire, ts, _ = self._alloc(min(batch_size, len(arr) // 16 + 1))
            n, pos, status = pcap.walk_pcap_records(arr, 0, len(arr), h.big_endian, len(off), max_cap,
                                                    h.nanoseconds, off, cap, wire, ts)
            if n:
                batch = self._make_batch(arr, off[:n], cap[:n], wire[:n], ts[:n],
                                         np.full(n, h.linktype, np.int32), np.zeros(n, np.int16))
                self._drop(pos)
                return batch
            where = self._buf_base + pos
            if status == pcap.WALK_BAD_LENGTH:
                bad = pcap.u32(arr, pos + 8, h.big_endian)
                self._problem(where, f"impossible record length {bad} (after frame {self.frames}); "
                                     "the rest of the file is not read")
                return None
            if self._eof:
                self._problem(where, f"truncated record: file ends {len(arr) - pos} bytes into frame "
                                     f"{self.frames + 1}")
                return None
            want = len(self._buf) + 1  # the next record is not whole yet: read another chunk

    def _walk_pcapng(self, batch_size: int) -> FrameBatch | None:
        want = 1  # read more only when the buffer holds no whole record
        while True:
            self._fill(want)
            if not len(self._buf):
                return None
            arr = self._buf
            off, cap, wire, ts, iface = self._alloc(min(batch_size, len(arr) // 12 + 1))
            n, pos, status = pcapng.walk_pcapng_blocks(arr, 0, len(arr), self.big, len(off),
                                                       off, cap, wire, ts, iface)
            if n:
                batch = self._pcapng_batch(arr, off[:n], cap[:n], wire[:n], ts[:n], iface[:n])
                self._drop(pos)
                return batch
            self._drop(pos)
            where = self._buf_base
            if status == pcapng.WALK_PYTHON:
                if not self._read_section_block():
                    return None
                want = 1  # read more only when the buffer holds no whole record
                continue
            if status == pcapng.WALK_BAD_LENGTH:
                self._problem(where, f"impossible block length (after frame {self.frames}); "
                                     "the rest of the file is not read")
                return None
            if status == pcapng.WALK_BAD_PACKET:
                self._problem(where, f"packet block too short for its captured length (frame "
                                     f"{self.frames + 1}); the rest of the file is not read")
                return None
            if self._eof:
                if len(self._buf):
                    self._problem(where, f"truncated block: file ends {len(self._buf)} bytes into "
                                         f"a block (after frame {self.frames})")
                return None
            want = len(self._buf) + 1

    def _read_section_block(self) -> bool:
        """Read the SHB or IDB at the start of the buffer. False when the file cannot go on."""
        head = self._need(12)
        where = self._buf_base
        if len(head) < 12:
            self._problem(where, "truncated block header")
            return False
        if head[:4] == b"\x0a\x0d\x0d\x0a":
            shb = pcapng.parse_shb(head)
            if shb is None:
                self._problem(where, "section header block with a bad byte-order magic")
                return False
            self.big, length = shb
            self.interfaces = []
        else:
            length = int.from_bytes(head[4:8], "big" if self.big else "little")
        if length < 12 or length % 4 or length > pcapng.PCAPNG_MAX_BLOCK:
            self._problem(where, f"impossible block length {length}")
            return False
        block = self._need(length)
        if len(block) < length:
            self._problem(where, f"truncated block: file ends {len(block)} bytes into a {length}-byte block")
            return False
        if head[:4] != b"\x0a\x0d\x0d\x0a":
            try:
                self.interfaces.append(pcapng.parse_idb(block, self.big))
            except Exception:  # noqa: BLE001 - any damage inside an IDB is the same problem
                self._problem(where, "malformed interface description block")
                return False
        self._drop(length)
        return True

    def _pcapng_batch(self, arr, off, cap, wire, ts, iface) -> FrameBatch:
        n = len(off)
        linktypes = np.full(n, -1, np.int32)  # -1: frame names an interface that was never described
        ts_ns = np.zeros(n, np.int64)
        for i, itf in enumerate(self.interfaces):
            sel = iface == i
            if not sel.any():
                continue
            linktypes[sel] = itf.linktype
            ts_ns[sel] = itf.to_ns(ts[sel])
            if itf.snaplen:
                spb = sel & (ts == -1)
                cap[spb] = np.minimum(cap[spb], itf.snaplen)
        ts_ns[ts == -1] = 0  # simple packet blocks carry no time
        return self._make_batch(arr, off, cap, wire, ts_ns, linktypes, iface.astype(np.int16))

    def _make_batch(self, arr, off, cap, wire, ts_ns, linktypes, ifaces) -> FrameBatch:
        batch = FrameBatch(
            data=arr, offsets=off, caplens=cap.astype(np.int32),
            wirelens=np.maximum(wire, cap).astype(np.int32), ts_ns=ts_ns, linktypes=linktypes,
            interfaces=ifaces, first_frame=self.frames + 1,
        )
        self.frames += len(off)
        return batch


def frame_batches(path_or_file, batch_size: int = 262_144) -> Iterator[FrameBatch]:
    """Yield frame batches of a capture; damage notes are attached to the last batch's problems."""
    src = FrameSource(path_or_file)
    yield from src.batches(batch_size)

