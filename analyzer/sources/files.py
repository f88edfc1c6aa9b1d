"""Capture files to frame batches: format by magic number, gzip, chunked reads, damage handling.

``FrameSource(path).batches(batch_size)`` yields ``FrameBatch`` objects. Memory stays flat: the file
is read in chunks and each batch references only its own chunk. Reading only goes forward (no seek), so
a pipe works as well as a file: the path ``-`` is standard input (``tcpdump -w - | ...``, ``zcat x.gz |``),
gzip included. Damage (a truncated file, an
impossible length, a cut or corrupt gzip stream, a read error) ends the reading with one line in
``problems``; every frame before it is kept.
"""
from __future__ import annotations

import io
import os
import sys
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from ..errors import CaptureError
from . import pcap, pcapng
from .frames import FrameBatch

GZIP_MAGIC = b"\x1f\x8b"
GZIP_WBITS = 31  # zlib: a gzip stream (RFC 1952), its CRC-32 and length checked at the end
GZIP_STEP = 1 << 16  # compressed bytes inflated per call
CHUNK_BYTES = 2 << 20  # read granularity: small enough that a piece is decoded while cached
STDIN = "-"  # the path that means standard input (as tcpdump -r -)
STDIN_NAME = "stdin"  # how standard input is named in messages, summaries and output folders
CAPTURE_MAGICS = {m.to_bytes(4, order) for m in (pcap.PCAP_MAGIC_US, pcap.PCAP_MAGIC_NS)
                  for order in ("little", "big")} | {pcapng.PCAPNG_SHB.to_bytes(4, "big")}


class Gunzip(io.RawIOBase):
    """Reads a gzip file (RFC 1952, any number of members) as its decompressed bytes, keeping every
    byte zlib can give before damage: a cut file, a corrupt block or a failed CRC stop the stream
    there and leave one line in ``damage``."""

    def __init__(self, raw: BinaryIO, head: bytes = b""):
        self.raw = raw
        self.damage: str | None = None
        self._z = zlib.decompressobj(GZIP_WBITS)
        self._input = head  # compressed bytes not yet given to zlib (``head``: read from ``raw`` already)
        self._taken = 0  # compressed bytes given to zlib so far
        self._pending = b""  # decompressed bytes not yet read (after damage)
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        view = memoryview(b).cast("B")
        while not self._pending and not self._done:
            out = self._inflate(len(view))
            if out:
                view[:len(out)] = out
                return len(out)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _inflate(self, limit: int) -> bytes:
        if self._z.eof and not self._next_member():
            return b""
        if not self._input:
            self._input = self.raw.read(GZIP_STEP)
            if not self._input:
                try:
                    self._pending = self._z.flush()  # what the last bytes give
                except zlib.error:
                    self._pending = b""
                self._stop(f"gzip data ends early (the file is cut {self._taken} compressed bytes in)")
                return b""
        before, data = self._z.copy(), self._input
        try:
            out = self._z.decompress(data, limit)
        except zlib.error as exc:
            self._pending, bad = _inflate_until_error(before, data)
            self._stop(f"gzip data damaged at compressed byte {self._taken + bad}: {exc}")
            return b""
        self._input = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
        self._taken += len(data) - len(self._input)
        return out

    def _next_member(self) -> bool:
        """After a member's end: start the next one (False at the end of the file; zero padding is skipped)."""
        while not self._input.lstrip(b"\0"):
            self._taken += len(self._input)
            self._input = self.raw.read(GZIP_STEP)
            if not self._input:
                self._done = True
                return False
        stripped = self._input.lstrip(b"\0")
        self._taken += len(self._input) - len(stripped)
        self._input = stripped
        self._z = zlib.decompressobj(GZIP_WBITS)
        return True

    def _stop(self, damage: str) -> None:
        self.damage, self._done = damage, True


def _inflate_until_error(z, data: bytes) -> tuple[bytes, int]:
    """Feed ``data`` to ``z`` byte by byte: everything it decodes before the error, and where it is."""
    out = []
    for at in range(len(data)):
        try:
            out.append(z.decompress(data[at:at + 1]))
        except zlib.error:
            return b"".join(out), at
    return b"".join(out), len(data)


def capture_name(path_or_file) -> str:
    """How a capture is named in messages: its path as given, ``stdin`` for ``-``, a file object's name."""
    if hasattr(path_or_file, "read"):
        return str(getattr(path_or_file, "name", "<stream>"))
    path = os.fspath(path_or_file)
    return STDIN_NAME if path == STDIN else path


