"""Link layers and encapsulations seen on real captures: each frame is built here from its
specification (bytes, ``struct``), decodes to the right TCP row, and agrees with tshark where tshark
reads it (fields tcp.srcport, tcp.dstport, tcp.seq_raw, tcp.len and the innermost IP addresses).

Radiotap + 802.11 (127, and 105 without radiotap), NFLOG (239), Cisco HDLC (104), ARCNET (129), VXLAN
(UDP 4789), Cisco FabricPath (EtherType 0x8903), and PPPoE bounded by its own length.
"""
from __future__ import annotations

import io
import shutil
import struct
import subprocess

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

import analyzer
from tests import capwrite as cw

T0 = 1_700_000_000_123_456_000
SRC, DST = "10.0.0.1", "10.0.0.2"
MAC_A, MAC_B, MAC_C, MAC_D = (bytes([2, 0, 0, 0, 0, k]) for k in range(1, 5))


def tcp_ip(payload: bytes = b"x" * 10, v6: bool = False) -> bytes:
    seg = TCP(sport=40000, dport=443, seq=1000, ack=2000, flags="PA", window=512) / payload
    if v6:
        return bytes(IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=50) / seg)
    return bytes(IP(src=SRC, dst=DST, id=77, ttl=63) / seg)


def ether(ethertype: int, body: bytes, dst: bytes = MAC_B, src: bytes = MAC_A) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + body


# -- 802.11 (IEEE 802.11-2020 9.2.4) and radiotap (radiotap.org) ------------------------------------------
SNAP_IPV4 = bytes([0xAA, 0xAA, 0x03, 0, 0, 0]) + struct.pack("!H", 0x0800)
SNAP_IPV6 = bytes([0xAA, 0xAA, 0x03, 0, 0, 0]) + struct.pack("!H", 0x86DD)


def wlan_data(body: bytes, subtype: int = 0, ds: int = 1, protected: bool = False, order: bool = False,
              qos: int = 0, ftype: int = 2, pad: bool = False) -> bytes:
    """A data frame: frame control, duration, 3 addresses, sequence, a 4th address when ToDS and FromDS,
    QoS Control for QoS subtypes, HT Control when the Order bit is set in a QoS frame."""
    fc = bytes([subtype << 4 | ftype << 2, ds | (0x40 if protected else 0) | (0x80 if order else 0)])
    head = fc + b"\0\0" + MAC_A + MAC_B + MAC_C + b"\x10\0" + (MAC_D if ds == 3 else b"")
    if subtype & 8:
        head += struct.pack("<H", qos)
        if order:
            head += b"\0\0\0\0"
    if pad:
        head += b"\0" * (-len(head) % 4)
    return head + body


def radiotap(frame: bytes, flags: int | None = None, tsft: bool = False, extended: bool = False) -> bytes:
    """A radiotap header: version, pad, length, present bitmap(s), then TSFT (8-aligned) and Flags."""
    present = (1 if tsft else 0) | (2 if flags is not None else 0) | (1 << 31 if extended else 0)
    words = struct.pack("<I", present) + (struct.pack("<I", 0) if extended else b"")
    fields = b""
    if tsft:
        fields += b"\0" * (-(4 + len(words)) % 8) + struct.pack("<Q", 123456789)
    if flags is not None:
        fields += bytes([flags]) + b"\x02"  # Flags, then a Rate byte
    return struct.pack("<BBH", 0, 0, 4 + len(words) + len(fields)) + words + fields + frame


