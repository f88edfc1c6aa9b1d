"""The native reader: every file format, byte order, time resolution and link type decodes exactly."""
from __future__ import annotations

import io
import shutil
import struct
import subprocess
import time
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether

import analyzer
from tests import capwrite as cw

MACS = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # explicit: scapy would look them up on the network
T0 = 1_700_000_000_123_456_789  # ns; the µs formats keep 1_700_000_000_123_456_000


def seg(**kw) -> TCP:
    base = dict(sport=40000, dport=443, seq=1000, ack=2000, flags="PA", window=512)
    base.update(kw)
    return TCP(**base)


def v4(payload=b"x" * 10, **kw) -> bytes:
    return bytes(IP(src="10.0.0.1", dst="10.0.0.2", id=77, ttl=63) / seg(**kw) / payload)


def v6(payload=b"y" * 7, **kw) -> bytes:
    return bytes(IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=50) / seg(**kw) / payload)


def read(data: bytes):
    return analyzer.read_packets(io.BytesIO(data))


def check_v4_row(row, payload_len=10):
    assert (row.src, row.dst, row.sport, row.dport) == ("10.0.0.1", "10.0.0.2", 40000, 443)
    assert (row.seq_raw, row.ack_raw, row["flags"], row.window) == (1000, 2000, 0x18, 512)
    assert (row.payload_len, row.ip_version, row.ip_id, row.ttl) == (payload_len, 4, 77, 63)