def _open(path_or_file) -> tuple[BinaryIO, BinaryIO, bytes, str, bool]:
    """Open a path (``-``: standard input) or take a file object; gunzip when it starts with gzip's magic.

    Returns (reader, file, head, name, owned): the capture is ``head`` (its first bytes, read already)
    then what ``reader`` gives (the file itself, or a ``Gunzip`` of it). A path is read unbuffered, one
    system call per read, so that the bytes read before a read error are kept. A file that cannot be
    opened or read: ``CaptureError``.
    """
    name = capture_name(path_or_file)
    if hasattr(path_or_file, "read"):
        f, owned = path_or_file, False
    elif os.fspath(path_or_file) == STDIN:
        f, owned = open(sys.stdin.fileno(), "rb", buffering=0, closefd=False), True  # fd 0 stays open
    else:
        try:
            f = open(name, "rb", buffering=0)
        except OSError as exc:
            raise CaptureError(name, None, f"cannot open: {exc.strerror or exc}") from None
        owned = True
    try:
        head = _read_exactly(f, len(GZIP_MAGIC))
    except OSError as exc:
        if owned:
            f.close()
        raise CaptureError(name, 0, f"cannot read: {exc.strerror or exc}") from None
    if head == GZIP_MAGIC:
        return Gunzip(f, head), f, b"", name, owned
    return f, f, head, name, owned


