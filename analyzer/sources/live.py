"""Live sniffing: frames from an interface, in batches, written to a pcap and handed to a callback.

The socket is a Linux ``AF_PACKET`` raw socket; scapy (libpcap underneath) compiles the BPF filter
and attaches it before the socket is bound, so no unfiltered frame slips in. Frames are read as raw
bytes, never as scapy packet objects: every ``batch_interval`` seconds the new frames are appended
to the pcap and become one ``FrameBatch`` for the callback (``analyzer.report.live`` decodes and
analyzes them as they come).

Loopback: an ``AF_PACKET`` socket sees every ``lo`` packet twice, once leaving
(``PACKET_OUTGOING``) and once arriving. Like libpcap (and so tcpdump), the outgoing copy is dropped
on loopback interfaces only, so the capture holds each packet once. On other interfaces outgoing
packets are kept (that is the only copy).

Timestamps are the kernel's (``SO_TIMESTAMPNS``), in nanoseconds, and the pcap is written with
nanosecond resolution.

    >>> cap = LiveCapture("lo", "tcp port 15001", pcap_path="live.pcap", duration=5)  # doctest: +SKIP
    >>> result = cap.run(on_frames=lambda batch: print(len(batch)))               # doctest: +SKIP
"""
from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import AnalyzerError, EngineUnavailable, NeedsRoot
from .frames import LINKTYPE_ETHERNET, LINKTYPE_RAW, FrameBatch

SO_ATTACH_FILTER = 26  # asm-generic/socket.h
BPF_RET_K = 0x06  # linux/filter.h: BPF_RET | BPF_K, "return k bytes of the packet"
ETH_P_ALL = 0x0003  # linux/if_ether.h: every protocol
SOL_PACKET = 263
PACKET_STATISTICS = 6  # linux/if_packet.h: struct tpacket_stats {u32 packets; u32 drops}
PACKET_OUTGOING = 4  # sll_pkttype of a frame the host sends
SO_TIMESTAMPNS = 35  # asm-generic/socket.h (SO_TIMESTAMPNS_OLD): struct timespec as cmsg
SO_RCVBUFFORCE = 33  # asm-generic/socket.h: SO_RCVBUF beyond rmem_max (needs CAP_NET_ADMIN)
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE  # tun devices: raw IP
ARPHRD_TO_LINKTYPE = {ARPHRD_ETHER: LINKTYPE_ETHERNET, ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,
                      ARPHRD_NONE: LINKTYPE_RAW}

PCAP_MAGIC_NS = 0xA1B23C4D
SNAPLEN = 262_144  # as tcpdump's default
RCVBUF = 32 << 20  # kernel socket buffer, so a fast loopback burst is not dropped
BATCH_INTERVAL = 0.5
MAX_READS_PER_WAKE = 10_000
# Never suggest the capability on the system python3: every script run with it could then sniff.
ROOT_FIX = ("live capture needs root (CAP_NET_RAW): run it with sudo, or give the capability to a "
            "private copy of the interpreter only: `python3 -m venv --copies DIR`, install tcp-analyzer "
            "there, `sudo setcap cap_net_raw+ep DIR/bin/python3` (see the README)")


class PcapWriter:
    """Writes a classic pcap with nanosecond timestamps, record by record."""

    def __init__(self, f: BinaryIO, linktype: int, snaplen: int = SNAPLEN):
        self.f = f
        f.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))
        self.records = 0

    def write(self, frame: bytes, ts_ns: int, wirelen: int) -> None:
        sec, nsec = divmod(ts_ns, 1_000_000_000)
        self.f.write(struct.pack("<IIII", sec, nsec, len(frame), wirelen))
        self.f.write(frame)
        self.records += 1


@dataclass
class LiveResult:
    """The end of a live capture."""

    pcap_path: Path | None
    frames: int
    outgoing_copies_dropped: int
    kernel_drops: int
    stop_reason: str  # "duration", "count", "stopped", "interrupted"
    notes: list[str] = field(default_factory=list)


