"""Compile every packet kernel into the cache once, the reading kernels and the engine's in two processes.

numba compiles a kernel the first time it is called, which on a fresh install makes the first
``analyze`` wait in silence. ``warm()`` compiles them all at once instead: the reading kernels (record
walks, the decoder, addresses, BPF) and the engine's (4-tuples, the per-packet pass, the record pool)
in two processes at the same time, each on a few packets built here, into the cache folder of this
version of the package (``analyzer.jit``); then it marks the cache ready. ``make`` runs it at install
time (``python -m analyzer.report.kernels``), and the commands that analyze run it, saying so in one
line, when the cache is not ready.

    >>> from analyzer.report.kernels import warm
    >>> seconds = warm()                 # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import ctypes.util
import io
import struct
import subprocess
import sys
import time

import numpy as np

from .. import jit

GROUPS = ("read", "engine")
EXPECTED_SECONDS = 15  # what the one line says a cold compile takes on a 2-core machine (14.4-15.7 s measured)


def _tiny_pcap() -> bytes:
    """A classic pcap with two TCP frames (Ethernet, IPv4 and IPv6), enough to call every reading kernel."""
    def frame(ip: bytes, ethertype: int) -> bytes:
        return b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01" + struct.pack(">H", ethertype) + ip

    tcp = struct.pack(">HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02, 1024, 0, 0)
    v4 = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02") + tcp
    v6 = struct.pack(">IHBB16s16s", 0x60000000, 20, 6, 64, b"\x20\x01" + b"\x00" * 13 + b"\x01",
                     b"\x20\x01" + b"\x00" * 13 + b"\x02") + tcp
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for k, raw in enumerate((frame(v4, 0x0800), frame(v6, 0x86DD))):
        out.append(struct.pack("<IIII", 1_700_000_000 + k, 0, len(raw), len(raw)) + raw)
    return b"".join(out)


def _tiny_pcapng(pcap: bytes) -> bytes:
    """The same frames in a pcapng file (section, interface, enhanced packet blocks)."""
    def block(kind: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return struct.pack("<II", kind, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)), block(1, struct.pack("<HHI", 1, 0, 262144))]
    pos = 24
    while pos < len(pcap):
        sec, usec, cap, wire = struct.unpack_from("<IIII", pcap, pos)
        ts = sec * 1_000_000 + usec
        out.append(block(6, struct.pack("<IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, cap, wire) + pcap[pos + 16:pos + 16 + cap]))
        pos += 16 + cap
    return b"".join(out)


def _compile_read() -> None:
    from ..decode import PacketReader, read_packets, rows_by_group

    pcap = _tiny_pcap()
    read_packets(io.BytesIO(pcap))
    read_packets(io.BytesIO(_tiny_pcapng(pcap)))
    if ctypes.util.find_library("pcap"):  # without libpcap, `-f` says so when used (and nothing else needs it)
        read_packets(io.BytesIO(pcap), bpf="tcp")
    for store in PacketReader(io.BytesIO(pcap)).stores():  # connection groups (--jobs)
        rows_by_group(store, 2)


def _compile_engine() -> None:
    """Feed the engine a SYN, a SYN-ACK and an ACK as packet columns built here (not by the decoder, whose
    kernels the other process compiles; nor as a DataFrame: pandas alone takes half a second to import),
    the connection ending at once, then compact the record pool."""
    from ..decode.store import CLOCK_COLUMN, Codes
    from ..schema import PACKET_COLUMNS
    from ..tcp import Engine
    from ..tcp.flows import TupleTable

    n = 3
    values = {c.name: np.full(n, -1 if c.dtype.startswith("int") else 0, dtype=c.dtype) for c in PACKET_COLUMNS
              if c.dtype not in ("category", "str", "string", "float64")}
    values.update(frame=np.arange(1, n + 1), ts_ns=np.arange(n) * 1_000_000, ip_version=np.full(n, 4, np.int8),
                  sport=np.array([40000, 80, 40000], np.uint16), dport=np.array([80, 40000, 80], np.uint16),
                  seq_raw=np.array([1, 5, 2], np.uint32), ack_raw=np.array([0, 2, 6], np.uint32),
                  flags=np.array([0x02, 0x12, 0x10], np.uint16), payload_len=np.zeros(n, np.int32))
    addresses = ["10.0.0.1", "10.0.0.2"]
    values[CLOCK_COLUMN] = values["ts_ns"]
    values["src"] = Codes(np.array([0, 1, 0], np.int32), addresses)
    values["dst"] = Codes(np.array([1, 0, 1], np.int32), addresses)

    class Columns:  # what Engine.feed reads of a batch: its length and its columns (as a ColumnStore gives them)
        def __len__(self):
            return n

        def packet_column(self, name):
            return values[name]

    engine = Engine(close_delay=0, idle_timeout=-1e-9)  # the connection ends at once: those kernels run too
    engine.feed(Columns())
    engine._compact()
    engine.finish()
    # the 4-tuple table's growth and forgetting (a busy capture's, not three packets')
    tuples = TupleTable()
    ports = np.arange(1024, 1024 + 1024, dtype=np.uint16)
    src = Codes(np.zeros(len(ports), np.int32), addresses[:1])
    dst = Codes(np.zeros(len(ports), np.int32), addresses[1:])
    ids, _ = tuples.assign(src, ports, dst, np.full(len(ports), 80, np.uint16))
    tuples.forget(ids[:10])


COMPILE = {"read": _compile_read, "engine": _compile_engine}


def warm(parallel: bool = True) -> float:
    """Compile every kernel into the cache unless it is ready; returns the seconds it took (0 if ready)."""
    if jit.cache_ready() or not jit.CACHE.cached:
        return 0.0
    t0 = time.perf_counter()
    pending = list(GROUPS)
    if parallel:
        procs = []
        for group in GROUPS:
            try:
                procs.append(subprocess.Popen([sys.executable, "-m", "analyzer.report.kernels", "--group", group],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            except OSError:  # this interpreter cannot be started again (say, a path this user may not run)
                break
        for group, proc in zip(GROUPS, procs):
            if proc.wait() == 0:
                pending.remove(group)
    for group in pending:  # compiled here: any error surfaces where it belongs
        COMPILE[group]()
    jit.mark_ready()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compile tcp-analyzer's packet kernels into the cache.")
    ap.add_argument("--group", choices=GROUPS, help="compile one group in this process (what warm() runs)")
    args = ap.parse_args(argv)
    if args.group:
        COMPILE[args.group]()
        return 0
    if not jit.CACHE.cached:
        print("tcp-analyzer: no usable kernel cache folder: kernels will be compiled on each run", file=sys.stderr)
        return 0
    seconds = warm()
    print(f"tcp-analyzer: packet kernels {'compiled' if seconds else 'already compiled'} in {jit.CACHE.folder}"
          + (f" ({seconds:.1f} s)" if seconds else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