def sniff_capture(path: str) -> bool:
    """Whether the file at ``path`` starts as a pcap or pcapng file does (through gzip too); reads a few bytes."""
    try:
        reader, f, head, _, _ = _open(path)
    except CaptureError:
        return False
    try:
        return head + _read_exactly(reader, 4 - len(head)) in CAPTURE_MAGICS
    except OSError:
        return False
    finally:
        f.close()


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the file): pipes and raw files may return less per read."""
    data = b""
    while len(data) < n:
        more = f.read(n - len(data))
        if not more:
            break
        data += more
    return data


class FrameSource:
    """Reads a pcap or pcapng file (optionally gzip-compressed) as frame batches; ``chunk_bytes``: how much
    is read at a time (less to look at a file's first frames only)."""

    def __init__(self, path_or_file, chunk_bytes: int = CHUNK_BYTES):
        self._chunk = chunk_bytes
        self.file, self._raw, head, self.name, self._owned = _open(path_or_file)
        self.problems: list[str] = []
        self.frames = 0  # frames read so far (= last frame number)
        self.bytes_read = len(head)
        self._arr = np.frombuffer(head, dtype=np.uint8).copy()
        self._lo, self._hi = 0, len(head)
        self._eof = False
        self._cut: str | None = None  # why the data ended early (read error, gzip damage), once said
        self._buf_base = 0  # file offset of self._buf[0]
        try:
            self._read_file_header()
        except BaseException:
            self.close()
            raise

    def _read_file_header(self) -> None:
        head = self._need(24)
        if len(head) < 4:
            if self._cut:
                raise CaptureError(self.name, len(head), self._cut)
            raise CaptureError(self.name, 0, "not a capture file (empty or shorter than a file header)")
        self.pcap_header = pcap.parse_pcap_header(head)
        if self.pcap_header is not None:
            self.format = "pcap"
            if len(head) < pcap.PCAP_FILE_HEADER_LEN:
                raise CaptureError(self.name, len(head), self._cut or "truncated pcap file header")
            self._drop(pcap.PCAP_FILE_HEADER_LEN)
        elif head[:4] == b"\x0a\x0d\x0d\x0a":
            self.format = "pcapng"
            self.big = False
            self.interfaces = pcapng.InterfaceTable()
            self._said_full = False  # the interface limit was reported
            self._said_clock: set[int] = set()  # clocks whose clamped times were reported
        else:
            raise CaptureError(self.name, 0, f"not a pcap or pcapng file (magic {head[:4].hex()})")

    @property
    def big_endian(self) -> bool:
        """The byte order of the file (pcapng: of the section being read), which a BSD loopback header follows."""
        return self.pcap_header.big_endian if self.format == "pcap" else self.big

    def file_size(self) -> int | None:
        """Size of a plain file being read (None for gzip and streams)."""
        if isinstance(self.file, Gunzip):
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
        need = max(want, have + self._chunk)
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
            except OSError as exc:
                self._end_early(f"read error: {exc.strerror or exc}; the rest of the file is not read")
                break
            if not got:
                self._eof = True
                if getattr(self.file, "damage", None):
                    self._end_early(self.file.damage)
                break
            self.bytes_read += got
            self._hi += got
            if self._hi - self._lo >= want:
                break

    def _end_early(self, why: str) -> None:
        """The data ends here for a reason other than the file's end: say it once, at this offset."""
        self._eof = True
        self._cut = why
        self._problem(self._buf_base + self._hi - self._lo, why)

    def _need(self, n: int) -> bytes:
        self._fill(n)
        return bytes(self._buf[:n])

    def _drop(self, n: int) -> None:
        self._lo += n
        self._buf_base += n

    def _problem(self, offset: int, text: str) -> None:
        self.problems.append(f"{self.name} at offset {offset}: {text}")

    def _truncated(self, what: str) -> None:
        """The data ended inside a record or block: say so, unless the reason was said already."""
        if not self._cut:
            self._problem(self._buf_base, what)

    def close(self) -> None:
        if self._owned:
            self._raw.close()

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
            self._drop(pos)
            if status == pcap.WALK_BAD_LENGTH:
                bad = pcap.u32(arr, pos + 8, h.big_endian)
                self._problem(self._buf_base, f"impossible record length {bad} (after frame {self.frames}); "
                                              "the rest of the file is not read")
                return None
            if self._eof:
                self._truncated(f"truncated record: file ends {len(self._buf)} bytes into frame "
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
            n, pos, status, problem = self._walk_blocks(arr, off, cap, wire, ts, iface)
            if n:
                batch = self._pcapng_batch(arr, off[:n], cap[:n], wire[:n], ts[:n], iface[:n])
                self._drop(pos)
                return batch
            self._drop(pos)
            if problem:
                self._problem(self._buf_base, problem + f" (after frame {self.frames}); "
                                                        "the rest of the file is not read")
                return None
            if status == pcapng.WALK_BAD_LENGTH:
                self._problem(self._buf_base, f"impossible block length (after frame {self.frames}); "
                                              "the rest of the file is not read")
                return None
            if status == pcapng.WALK_BAD_PACKET:
                self._problem(self._buf_base, f"packet block too short for its captured length (frame "
                                              f"{self.frames + 1}); the rest of the file is not read")
                return None
            if self._eof:
                if len(self._buf):
                    self._truncated(f"truncated block: file ends {len(self._buf)} bytes into a block "
                                    f"(after frame {self.frames})")
                return None
            want = len(self._buf) + 1

    def _walk_blocks(self, arr, off, cap, wire, ts, iface) -> tuple[int, int, int, str | None]:
        """Walk packet blocks, reading the SHBs and IDBs met on the way, until the output arrays are full,
        the buffer holds no whole block or damage. Returns (frames, offset reached, walk status, problem)."""
        n = pos = 0
        while True:
            got, pos, status = pcapng.walk_pcapng_blocks(
                arr, pos, len(arr), self.big, len(off) - n, self.interfaces.section_first,
                self.interfaces.in_section, off[n:], cap[n:], wire[n:], ts[n:], iface[n:])
            n += got
            if status != pcapng.WALK_PYTHON:
                return n, pos, status, None
            used, problem = self._section_block(arr, pos)
            if not used:
                return n, pos, status, problem
            pos += used

    def _section_block(self, arr: np.ndarray, pos: int) -> tuple[int, str | None]:
        """Read the SHB or IDB at ``arr[pos:]``. Returns (its length, or 0 when it is not whole in the
        buffer or is damaged; the damage)."""
        if pos + 12 > len(arr):
            return 0, None
        head = bytes(arr[pos:pos + 12])
        is_shb = head[:4] == b"\x0a\x0d\x0d\x0a"
        if is_shb:
            shb = pcapng.parse_shb(head)
            if shb is None:
                return 0, "section header block with a bad byte-order magic"
            big, length = shb
        else:
            big, length = self.big, int.from_bytes(head[4:8], "big" if self.big else "little")
        if length < 12 or length % 4 or length > pcapng.PCAPNG_MAX_BLOCK:
            return 0, f"impossible block length {length}"
        if pos + length > len(arr):
            return 0, None
        if is_shb:
            self.big = big
            self.interfaces.new_section()
            return length, None
        try:
            iface = pcapng.parse_idb(bytes(arr[pos:pos + length]), big)
        except Exception:  # noqa: BLE001 - any damage inside an IDB is the same problem
            return 0, "malformed interface description block"
        iface.where = self._buf_base + pos
        if not self.interfaces.add(iface) and not self._said_full:
            self._said_full = True
            self._problem(iface.where, f"more than {pcapng.MAX_INTERFACES} interfaces: frames on the "
                                       "others are skipped")
        return length, None

    def _pcapng_batch(self, arr, off, cap, wire, ts, iface) -> FrameBatch:
        linktypes, numbers, ts_ns, clamped = self.interfaces.resolve(iface, ts, cap)
        for first in clamped:
            itf = self.interfaces.interfaces[first]
            if first not in self._said_clock:
                self._said_clock.add(first)
                self._problem(itf.where, f"interface {first} ({itf.clock_text()}): times beyond the years "
                                         "1823-2116 are clamped to them")
        return self._make_batch(arr, off, cap, wire, ts_ns, linktypes, numbers)

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