class LiveCapture:
    """Capture on ``iface`` with a BPF filter until ``duration`` s, ``count`` frames, ``stop()`` or Ctrl-C.

    ``open()`` (called by ``run()`` if needed) raises ``NeedsRoot`` without the right to capture and
    ``AnalyzerError`` when the pcap cannot be created; once it returns the filter is attached and
    packets are being buffered by the kernel, so traffic started afterwards is captured (``ready``
    is set at that point).
    """

    def __init__(self, iface: str = "lo", bpf: str | None = None, pcap_path: str | os.PathLike | None = None,
                 duration: float | None = None, count: int | None = None,
                 batch_interval: float = BATCH_INTERVAL, snaplen: int = SNAPLEN):
        if duration is not None and duration <= 0:
            raise ValueError("duration must be positive")
        if count is not None and count <= 0:
            raise ValueError("count must be positive")
        self.iface, self.bpf = iface, bpf
        self.pcap_path = Path(pcap_path) if pcap_path is not None else None
        self.duration, self.count = duration, count
        self.batch_interval, self.snaplen = batch_interval, snaplen
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._out: BinaryIO | None = None
        self.linktype = LINKTYPE_ETHERNET
        self._loopback = False
        self.frames = 0
        self.outgoing_dropped = 0

    # -- socket ----------------------------------------------------------------------------
    def open(self) -> "LiveCapture":
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing yet
        except PermissionError as exc:
            raise NeedsRoot(ROOT_FIX) from exc
        try:
            if self.bpf:
                _attach_bpf(sock, self.bpf, self.iface, self.snaplen)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            try:
                sock.bind((self.iface, ETH_P_ALL))
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.ENXIO):
                    raise AnalyzerError(f"no network interface {self.iface!r}") from exc
                raise
            hatype = sock.getsockname()[3]
            if hatype not in ARPHRD_TO_LINKTYPE:
                raise AnalyzerError(f"interface {self.iface!r} has hardware type {hatype}, which live capture "
                                    "does not support (Ethernet, loopback and tun only)")
            self.linktype = ARPHRD_TO_LINKTYPE[hatype]
            self._loopback = hatype == ARPHRD_LOOPBACK
            sock.setblocking(False)
            self._out = self._create_pcap()  # a bad path is told before anything is captured
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.ready.set()
        return self

    def _create_pcap(self) -> BinaryIO | None:
        if self.pcap_path is None:
            return None
        try:
            return open(self.pcap_path, "wb")
        except OSError as exc:
            raise AnalyzerError(f"{self.pcap_path}: cannot write the capture: {exc.strerror or exc}") from exc

    def stop(self) -> None:
        """Ask ``run()`` to finish (thread-safe); it returns after writing what it has."""
        self._stop.set()

    def kernel_drops(self) -> int:
        if self._sock is None:
            return 0
        try:
            packets, drops = struct.unpack("II", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        except OSError:
            return 0
        return drops

    def _read_available(self, buf: bytearray, frames: list[bytes], ts: list[int], wire: list[int]) -> bool:
        """Read queued frames (at most MAX_READS_PER_WAKE); True when the queue was emptied."""
        assert self._sock is not None
        view = memoryview(buf)
        for _ in range(MAX_READS_PER_WAKE):
            try:
                n, anc, _flags, addr = self._sock.recvmsg_into([view], 64, socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return True
            if self._loopback and addr[2] == PACKET_OUTGOING:
                self.outgoing_dropped += 1
                continue
            ts_ns = None
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack("qq", data[:16])
                    ts_ns = sec * 1_000_000_000 + nsec
            caplen = min(n, self.snaplen, len(buf))
            frames.append(bytes(view[:caplen]))
            ts.append(ts_ns if ts_ns is not None else time.time_ns())
            wire.append(n)
            if self.count is not None and self.frames + len(frames) >= self.count:
                return True
        return False

    # -- the loop --------------------------------------------------------------------------
    def run(self, on_frames: Callable[[FrameBatch], None] | None = None) -> LiveResult:
        """Capture until a stop condition; returns a ``LiveResult``. Ctrl-C ends it cleanly.

        Every ``batch_interval`` seconds the new frames are written to the pcap, then handed to
        ``on_frames`` as one ``FrameBatch`` whose frame numbers are positions in that pcap."""
        if self._sock is None:
            self.open()
        assert self._sock is not None
        notes: list[str] = []
        out = self._out
        writer = PcapWriter(out, self.linktype, self.snaplen) if out is not None else None
        buf = bytearray(max(self.snaplen, 65_600))
        poller = select.poll()
        poller.register(self._sock.fileno(), select.POLLIN)
        start = time.monotonic()
        deadline = start + self.duration if self.duration is not None else None
        next_flush = start + self.batch_interval
        frames: list[bytes] = []
        ts: list[int] = []
        wire: list[int] = []
        reason = "stopped"

        def flush() -> None:
            if not frames:
                return
            first = self.frames + 1
            if writer is not None:
                for fr, t, w in zip(frames, ts, wire):
                    writer.write(fr, t, w)
                out.flush()
            self.frames += len(frames)
            batch = FrameBatch.from_frames(frames, ts, self.linktype, wirelens=wire, first_frame=first)
            frames.clear(), ts.clear(), wire.clear()
            if on_frames is not None:
                on_frames(batch)

        try:
            while True:
                if self._stop.is_set():
                    reason = "stopped"
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    reason = "duration"
                    break
                if now >= next_flush:
                    flush()
                    next_flush = now + self.batch_interval
                wait = min(next_flush, deadline) if deadline is not None else next_flush
                if poller.poll(max(0.0, min(wait - now, 0.1)) * 1000):
                    self._read_available(buf, frames, ts, wire)
                if self.count is not None and self.frames + len(frames) >= self.count:
                    del frames[self.count - self.frames:], ts[self.count - self.frames:]
                    del wire[self.count - self.frames:]
                    reason = "count"
                    break
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            try:
                if reason != "count":  # frames already queued in the kernel belong to this capture
                    while not self._read_available(buf, frames, ts, wire):
                        pass
                flush()
            finally:
                drops = self.kernel_drops()
                self.close()
        if drops:
            notes.append(f"the kernel dropped {drops} frames (socket buffer full); the capture is incomplete")
        return LiveResult(self.pcap_path, self.frames, self.outgoing_dropped, drops, reason, notes)

    def close(self) -> None:
        """Close the socket and the pcap."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._out is not None:
            self._out.close()
            self._out = None
        self.ready.clear()

    def __enter__(self) -> "LiveCapture":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def can_capture() -> bool:
    """True when this process may open a packet socket, i.e. holds CAP_NET_RAW (being root is not
    enough: a container, ``capsh --drop=cap_net_raw`` or ``setpriv`` can take it away)."""
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except OSError:
        return False
    return True


def output_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` if needed and check a file can be made in it, before a capture that
    cannot be repeated starts; AnalyzerError naming it otherwise."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise AnalyzerError(f"{folder}: cannot write there: {exc.strerror or exc}") from exc
    return folder


def _attach_bpf(sock: socket.socket, bpf: str, iface: str, snaplen: int = SNAPLEN) -> None:
    """Compile ``bpf`` with libpcap (through scapy) for ``iface`` and attach it to ``sock``.

    A classic BPF program returns how many bytes of the packet to keep; scapy compiles with a
    65535-byte snaplen, which would cut loopback's 65549-byte frames, so every non-zero
    ``ret #k`` is raised to ``snaplen`` (tcpdump compiles with 262144).
    """
    try:
        from scapy.arch.common import compile_filter, free_filter
        from scapy.error import Scapy_Exception
        from scapy.libs.structures import bpf_insn, sock_fprog
    except ImportError as exc:  # pragma: no cover - scapy is a dependency
        raise EngineUnavailable(f"scapy is needed for BPF filters: {exc}") from exc
    try:
        prog = compile_filter(bpf, iface)
    except (Scapy_Exception, ImportError, OSError, ValueError) as exc:
        raise AnalyzerError(f"bad BPF filter {bpf!r}: {exc}") from exc
    try:
        insns = (bpf_insn * prog.bf_len)()
        for i in range(prog.bf_len):
            src = prog.bf_insns[i]
            k = src.k
            if src.code == BPF_RET_K and k != 0:
                k = snaplen
            insns[i] = bpf_insn(src.code, src.jt, src.jf, k)
    finally:
        free_filter(prog)
    fprog = sock_fprog(len(insns), ctypes.cast(insns, ctypes.POINTER(bpf_insn)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))