# -- formats ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("big", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nanos", [False, True], ids=["us", "ns"])
def test_pcap_byte_order_and_resolution(big, nanos):
    frames = [(T0 + k * 1_000_001, bytes(Ether(**MACS) / IP(v4()))) for k in range(3)]
    df = read(cw.pcap(frames, big=big, nanos=nanos))
    assert df["frame"].tolist() == [1, 2, 3]
    expect = [t if nanos else t // 1000 * 1000 for t, _ in frames]
    assert df["ts_ns"].tolist() == expect
    assert np.allclose(df["ts"], np.array(expect) / 1e9)
    check_v4_row(df.iloc[0])
    assert df.attrs["stats"]["format"] == "pcap"


@pytest.mark.parametrize("big", [False, True], ids=["le", "be"])
def test_pcapng_blocks_interfaces_and_resolutions(big):
    eth = bytes(Ether(**MACS) / IP(v4()))
    raw6 = v6()
    data = b"".join([
        cw.shb(big), cw.idb(1, big),  # interface 0: Ethernet, default µs
        cw.idb(101, big, tsresol=9),  # interface 1: raw IP, ns
        cw.idb(1, big, tsresol=0x80 | 20, tsoffset=100),  # interface 2: 2^-20 s, +100 s offset
        cw.epb(eth, T0 // 1000, 0, big),
        cw.unknown_block(big),  # skipped
        cw.epb(raw6, T0, 1, big),
        cw.spb(eth, big),  # simple packet block: interface 0, no time
        cw.opb(eth, T0 // 1000 + 5, 0, big),
        cw.epb(eth, 3 << 20 | 1 << 19, 2, big),  # 3.5 s in 2^-20 units
    ])
    df = read(data)
    assert df["frame"].tolist() == [1, 2, 3, 4, 5]
    assert df["interface"].tolist() == [0, 1, 0, 0, 2]
    assert df["ts_ns"].tolist() == [T0 // 1000 * 1000, T0, 0, (T0 // 1000 + 5) * 1000, 103_500_000_000]
    assert df["ip_version"].tolist() == [4, 6, 4, 4, 4]
    assert df.iloc[1].src == "2001:db8::1" and df.iloc[1].payload_len == 7
    assert df.attrs["stats"]["format"] == "pcapng"


def test_pcapng_sections_change_byte_order():
    eth = bytes(Ether(**MACS) / IP(v4()))
    data = cw.shb(False) + cw.idb(1, False) + cw.epb(eth, 1, 0, False) + \
        cw.shb(True) + cw.idb(101, True, tsresol=9) + cw.epb(v4(), 7, 0, True)
    df = read(data)
    assert df["frame"].tolist() == [1, 2]
    assert df["ts_ns"].tolist() == [1000, 7]
    check_v4_row(df.iloc[1])



def test_interface_ids_are_per_section_as_tshark():
    eth = bytes(Ether(**MACS) / IP(v4()))
    data = cw.shb() + cw.idb() + cw.idb(101, tsresol=9) + cw.epb(v4(), 7, 1) + \
        cw.shb(True) + cw.idb(1, True) + cw.epb(eth, 2, 0, True) + cw.epb(eth, 3, 1, True) + cw.spb(eth, True)
    df = read(data)
    assert df["frame"].tolist() == [1, 2, 4]  # frame 3 names an interface its section never described
    assert df["interface"].tolist() == [1, 0, 0]  # tshark's frame.interface_id: 1, 0, 0
    assert df["ts_ns"].tolist() == [7, 2000, 0]
    assert df.attrs["stats"]["skipped"] == {"frame on an undescribed pcapng interface": 1}


def test_interleaved_interface_and_packet_blocks_read_in_linear_time():
    """16,000 IDB + EPB pairs, each packet on the interface just described (some writers do this): every
    IDB used to end a batch that then looked at every interface, 8 s for 2,000 pairs, minutes for these."""
    ip = v4()
    eth = bytes(Ether(**MACS) / IP(ip))
    n = 16_000
    blocks = [cw.shb()]
    for k in range(n):
        raw = k % 2 == 0  # alternate link types: a frame read with its neighbour's would not decode
        blocks += [cw.idb(101 if raw else 1, tsresol=9 if k % 3 == 0 else 6), cw.epb(ip if raw else eth, 10**6 + k, k)]
    data = b"".join(blocks)
    start = time.perf_counter()
    df = read(data)
    elapsed = time.perf_counter() - start
    assert df["frame"].tolist() == list(range(1, n + 1))
    assert df["interface"].tolist() == list(range(n))
    assert df["ts_ns"].tolist() == [(10**6 + k) * (1 if k % 3 == 0 else 1000) for k in range(n)]
    check_v4_row(df.iloc[0])
    check_v4_row(df.iloc[1])
    assert elapsed < 5, f"{elapsed:.1f} s to read {2 * n} interleaved blocks (about 0.4 s expected)"

@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_gzip_detected_by_magic(tmp_path, fmt):
    eth = bytes(Ether(**MACS) / IP(v4()))
    data = cw.pcap([(T0, eth)]) if fmt == "pcap" else cw.shb() + cw.idb() + cw.epb(eth, T0 // 1000)
    path = tmp_path / "capture.bin"  # the name says nothing
    path.write_bytes(cw.gz(data))
    df = analyzer.read_packets(path)
    assert len(df) == 1
    check_v4_row(df.iloc[0])


# -- link types -----------------------------------------------------------------------------------------
def sll(ip: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, proto) + ip


def sll2(ip: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 1, 772, 0, 6, b"\0" * 8) + ip


LINK_CASES = {
    "ethernet": (1, lambda ip: bytes(Ether(**MACS) / IP(ip)), -1, -1),
    "dot1q": (1, lambda ip: bytes(Ether(**MACS) / Dot1Q(vlan=42) / IP(ip)), 42, -1),
    "qinq-8021ad": (1, lambda ip: bytes(Ether(**MACS) / Dot1AD(vlan=100) / Dot1Q(vlan=7) / IP(ip)), 100, 7),
    "sll": (113, sll, -1, -1),
    "sll2": (276, sll2, -1, -1),
    "null-le": (0, lambda ip: struct.pack("<I", 2) + ip, -1, -1),
    "null-be": (0, lambda ip: struct.pack(">I", 2) + ip, -1, -1),
    "loop": (108, lambda ip: struct.pack(">I", 2) + ip, -1, -1),
    "raw": (101, lambda ip: ip, -1, -1),
    "ipv4": (228, lambda ip: ip, -1, -1),
}


@pytest.mark.parametrize("name", LINK_CASES)
def test_link_types_ipv4(name):
    linktype, wrap, vlan, inner = LINK_CASES[name]
    df = read(cw.pcap([(T0, wrap(v4()))], linktype=linktype))
    assert len(df) == 1, df.attrs["stats"]
    check_v4_row(df.iloc[0])
    assert (df.iloc[0].vlan, df.iloc[0].vlan_inner) == (vlan, inner)


@pytest.mark.parametrize("linktype,wrap", [
    (1, lambda ip: bytes(Ether(**MACS) / IPv6(ip))),
    (1, lambda ip: bytes(Ether(**MACS) / Dot1Q(vlan=5) / IPv6(ip))),
    (113, lambda ip: sll(ip, 0x86DD)),
    (276, lambda ip: sll2(ip, 0x86DD)),
    (0, lambda ip: struct.pack("<I", 30) + ip),  # macOS AF_INET6
    (0, lambda ip: struct.pack("<I", 24) + ip),  # NetBSD/OpenBSD AF_INET6
    (101, lambda ip: ip),
    (229, lambda ip: ip),
], ids=["ethernet", "dot1q", "sll", "sll2", "null-30", "null-24", "raw", "ipv6"])
def test_link_types_ipv6(linktype, wrap):
    df = read(cw.pcap([(T0, wrap(v6()))], linktype=linktype))
    assert len(df) == 1
    r = df.iloc[0]
    assert (r.src, r.dst, r.ip_version, r.ttl, r.payload_len, r.ip_id) == ("2001:db8::1", "2001:db8::2", 6, 50, 7, -1)


def test_unknown_link_type_counted_and_named():
    data = cw.shb() + cw.idb(147) + cw.epb(v4(), 1) + cw.idb(1) + cw.epb(bytes(Ether(**MACS) / IP(v4())), 2, 1)
    df = read(data)
    assert df["frame"].tolist() == [2]
    assert df.attrs["stats"]["skipped"] == {"unknown link type 147": 1}


def test_non_ip_and_non_tcp_frames_are_counted():
    from scapy.layers.inet import UDP
    from scapy.layers.l2 import ARP
    frames = [(T0, bytes(Ether(**MACS) / ARP())), (T0, bytes(Ether(**MACS) / IP() / UDP())),
              (T0, bytes(Ether(**MACS) / IP(v4())))]
    df = read(cw.pcap(frames))
    assert df["frame"].tolist() == [3]
    assert df.attrs["stats"]["skipped"] == {"not IP (ARP, LLC, other EtherTypes)": 1, "IP but not TCP": 1}
    assert df.attrs["stats"]["frames"] == 3


# -- IP layer -------------------------------------------------------------------------------------------
def test_ipv4_options_are_skipped():
    from scapy.layers.inet import IPOption_RR
    pkt = bytes(IP(src="10.0.0.1", dst="10.0.0.2", id=77, ttl=63, options=[IPOption_RR(routers=["1.2.3.4"])])
                / seg() / (b"x" * 10))
    assert pkt[0] & 0xF > 5
    df = read(cw.pcap([(T0, pkt)], linktype=101))
    check_v4_row(df.iloc[0])


def test_ipv6_extension_header_chain():
    from scapy.layers.ipsec import AH
    pkt = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=50) / IPv6ExtHdrHopByHop() /
                IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / AH(nh=6, payloadlen=4, icv=b"\0" * 12) /
                seg() / (b"y" * 7))
    df = read(cw.pcap([(T0, pkt)], linktype=101))
    assert len(df) == 1, df.attrs["stats"]
    assert (df.iloc[0].sport, df.iloc[0].payload_len, df.iloc[0].seq_raw) == (40000, 7, 1000)


def ipv4_fragments(payload_len=1000, ident=4242):
    from scapy.layers.inet import fragment
    whole = IP(src="10.0.0.1", dst="10.0.0.2", id=ident, ttl=63) / seg() / (b"z" * payload_len)
    return [bytes(f) for f in fragment(whole, fragsize=400)]


def test_ipv4_fragments_reassembled_on_last_frame():
    frags = ipv4_fragments()
    assert len(frags) == 3
    frames = [(T0 + k, bytes(Ether(**MACS) / Dot1Q(vlan=9) / IP(f))) for k, f in enumerate(frags)]
    frames.insert(1, (T0, bytes(Ether(**MACS) / IP(v4()))))  # an unrelated segment in between
    df = read(cw.pcap(frames))
    assert df["frame"].tolist() == [2, 4]
    r = df.iloc[1]
    assert (r.payload_len, r.fragmented, r.ip_id, r.sport, r.seq_raw, r.vlan) == (1000, True, 4242, 40000, 1000, 9)
    assert r.ts_ns == frames[3][0] // 1000 * 1000


def test_ipv4_fragments_out_of_order_and_overlapping():
    frags = ipv4_fragments()
    dup = frags[1]
    frames = [(T0, bytes(Ether(**MACS) / IP(f))) for f in (frags[2], dup, frags[0], dup)]
    df = read(cw.pcap(frames))
    assert df["frame"].tolist() == [3]
    assert df.iloc[0].payload_len == 1000
    # the duplicate after completion starts a new set that never completes
    assert df.attrs["stats"]["skipped"] == {"IP datagrams whose fragments never all arrived": 1}


def test_ipv4_fragments_across_batches():
    frags = ipv4_fragments()
    data = cw.pcap([(T0, bytes(Ether(**MACS) / IP(f))) for f in frags])
    batches = list(analyzer.iter_packets(io.BytesIO(data), batch_size=1))
    rows = [b for b in batches if len(b)]
    assert len(rows) == 1 and rows[0].iloc[0].frame == 3 and rows[0].iloc[0].payload_len == 1000


def test_ipv6_fragments_reassembled():
    from scapy.layers.inet6 import IPv6ExtHdrFragment, fragment6
    whole = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=99) / seg() / (b"q" * 1500)
    frags = fragment6(whole, 600)
    assert len(frags) >= 3
    df = read(cw.pcap([(T0, bytes(Ether(**MACS) / f)) for f in frags]))
    assert df["frame"].tolist() == [len(frags)]
    r = df.iloc[0]
    assert (r.payload_len, r.fragmented, r.ip_id, r.ip_version) == (1500, True, 99, 6)


def test_ipv6_atomic_fragment_is_not_held():
    from scapy.layers.inet6 import IPv6ExtHdrFragment
    pkt = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=5, m=0, offset=0) / seg() / b"a")
    df = read(cw.pcap([(T0, pkt)], linktype=229))
    assert (len(df), df.iloc[0].ip_id, df.iloc[0].fragmented, df.iloc[0].payload_len) == (1, 5, False, 1)