# -- NFLOG (libpcap pcap/nflog.h), Cisco HDLC, ARCNET (tcpdump.org LINKTYPE_ARCNET_LINUX, RFC 1201) --------
def nflog(packet: bytes, family: int = 2, big: bool = False) -> bytes:
    """NFLOG header, then TLVs in the capturing host's byte order: packet header, prefix, payload."""
    e = ">" if big else "<"

    def tlv(kind: int, value: bytes) -> bytes:
        return struct.pack(e + "HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)

    return bytes([family, 0]) + struct.pack("!H", 5) + tlv(1, struct.pack("!HBB", 0x0800, 1, 0)) + \
        tlv(10, b"firewall-log\0") + tlv(9, packet)


def c_hdlc(ethertype: int, packet: bytes) -> bytes:
    return bytes([0x0F, 0x00]) + struct.pack("!H", ethertype) + packet


def arcnet(protocol: int, packet: bytes, exception: bool = False) -> bytes:
    """Source, destination, offset (2 bytes), protocol id, then split flag and sequence for RFC 1201
    and RFC 2497 ids (an exception packet: FF, FF FF padding, protocol id again first)."""
    head = bytes([0x01, 0x02]) + b"\0\0" + bytes([protocol])
    if protocol in (240, 241):
        return head + packet
    if exception:
        head += bytes([0xFF, 0xFF, 0xFF, protocol])
    return head + bytes([0]) + struct.pack("!H", 7) + packet


# -- VXLAN (RFC 7348), Cisco FabricPath, PPPoE (RFC 2516) --------------------------------------------------
def udp(sport: int, dport: int, body: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(body), 0) + body


def ipv4(proto: int, body: bytes, src: str = "192.0.2.1", dst: str = "192.0.2.2") -> bytes:
    return bytes(IP(src=src, dst=dst, id=1, ttl=9, proto=proto) / body)


def vxlan(inner_frame: bytes, vni: int = 42, v6: bool = False) -> bytes:
    tunnel = udp(51000, 4789, struct.pack("!II", 0x08000000, vni << 8) + inner_frame)
    if v6:
        return ether(0x86DD, bytes(IPv6(src="2001:db8::a", dst="2001:db8::b", nh=17) / tunnel))
    return ether(0x0800, ipv4(17, tunnel))


def fabricpath(inner_frame: bytes, tag: int | None = None) -> bytes:
    """Outer hierarchical MAC addresses, (an 802.1ad tag,) EtherType 0x8903, FTag/TTL, the inner Ethernet
    frame, and a 4-byte FCS over the whole."""
    outer = MAC_C + MAC_D + (struct.pack("!HH", 0x88A8, tag) if tag is not None else b"")
    return outer + struct.pack("!HH", 0x8903, 0x0420) + inner_frame + b"\xfc\x5c\xfc\x5c"


def pppoe(packet: bytes, claimed_extra: int = 0, padding: int = 0) -> bytes:
    """A PPPoE session frame whose IP header may claim ``claimed_extra`` bytes beyond the PPPoE payload,
    followed by ``padding`` bytes of Ethernet padding."""
    if claimed_extra:
        packet = packet[:2] + struct.pack("!H", len(packet) + claimed_extra) + packet[4:]
    session = struct.pack("!BBHH", 0x11, 0, 3, 2 + len(packet)) + struct.pack("!H", 0x0021) + packet
    return ether(0x8864, session + b"\0" * padding)


# -- the cases ------------------------------------------------------------------------------------------
V4 = (SRC, DST)
V6 = ("2001:db8::1", "2001:db8::2")
# name: (link type, frame, (src, dst), vlan)
DECODED = {
    "radiotap-data": (127, radiotap(wlan_data(SNAP_IPV4 + tcp_ip())), V4, -1),
    "radiotap-from-ds": (127, radiotap(wlan_data(SNAP_IPV4 + tcp_ip(), ds=2)), V4, -1),
    "radiotap-qos": (127, radiotap(wlan_data(SNAP_IPV4 + tcp_ip(), subtype=8)), V4, -1),
    "radiotap-qos-htc-4addr-fcs": (127, radiotap(wlan_data(SNAP_IPV4 + tcp_ip(), subtype=8, ds=3, order=True)
                                                 + b"\1\2\3\4", flags=0x10, tsft=True, extended=True), V4, -1),
    "radiotap-datapad": (127, radiotap(wlan_data(SNAP_IPV4 + tcp_ip(), subtype=8, ds=3, pad=True), flags=0x20), V4, -1),
    "radiotap-ipv6": (127, radiotap(wlan_data(SNAP_IPV6 + tcp_ip(v6=True)), tsft=True), V6, -1),
    "ieee802-11": (105, wlan_data(SNAP_IPV4 + tcp_ip(), subtype=8), V4, -1),
    "nflog": (239, nflog(tcp_ip()), V4, -1),
    "nflog-ipv6": (239, nflog(tcp_ip(v6=True), family=10), V6, -1),
    "c-hdlc": (104, c_hdlc(0x0800, tcp_ip()), V4, -1),
    "c-hdlc-ipv6": (104, c_hdlc(0x86DD, tcp_ip(v6=True)), V6, -1),
    "arcnet-rfc1201": (129, arcnet(212, tcp_ip()), V4, -1),
    "arcnet-rfc1051": (129, arcnet(240, tcp_ip()), V4, -1),
    "arcnet-ipv6": (129, arcnet(196, tcp_ip(v6=True)), V6, -1),
    "arcnet-exception": (129, arcnet(212, tcp_ip(), exception=True), V4, -1),
    "vxlan": (1, vxlan(ether(0x0800, tcp_ip())), V4, -1),
    "vxlan-ipv6-outer-tagged-inner": (1, vxlan(ether(0x8100, struct.pack("!HH", 5, 0x0800) + tcp_ip()), v6=True),
                                      V4, 5),
    "vxlan-ipv6-inner": (1, vxlan(ether(0x86DD, tcp_ip(v6=True))), V6, -1),
    "fabricpath": (1, fabricpath(ether(0x0800, tcp_ip())), V4, -1),
    "fabricpath-802.1ad": (1, fabricpath(ether(0x0800, tcp_ip()), tag=100), V4, -1),
    "fabricpath-inner-vlan": (1, fabricpath(ether(0x8100, struct.pack("!HH", 7, 0x86DD) + tcp_ip(v6=True))), V6, 7),
    "pppoe-length-bounds-ip": (1, pppoe(tcp_ip(), claimed_extra=6, padding=6), V4, -1),
}
# tshark 4.0.17 reads the exception form as split flag 255, sequence 65535, then a bogus IP header
NOT_IN_TSHARK = {"arcnet-exception"}

NOT_IP = {
    "radiotap-protected": (127, radiotap(wlan_data(SNAP_IPV4 + tcp_ip(), protected=True))),
    "radiotap-null-data": (127, radiotap(wlan_data(b"", subtype=4))),
    "radiotap-beacon": (127, radiotap(wlan_data(b"\0" * 40, ftype=0, subtype=8, ds=0))),
    "radiotap-a-msdu": (127, radiotap(wlan_data(SNAP_IPV4 + tcp_ip(), subtype=8, qos=0x80))),
    "radiotap-not-snap": (127, radiotap(wlan_data(b"\x42\x42\x03" + b"\0" * 40))),
    "nflog-not-ip": (239, nflog(tcp_ip(), family=7)),
    "c-hdlc-slarp": (104, c_hdlc(0x8035, b"\0" * 40)),
    "arcnet-arp": (129, arcnet(213, b"\0" * 28)),
    "vxlan-arp-inside": (1, vxlan(ether(0x0806, b"\0" * 28))),
}


def read(linktype: int, frames: list[bytes]):
    return analyzer.read_packets(io.BytesIO(cw.pcap([(T0, f) for f in frames], linktype=linktype)))


@pytest.mark.parametrize("name", list(DECODED))
def test_link_layer_decodes_to_the_tcp_row(name):
    linktype, frame, (src, dst), vlan = DECODED[name]
    df = read(linktype, [frame])
    assert len(df) == 1, df.attrs["stats"]
    r = df.iloc[0]
    assert (r.src, r.dst, r.sport, r.dport, r.seq_raw, r.ack_raw) == (src, dst, 40000, 443, 1000, 2000)
    assert (r.payload_len, r["flags"], r.window, r.vlan) == (10, 0x18, 512, vlan)


@pytest.mark.parametrize("name", list(NOT_IP))
def test_frames_without_ip_are_counted_not_decoded(name):
    linktype, frame = NOT_IP[name]
    df = read(linktype, [frame])
    assert len(df) == 0
    assert df.attrs["stats"]["skipped"] == {"not IP (ARP, LLC, other EtherTypes)": 1}


@pytest.mark.parametrize("name", list(DECODED))
def test_every_cut_of_the_frame_is_skipped_or_decoded(name):
    """The frame cut at every length (a snaplen): a row exactly when its TCP header was captured, with
    the lengths from the IP header; nothing read beyond the bytes captured."""
    linktype, frame, _, _ = DECODED[name]
    tcp_end = frame.index(struct.pack("!HH", 40000, 443)) + 20
    frames = [(T0, frame[:n]) for n in range(len(frame))]
    df = analyzer.read_packets(io.BytesIO(cw.pcap(frames, linktype=linktype, wirelens=[len(frame)] * len(frame))))
    assert df["caplen"].tolist() == list(range(tcp_end, len(frame)))
    assert (df["seq_raw"] == 1000).all() and (df["payload_len"] == 10).all()
    assert df["truncated"].tolist() == [n < tcp_end + 10 for n in range(tcp_end, len(frame))]  # 10 payload bytes


def test_nflog_written_big_endian():
    """TLV lengths and types are in the capturing host's byte order (a big-endian file from a big-endian host)."""
    frames = [nflog(tcp_ip(), big=True), nflog(tcp_ip(v6=True), family=10, big=True)]
    df = analyzer.read_packets(io.BytesIO(cw.pcap([(T0, f) for f in frames], linktype=239, big=True)))
    assert df["src"].tolist() == [SRC, "2001:db8::1"] and df["payload_len"].tolist() == [10, 10]


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (Debian package tshark)")
def test_link_layers_as_tshark(tmp_path):
    """One small pcap per link type, read by tshark: the same TCP fields, innermost addresses and VLAN."""
    fields = ["tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.len", "ip.src", "ipv6.src", "vlan.id"]
    for name, (linktype, frame, _, _) in DECODED.items():
        if name in NOT_IN_TSHARK:
            continue
        path = tmp_path / f"{name}.pcap"
        path.write_bytes(cw.pcap([(T0, frame)], linktype=linktype))
        out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", *sum((["-e", f] for f in fields), [])],
                             capture_output=True, text=True, check=True).stdout.rstrip("\n").split("\t")
        theirs = dict(zip(fields, out))
        r = analyzer.read_packets(path).iloc[0]
        inner_src = (theirs["ipv6.src"] if r.ip_version == 6 else theirs["ip.src"]).split(",")[-1]
        vlans = theirs["vlan.id"].split(",") if theirs["vlan.id"] else []
        assert (r.sport, r.dport, r.seq_raw, r.ack_raw, r.payload_len, r.src) == (
            int(theirs["tcp.srcport"]), int(theirs["tcp.dstport"]), int(theirs["tcp.seq_raw"]),
            int(theirs["tcp.ack_raw"]), int(theirs["tcp.len"]), inner_src), name
        assert r.vlan == (int(vlans[0]) if vlans else -1), name
