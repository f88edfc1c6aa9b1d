"""IP fragment reassembly: exact datagrams, and bounded memory and time whatever the fragments.

Pending datagrams are bounded as the Linux kernel bounds them (``fragments.py``): a flood of fragments
that never complete (distinct IDs, high offsets) runs in bounded memory and time, and the sets dropped
are counted; ordinary fragmented datagrams, out of order, overlapping or IPv6, reassemble as before.
"""
from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Ether

import analyzer
from analyzer.decode.fragments import MAX_PENDING_BYTES, MAX_PENDING_DATAGRAMS, Defragmenter
from tests import capwrite as cw

MACS = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # explicit: scapy would look them up on the network
REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000_000
SEG = TCP(sport=40000, dport=443, seq=1000, ack=2000, flags="PA", window=512)
EXPIRED = "IP datagrams whose fragments never all arrived"
EVICTED = "IP datagrams dropped to bound the fragments held (oldest first)"


def flood(n: int) -> bytes:
    """n IPv4 fragments, distinct IDs, 8 bytes each at offset 64,000: none ever completes."""
    frames = []
    for k in range(n):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, k & 0xFFFF, 0x2000 | 8000, 64, 6, 0,
                         bytes([10, 0, k >> 16 & 0xFF, 1]), bytes([10, 0, 0, 2])) + b"f" * 8
        frames.append((T0 + k * 1000, bytes(Ether(**MACS, type=0x0800)) + ip))
    return cw.pcap(frames)