# -- TCP layer -----------------------------------------------------------------------------------------
def test_tcp_options_decoded():
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 654321)), ("NOP", None), ("WScale", 7)]
    syn = v4(payload=b"", flags="S", options=opts)
    sack = v4(payload=b"", flags="A", options=[("NOP", None), ("NOP", None),
                                               ("SAck", (5000, 6000, 7000, 8000))])
    tfo = v4(payload=b"hello", flags="S", options=[("TFO", b"\x01" * 8)])
    tfo_req = v4(payload=b"", flags="S", options=[(34, b"")])
    df = read(cw.pcap([(T0, f) for f in (syn, sack, tfo, tfo_req)], linktype=101))
    a, b, c, d = (df.iloc[k] for k in range(4))
    assert (a.mss, a.wscale, a.sack_permitted, a.tsval, a.tsecr, a.tfo_cookie_len) == (1460, 7, True, 123456, 654321, -1)
    assert (a["flags"], a.tcp_hlen) == (0x02, 40)
    assert (b.sack_count, b.sack1_le, b.sack1_re, b.sack2_le, b.sack2_re, b.sack3_le) == (2, 5000, 6000, 7000, 8000, 0)
    assert (b.mss, b.wscale, b.sack_permitted, b.tsval) == (-1, -1, False, -1)
    assert (c.tfo_cookie_len, c.payload_len) == (8, 5)
    assert d.tfo_cookie_len == 0


