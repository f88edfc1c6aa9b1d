"""Fuzzing the readers: hundreds of damaged captures, never a traceback, a hang or unbounded memory.

Seeded and deterministic: ``damaged_captures(seed, count)`` builds each file from a base capture
(``captures/demo.pcap`` as pcap, pcapng and big-endian nanosecond pcap; synthetic captures of every
link type and encapsulation the decoder reads, fragments, odd pcapng clocks, interleaved interface
blocks, several sections) and damages it: cuts at random offsets, flipped bytes anywhere, record and
block headers rewritten (lengths, types, interface ids, link types, clocks), gzip around it, damaged
before or after compression. One child process runs ``analyzer.analyze`` on every file, each under a
time limit (``faulthandler`` ends the child, naming the file, if one hangs); the test checks that each
gives a report or one ``CaptureError`` line, and the child's peak RSS.

The larger run, by hand::

    PYTHONPATH=. python tests/test_fuzz_inputs.py --count 2000 --seed 7
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    sys.path.insert(0, str(REPO))

from tests import capwrite as cw  # noqa: E402

MACS = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # explicit: scapy would look them up on the network
DEMO = REPO / "captures" / "demo.pcap"
SUITE_FILES = 520  # files in the suite's run (a few seconds)
PER_FILE_SECONDS = 60  # a file taking longer is a hang (most take milliseconds)
MAX_RSS_MB = 500
EXPECTED_ERRORS = ("CaptureError",)  # the one error a damaged file may raise (one line)


# -- base captures -----------------------------------------------------------------------------------
def _pcap_records(data: bytes) -> list[tuple[int, bytes, int]]:
    """(time ns, frame, original length) of a little-endian microsecond pcap (the demo capture)."""
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, cap, wire = struct.unpack("<IIII", data[pos:pos + 16])
        out.append((sec * 10**9 + usec * 1000, data[pos + 16:pos + 16 + cap], wire))
        pos += 16 + cap
    return out


def _synthetic_frames() -> list[tuple[int, bytes]]:
    """(link type, frame) of every encapsulation the decoder reads, and some it skips."""
    from scapy.contrib.mpls import MPLS
    from scapy.layers.inet import IP, TCP, UDP, fragment
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
    from scapy.layers.l2 import ARP, GRE, Dot1AD, Dot1Q, Ether
    from scapy.layers.ppp import PPP, PPPoE

    from tests.test_link_layers import DECODED, NOT_IP

    seg = TCP(sport=40000, dport=443, seq=1000, ack=2000, flags="PA", options=[("MSS", 1460), ("SAck", (1, 2))])
    v4 = IP(src="10.0.0.1", dst="10.0.0.2", id=7) / seg / (b"p" * 64)
    v6 = IPv6(src="2001:db8::1", dst="2001:db8::2") / seg / (b"q" * 64)
    eth = Ether(**MACS)
    frames = [(1, bytes(eth / v4)), (1, bytes(eth / v6)), (1, bytes(eth / Dot1Q(vlan=3) / v4)),
              (1, bytes(eth / Dot1AD(vlan=4) / Dot1Q(vlan=5) / v6)), (1, bytes(eth / ARP())),
              (1, bytes(Ether(**MACS, type=0x8847) / MPLS(s=1) / v4)), (1, bytes(eth / PPPoE() / PPP(proto=0x21) / v4)),
              (101, bytes(IP(src="192.0.2.1", dst="192.0.2.2") / GRE(proto=0x0800) / v4)),
              (101, bytes(IPv6(src="2001:db8::a", dst="2001:db8::b") / v4)), (1, bytes(eth / IP() / UDP())),
              (113, b"\0\0\x03\x04\0\x06" + b"\0" * 8 + b"\x08\x00" + bytes(v4)), (0, b"\x02\0\0\0" + bytes(v4))]
    frames += [(1, bytes(eth / f)) for f in fragment(IP(src="10.0.0.1", dst="10.0.0.2", id=9) / seg
                                                         / (b"z" * 3000), fragsize=800)]
    frames += [(1, bytes(eth / f)) for f in fragment6(IPv6(src="2001:db8::1", dst="2001:db8::2")
                                                          / IPv6ExtHdrFragment(id=5) / seg / (b"y" * 2000), 700)]
    frames += [(lt, frame) for lt, frame, _, _ in DECODED.values()] + list(NOT_IP.values())
    return frames


def base_captures() -> dict[str, bytes]:
    """Undamaged captures the damage starts from, by name."""
    demo = _pcap_records(DEMO.read_bytes())
    synthetic = _synthetic_frames()
    eth = [(f, w) for _, f, w in demo]
    bases = {
        "demo.pcap": DEMO.read_bytes(),
        "demo-be-ns.pcap": cw.pcap([(t, f) for t, f, _ in demo], big=True, nanos=True,
                                   wirelens=[w for _, _, w in demo]),
        "demo.pcapng": cw.shb() + cw.idb() + cw.idb(1, tsresol=9) + b"".join(
            cw.epb(f, t // 1000 if k % 2 else t, k % 2 ^ 1, wirelen=w) for k, (t, f, w) in enumerate(demo)),
        "sections.pcapng": cw.shb() + cw.idb(1, tsresol=0x80 | 20, tsoffset=100) + cw.epb(eth[0][0], 1 << 20) +
        cw.unknown_block() + cw.spb(eth[1][0]) + cw.shb(True) + cw.idb(101, True, snaplen=60) +
        cw.opb(bytes(eth[2][0][14:]), 5, 0, True) + cw.spb(bytes(eth[3][0][14:]), True),
        "interleaved.pcapng": cw.shb() + b"".join(
            cw.idb(lt, tsresol=[6, 9, 0x80 | 30][k % 3]) + cw.epb(f, 10**6 + k, k)
            for k, (lt, f) in enumerate(synthetic)),
        "odd-clocks.pcapng": cw.shb() + b"".join(cw.idb(1, tsresol=r, tsoffset=o) for r, o in
                                                 [(0, 0), (28, 0), (0xFF, 0), (0x80 | 64, 1 << 62), (3, -(1 << 62))]) +
        b"".join(cw.epb(f, (k * 0x1234_5678_9ABC_DEF) & (2**64 - 2), k % 5) for k, (f, _) in enumerate(eth[:20])),
        "flood.pcap": cw.pcap([(k, bytes(_flood_fragment(k))) for k in range(3000)]),
    }
    for lt in sorted({lt for lt, _ in synthetic}):
        bases[f"linktype-{lt}.pcap"] = cw.pcap([(k * 1000, f) for k, (t, f) in enumerate(synthetic) if t == lt],
                                               linktype=lt)
    return bases


def _flood_fragment(k: int) -> bytes:
    """Ethernet, then an IPv4 fragment of a datagram that never completes (distinct IDs, offset 64,000)."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, k & 0xFFFF, 0x2000 | 8000, 64, 6, 0,
                     bytes([10, 0, k >> 8 & 0xFF, 1]), bytes([10, 0, 0, 2]))
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + b"f" * 8