def test_fragment_flood_runs_in_bounded_memory_and_time(tmp_path):
    """1.8 MB of such fragments took 2.2 GB and 40-110 s (a 64 KB zero-filled buffer per datagram, and
    every pending set scanned per fragment); tshark takes 160 MB and 0.3 s. Measured in a child process,
    after a warm-up read of reassembled fragments (which loads, or compiles, the kernels involved)."""
    path, warm = tmp_path / "flood.pcap", tmp_path / "warm.pcap"
    path.write_bytes(flood(32_000))
    assert len(path.read_bytes()) > 1_800_000
    warm.write_bytes(cw.pcap([(T0 + k, bytes(Ether(**MACS) / IP(f))) for k, f in enumerate(v4_fragments(3000, 700))]))
    # peak memory from VmHWM: ru_maxrss keeps the forked pytest process's high-water mark across exec
    child = ("import json, sys, time\n"
             "import analyzer\n"
             "def peak():\n"
             "    return [int(x.split()[1]) / 1024 for x in open('/proc/self/status') if x.startswith('VmHWM:')][0]\n"
             "assert len(analyzer.read_packets(sys.argv[2])) == 1\n"
             "before = peak()\n"
             "t = time.perf_counter()\n"
             "df = analyzer.read_packets(sys.argv[1])\n"
             "print(json.dumps({'s': time.perf_counter() - t, 'before_mb': before, 'rss_mb': peak(), "
             "'stats': df.attrs['stats']}))\n")
    out = subprocess.run([sys.executable, "-c", child, str(path), str(warm)], capture_output=True, text=True,
                         timeout=600, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["rss_mb"] - got["before_mb"] < 100 and got["rss_mb"] < 400, got  # about +1 MB over 190 MB
    assert got["s"] < 10, got  # about 0.5 s
    skipped = got["stats"]["skipped"]
    assert skipped[EVICTED] + skipped[EXPIRED] == 32_000, skipped


def test_pending_fragments_are_bounded_oldest_first():
    d = Defragmenter()
    first = flood(1)[24 + 16 + 14:]
    for k in range(MAX_PENDING_DATAGRAMS + 100):
        pkt = bytearray(first)
        pkt[4:6] = struct.pack("!H", k)
        pkt[15] = k >> 8 & 0xFF
        assert d.add(bytes(pkt), 4, T0 + k) is None
    assert len(d.pending) == MAX_PENDING_DATAGRAMS and d.evicted == 100
    assert d.pending_bytes <= MAX_PENDING_BYTES
    big = bytes(IP(src="10.9.9.9", dst="10.0.0.2", id=7, flags="MF") / (b"b" * 1480))
    for k in range(4000):  # 5.9 MB of fragments of distinct datagrams
        pkt = bytearray(big)
        pkt[4:6] = struct.pack("!H", k)
        d.add(bytes(pkt), 4, T0 + 10**6 + k)
    assert d.pending_bytes <= MAX_PENDING_BYTES and d.evicted > MAX_PENDING_DATAGRAMS


def test_expiry_is_from_the_oldest():
    d = Defragmenter(timeout_ns=1000)
    first = flood(1)[24 + 16 + 14:]
    for k in range(50):
        pkt = bytearray(first)
        pkt[4:6] = struct.pack("!H", k)
        d.add(bytes(pkt), 4, T0 + 100 * k)
    d.expire(T0 + 100 * 20 + 1000)  # sets first seen up to T0 + 1,900 ns are older than 1,000 ns
    assert d.expired == 20 and len(d.pending) == 30


def test_datagram_longer_than_ip_allows_is_counted_not_fatal():
    """Fragments covering 65,560 bytes (more than RFC 791 and RFC 8200 4.5 allow; Linux drops them): the
    rebuilt header's length raised struct.error. Now the fragment past the limit is malformed."""
    frames = []
    for k in range(45):
        size = 1480 if k < 44 else 65_560 - 44 * 1480
        frag = IP(src="10.0.0.1", dst="10.0.0.2", id=9, flags="MF" if k < 44 else 0, frag=k * 185, proto=6)
        frames.append((T0 + k, bytes(Ether(**MACS) / frag / (b"a" * size))))
    df = analyzer.read_packets(io.BytesIO(cw.pcap(frames)))
    assert len(df) == 0
    assert df.attrs["stats"]["skipped"] == {"IP fragments that could not be reassembled (cut or malformed)": 1,
                                            EXPIRED: 1}


# -- reassembly stays exact ----------------------------------------------------------------------------
def v4_fragments(payload_len: int, size: int, ident: int = 4242) -> list[bytes]:
    whole = IP(src="10.0.0.1", dst="10.0.0.2", id=ident, ttl=63) / SEG / (bytes(range(256)) * 64)[:payload_len]
    return [bytes(f) for f in fragment(whole, fragsize=size)]


def reassembled(fragments: list[bytes], ipver: int = 4) -> bytes | None:
    d = Defragmenter()
    got = None
    for f in fragments:
        got = d.add(f, ipver, T0) or got
    return got[0] if got else None


@pytest.mark.parametrize("order", ["in", "reversed", "middle-first", "with-duplicates", "overlapping"])
def test_ipv4_reassembly_is_exact(order):
    whole = bytes(IP(src="10.0.0.1", dst="10.0.0.2", id=4242, ttl=63) / SEG / (bytes(range(256)) * 64)[:5000])
    frags = v4_fragments(5000, 800)
    if order == "reversed":
        frags = frags[::-1]
    elif order == "middle-first":
        frags = frags[2:4] + frags[:2] + frags[4:]
    elif order == "with-duplicates":
        frags = frags[:3] + frags[1:3] + frags[3:]
    elif order == "overlapping":  # a fragment covering the ends of two others: the first bytes stay
        mid = IP(frags[1])
        cover = IP(src=mid.src, dst=mid.dst, id=mid.id, ttl=mid.ttl, flags="MF", frag=mid.frag + 50,
                   proto=6) / (b"\xee" * 800)
        frags = frags[:3] + [bytes(cover)] + frags[3:]
    got = reassembled(frags)
    assert got is not None
    assert got[20:] == whole[20:] and got[:2] == whole[:2] and got[2:4] == struct.pack("!H", len(whole))
    assert got[6:8] == b"\0\0"


def test_ipv6_reassembly_is_exact():
    inner = SEG / (bytes(range(256)) * 8)
    whole = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=99) / inner
    frags = [bytes(f) for f in fragment6(whole, 600)]
    got = reassembled(frags[::-1], ipver=6)
    tcp = bytes(whole)[48:]  # after the fixed header and the fragment header, checksum filled in
    assert got is not None and got[6] == 6 and got[40:] == tcp and got[8:40] == bytes(whole)[8:40]
    assert struct.unpack("!H", got[4:6])[0] == len(tcp)


def test_reassembled_rows_in_the_table():
    frags = v4_fragments(3000, 700)
    frames = [(T0 + k, bytes(Ether(**MACS) / IP(f))) for k, f in enumerate(frags[::-1])]
    df = analyzer.read_packets(io.BytesIO(cw.pcap(frames)))
    assert df["frame"].tolist() == [len(frags)]
    r = df.iloc[0]
    assert (r.payload_len, r.fragmented, r.ip_id, r.seq_raw) == (3000, True, 4242, 1000)