def test_all_flag_bits_and_reserved_bits():
    pkt = bytearray(v4(payload=b"", flags="FSRPAUECN"))
    assert read(cw.pcap([(T0, bytes(pkt))], linktype=101)).iloc[0]["flags"] == 0x1FF
    pkt[20 + 12] |= 0x0E  # the three reserved bits
    assert read(cw.pcap([(T0, bytes(pkt))], linktype=101)).iloc[0]["flags"] == 0xFFF


def test_snaplen_cut_payload_length_from_ip_header():
    full = bytes(Ether(**MACS) / IP(v4(payload=b"p" * 1000)))
    df = read(cw.pcap([(T0, full[:96])], snaplen=96, wirelens=[len(full)]))
    r = df.iloc[0]
    assert (r.payload_len, r.caplen, r.wirelen, r.truncated) == (1000, 96, len(full), True)
    check_v4_row(r, payload_len=1000)


def test_frame_cut_inside_tcp_header_is_skipped():
    full = bytes(Ether(**MACS) / IP(v4()))
    df = read(cw.pcap([(T0, full[:40]), (T0, full)], wirelens=[len(full), len(full)]))
    assert df["frame"].tolist() == [2]
    assert df.attrs["stats"]["skipped"] == {"frame ends before the TCP header does (snaplen or damage)": 1}