# -- damage ----------------------------------------------------------------------------------------------
def _record_starts(data: bytes) -> list[int]:
    """Offsets of pcap records or pcapng blocks (walked while the lengths make sense)."""
    starts = []
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        pos, order = 0, "<"
        while pos + 12 <= len(data):
            if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
                order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            (length,) = struct.unpack(order + "I", data[pos + 4:pos + 8])
            if length < 12:
                break
            starts.append(pos)
            pos += length
        return starts
    order = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    pos = 24
    while pos + 16 <= len(data):
        starts.append(pos)
        pos += 16 + struct.unpack(order + "I", data[pos + 8:pos + 12])[0]
    return starts


SPECIAL_U32 = [0, 1, 3, 11, 12, 13, 16, 28, 31, 32, 0xFF, 0xFFFF, 0x10000, 1 << 20, (1 << 20) + 1, 1 << 26,
               (1 << 26) + 4, 0x7FFFFFF0, 0xFFFFFFF0, 0xFFFFFFFF]


def damage(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One to three kinds of damage; returns the damaged bytes and what was done."""
    b = bytearray(data)
    done = []
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["cut", "flip", "header", "header", "length", "splice", "header-field"])
        starts = _record_starts(bytes(b)) if kind in ("header", "length", "header-field") else []
        if kind == "cut" and len(b) > 1:
            del b[rng.randrange(1, len(b)):]
        elif kind == "flip" and b:
            for _ in range(rng.randint(1, 16)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif kind == "header" and starts:  # bytes of a record or block header
            at = rng.choice(starts)
            for _ in range(rng.randint(1, 4)):
                p = at + rng.randrange(28)
                if p < len(b):
                    b[p] = rng.randrange(256)
        elif kind == "length" and starts:  # a length field set to a special value
            at = rng.choice(starts) + rng.choice([4, 8, 12, 20, 24])
            if at + 4 <= len(b):
                b[at:at + 4] = struct.pack(rng.choice("<>") + "I", rng.choice(SPECIAL_U32))
        elif kind == "header-field" and starts:  # a link type, interface id or option byte anywhere in a header
            at = rng.choice(starts) + rng.randrange(8, 40)
            if at + 2 <= len(b):
                b[at:at + 2] = struct.pack("<H", rng.choice([0, 1, 101, 104, 105, 127, 129, 239, 276, 9, 14, 0x89,
                                                             0xFF, 0xFFFF]))
        elif kind == "splice" and len(b) > 8:  # a piece of the file repeated or moved
            lo = rng.randrange(len(b))
            piece = b[lo:lo + rng.randrange(1, 4096)]
            at = rng.randrange(len(b))
            b[at:at] = piece
        done.append(kind)
    return bytes(b), "+".join(done)


def _gzip_damaged(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    gz = bytearray(gzip.compress(data, compresslevel=rng.choice([1, 6, 9]), mtime=0))
    kind = rng.choice(["cut", "trailer", "flip", "members", "padding"])
    if kind == "cut":
        del gz[rng.randrange(1, len(gz)):]
    elif kind == "trailer":
        del gz[-rng.randint(1, 8):]
    elif kind == "flip":
        for _ in range(rng.randint(1, 4)):
            gz[rng.randrange(len(gz))] ^= 1 << rng.randrange(8)
    elif kind == "members":
        half = len(data) // 2
        gz = bytearray(gzip.compress(data[:half], mtime=0) + gzip.compress(data[half:], mtime=0))
    else:
        gz += b"\0" * rng.randint(1, 100) + (b"junk" if rng.random() < 0.5 else b"")
    return bytes(gz), "gzip-" + kind


def damaged_captures(seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    """``count`` damaged captures, the same for the same seed: (name, bytes)."""
    rng = random.Random(seed)
    bases = base_captures()
    names = sorted(bases)
    for k in range(count):
        base = rng.choice(names)
        data = bases[base]
        if base.startswith("demo") and rng.random() < 0.7:  # a shorter piece of the demo capture
            data = data[:rng.randrange(64, len(data))]
        how = rng.random()
        if how < 0.6:
            data, what = damage(data, rng)
        elif how < 0.8:
            data, what = _gzip_damaged(data, rng)
        else:
            data, what = damage(data, rng)
            gz, what_gz = _gzip_damaged(data, rng)
            data, what = gz, what + "+" + what_gz
        yield f"{k:05d}-{base}-{what}", data


# -- the child: analyze every file -------------------------------------------------------------------------
def run(seed: int, count: int, folder: Path) -> dict:
    """Analyze the base captures, then every damaged one; returns counts, failures and the peak RSS.

    The base captures go first and without a time limit: they load (or compile) the compiled kernels."""

    done = {"files": 0, "reports": 0, "capture_errors": 0, "with_problems": 0, "failures": [], "slowest_s": 0.0}
    for name, data in base_captures().items():
        _check(f"base-{name}", data, folder, None, done)
    done.update(files=0, reports=0, capture_errors=0, with_problems=0, slowest_s=0.0)
    for name, data in damaged_captures(seed, count):
        _check(name, data, folder, PER_FILE_SECONDS, done)
    done["rss_mb"] = peak_rss_mb()
    return done


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program: VmHWM (``ru_maxrss`` keeps the
    pre-exec high-water mark of the forked parent on Linux, here the whole pytest process)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check(name: str, data: bytes, folder: Path, limit: float | None, done: dict) -> None:
    """Analyze one capture: a report (its problems one line each) or one ``CaptureError`` line."""
    import faulthandler
    import time
    import traceback

    import analyzer
    from analyzer.errors import AnalyzerError

    path = folder / "capture"
    path.write_bytes(data)
    print(json.dumps({"start": name}), flush=True)  # the last one named is the one that hung
    if limit:
        faulthandler.dump_traceback_later(limit, exit=True)
    start = time.perf_counter()
    try:
        problems = analyzer.analyze(path).stats.get("problems", [])
        if any("\n" in p for p in problems):
            done["failures"].append(f"{name}: a problem of several lines: {problems}")
        done["reports"] += 1
        done["with_problems"] += bool(problems)
    except AnalyzerError as exc:
        if type(exc).__name__ not in EXPECTED_ERRORS or "\n" in str(exc):
            done["failures"].append(f"{name}: {type(exc).__name__}: {exc}")
        done["capture_errors"] += 1
    except BaseException as exc:  # noqa: BLE001 - exactly what this run looks for
        done["failures"].append(f"{name}: {''.join(traceback.format_exception(exc))}")
    faulthandler.cancel_dump_traceback_later()
    done["slowest_s"] = max(done["slowest_s"], time.perf_counter() - start)
    done["files"] += 1


def run_child(seed: int, count: int, folder: Path, timeout: float) -> dict:
    """``run`` in a fresh process (its own RSS, and a hang cannot stop the caller)."""
    out = subprocess.run([sys.executable, __file__, "--seed", str(seed), "--count", str(count), "--dir", str(folder)],
                         capture_output=True, text=True, timeout=timeout, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(folder)})
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines or "files" not in lines[-1]:
        last = next((line["start"] for line in reversed(lines) if "start" in line), None)
        raise AssertionError(f"the child stopped (exit {out.returncode}) on {last}:\n{out.stderr[-3000:]}")
    return lines[-1]


def test_damaged_captures_never_crash_hang_or_grow(tmp_path):
    got = run_child(seed=11, count=SUITE_FILES, folder=tmp_path, timeout=600)
    assert got["files"] == SUITE_FILES
    assert not got["failures"], "\n".join(got["failures"][:5])
    assert got["rss_mb"] < MAX_RSS_MB, got
    assert got["reports"] > SUITE_FILES // 2  # most damaged files still give what could be read


def test_damage_is_deterministic():
    first = [(n, zlib.crc32(d)) for n, d in damaged_captures(3, 40)]
    assert first == [(n, zlib.crc32(d)) for n, d in damaged_captures(3, 40)]
    assert len({crc for _, crc in first}) > 30


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--count", type=int, default=SUITE_FILES)
    parser.add_argument("--dir", type=Path, help="folder for the file under test (a private temporary one if absent)")
    args = parser.parse_args()
    if args.dir:
        print(json.dumps(run(args.seed, args.count, args.dir)), flush=True)
    else:
        import tempfile
        import time

        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            result = run_child(args.seed, args.count, Path(folder), timeout=24 * 3600)
            result["wall_s"] = round(time.perf_counter() - start, 1)
            print(json.dumps(result, indent=1))