def test_malformed_ip_and_tcp_headers_are_counted():
    bad_ihl = bytearray(v4())
    bad_ihl[0] = 0x43  # IHL 3 < 5
    bad_doff = bytearray(v4())
    bad_doff[20 + 12] = 0x30  # data offset 3 < 5
    long_doff = bytearray(v4(payload=b""))
    long_doff[20 + 12] = 0xF0  # 60-byte header in a 20-byte segment
    df = read(cw.pcap([(T0, bytes(b)) for b in (bad_ihl, bad_doff, long_doff, v4())], linktype=101))
    assert df["frame"].tolist() == [4]
    assert df.attrs["stats"]["skipped"] == {"malformed IP header": 1, "malformed TCP header": 2}


def test_ip_total_length_beyond_frame_uses_frame_length():
    """As Wireshark: a total length larger than the frame is cut to the frame (zeek_reassembly.pcap)."""
    pkt = bytearray(v4(payload=b"x" * 100))
    pkt[2:4] = struct.pack("!H", 400)
    df = read(cw.pcap([(T0, bytes(pkt))], linktype=101))
    assert df.iloc[0].payload_len == 100


# -- batches -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 2, 5, 1000])
def test_batches_equal_whole_file(batch_size):
    frames = [(T0 + k, bytes(Ether(**MACS) / (IP(v4(seq=k)) if k % 3 else IPv6(v6(seq=k))))) for k in range(11)]
    data = cw.pcap(frames)
    whole = read(data)
    parts = list(analyzer.iter_packets(io.BytesIO(data), batch_size=batch_size))
    got = __import__("pandas").concat([p.astype({"src": str, "dst": str}) for p in parts], ignore_index=True)
    assert got.equals(whole.astype({"src": str, "dst": str}))


# -- tunnels and other encapsulations ----------------------------------------------------------------
def _tunnels():
    from scapy.contrib.mpls import MPLS
    from scapy.layers.l2 import GRE
    from scapy.layers.ppp import PPP, PPPoE
    inner = IP(v4())
    outer = IP(src="192.0.2.1", dst="192.0.2.2", id=1, ttl=9)
    return {
        "ip-in-ip": (101, bytes(outer / inner)),
        "ipv4-in-ipv6": (101, bytes(IPv6(src="2001:db8::a", dst="2001:db8::b") / inner)),
        "gre": (101, bytes(outer / GRE(proto=0x0800) / inner)),
        "gre-with-key": (101, bytes(outer / GRE(proto=0x0800, key_present=1, key=5) / inner)),
        "mpls-two-labels": (1, bytes(Ether(**MACS, type=0x8847) / MPLS(label=16, s=0) / MPLS(label=17, s=1) / inner)),
        "pppoe": (1, bytes(Ether(**MACS) / PPPoE(sessionid=3) / PPP(proto=0x0021) / inner)),
    }


@pytest.mark.parametrize("name", list(_tunnels()))
def test_tunnels_report_the_inner_ip_header(name):
    linktype, frame = _tunnels()[name]
    df = read(cw.pcap([(T0, frame)], linktype=linktype))
    assert len(df) == 1, df.attrs["stats"]
    check_v4_row(df.iloc[0])


# -- pcapng clocks: every if_tsresol and if_tsoffset ---------------------------------------------------
TS_LIMIT = 1 << 62  # times are clamped to +-2^62 ns (years 1823-2116)
RAW_TIMES = [0, 1, 1_700_000_000_123_456, 0x1234_5678_9ABC_DEF0, 0xFFFF_FFFF_FFFF_FFF0]


def exact_ns(raw: int, tsresol: int, tsoffset: int) -> int:
    """The time the pcapng spec defines, in Python integers, clamped as the reader clamps."""
    per_second = (2 if tsresol & 0x80 else 10) ** (tsresol & 0x7F)
    return max(-TS_LIMIT, min(TS_LIMIT, raw * 10**9 // per_second + tsoffset * 10**9))


@pytest.mark.parametrize("tsoffset", [0, -5, 3_000_000_000, 1 << 62, -(1 << 62), (1 << 63) - 1],
                         ids=["none", "minus5s", "plus3e9s", "2^62s", "minus2^62s", "max"])
@pytest.mark.parametrize("tsresol", [0, 3, 6, 9, 12, 19, 20, 28, 0x7F, 0x80, 0x80 | 20, 0x80 | 31, 0x80 | 34,
                                     0x80 | 35, 0x80 | 63, 0x80 | 64, 0x80 | 96, 0xFF])
def test_pcapng_every_time_resolution_is_exact_and_never_raises(tsresol, tsoffset):
    """10^-n and 2^-n for every n, huge offsets: the frames are kept, times exact or clamped and said once."""
    eth = bytes(Ether(**MACS) / IP(v4()))
    data = cw.shb() + cw.idb(1, tsresol=tsresol, tsoffset=tsoffset) + b"".join(cw.epb(eth, t) for t in RAW_TIMES)
    df = read(data)
    assert df["frame"].tolist() == [1, 2, 3, 4, 5]
    assert df["ts_ns"].tolist() == [exact_ns(t, tsresol, tsoffset) for t in RAW_TIMES]
    problems = df.attrs["stats"]["problems"]
    if any(abs(exact_ns(t, tsresol, tsoffset)) == TS_LIMIT for t in RAW_TIMES):
        (problem,) = problems
        assert "interface 0" in problem and "clamped" in problem and "offset 28" in problem
    else:
        assert problems == []


@settings(max_examples=300, deadline=None)
@given(raw=st.integers(0, (1 << 64) - 2), tsresol=st.integers(0, 255), tsoffset=st.integers(-(1 << 63), (1 << 63) - 1))
def test_pcapng_time_conversion_property(raw, tsresol, tsoffset):
    from analyzer.sources.pcapng import Interface
    got, _ = Interface(1, 0, tsresol, tsoffset).to_ns(np.array([raw], np.uint64).view(np.int64))
    assert int(got[0]) == exact_ns(raw, tsresol, tsoffset)


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (Debian package tshark)")
@pytest.mark.parametrize("tsresol,same_times", [(3, True), (9, True), (0x80 | 20, True), (0x80 | 31, True),
                                                (0x7F, True), (0xFF, True), (19, False), (28, False),
                                                (0x80 | 40, False), (0x80 | 63, False), (0x80 | 64, False)])
def test_pcapng_time_resolutions_as_tshark(tmp_path, tsresol, same_times):
    """tshark reads every frame too, and its times are ours (those not clamped) where its arithmetic is
    exact; it is not for 10^-19 s, 2^-40 s or 2^-63 s (0xFFFF...F0 ticks of 2^-40 s are 16777215.999999999 s,
    tshark says 16777215.010144255), and it takes 10^-20 s and finer, 2^-64 s and finer as no time (right
    for 10^-127 and 2^-127 s, where every 64-bit count is under a nanosecond)."""
    eth = bytes(Ether(**MACS) / IP(v4()))
    path = tmp_path / "clock.pcapng"
    path.write_bytes(cw.shb() + cw.idb(1, tsresol=tsresol) + b"".join(cw.epb(eth, t) for t in RAW_TIMES))
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch"],
                         capture_output=True, text=True, check=True).stdout.split()
    theirs = [int(Decimal(t).scaleb(9)) for t in out]
    ours = read(path.read_bytes())["ts_ns"].tolist()
    assert len(ours) == len(theirs) == len(RAW_TIMES)
    kept = [k for k, t in enumerate(ours) if abs(t) != TS_LIMIT]
    assert ([ours[k] for k in kept] == [theirs[k] for k in kept]) == same_times, (ours, theirs)


def test_bad_clock_does_not_stop_a_multi_file_run(tmp_path):
    from analyzer.commands.cli import main
    eth = bytes(Ether(**MACS) / IP(v4()))
    odd, good = tmp_path / "odd.pcapng", tmp_path / "good.pcap"
    odd.write_bytes(cw.shb() + cw.idb(1, tsresol=0xFF, tsoffset=1 << 62) + cw.epb(eth, 5))
    good.write_bytes(cw.pcap([(T0, eth)]))
    assert main(["analyze", str(odd), str(good), "-o", str(tmp_path / "out"), "-q"]) == 1  # the clamp is said
    assert (tmp_path / "out" / "odd.pcapng" / "connections.csv").exists()
    assert (tmp_path / "out" / "good.pcap" / "connections.csv").exists()
