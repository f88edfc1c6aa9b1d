"""The compiled decoding kernel: one loop over a frame batch, link layer to TCP options, into a ``ColumnStore``.

The per-frame work is one compiled loop (numba) over the batch's offset arrays that writes header
fields into preallocated column arrays (``store.py``); there is no Python object per packet.

Layers understood (constants from https://www.tcpdump.org/linktypes.html):
  Ethernet (1) with any stack of 802.1Q / 802.1ad / 0x9100 tags, Linux SLL (113) and SLL2 (276),
  BSD NULL (0) and LOOP (108), RAW (101, and the platform DLT values 12 and 14), IPv4 (228), IPv6 (229),
  Cisco HDLC (104), 802.11 data frames (105) and behind radiotap (127), ARCNET (129), NFLOG (239).
  IPv4 with options; IPv6 with the extension-header chain (hop-by-hop, routing, destination options,
  mobility, HIP, shim6, AH, fragment). A fragmented datagram is handed back for reassembly
  (``fragments.py``) before TCP is read. Tunnels (IP in IP, 6in4, 4in6, GRE version 0, VXLAN), Cisco
  FabricPath, MPLS label stacks and PPPoE sessions are followed to the innermost IP header.
"""
from __future__ import annotations

import numpy as np

from ..jit import njit
from ..schema import SACK_MAX_BLOCKS
from ..sources.frames import (LINKTYPE_ARCNET_LINUX, LINKTYPE_C_HDLC, LINKTYPE_ETHERNET, LINKTYPE_IEEE802_11,
                              LINKTYPE_IEEE802_11_RADIOTAP, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL,
                              LINKTYPE_LINUX_SLL2, LINKTYPE_LOOP, LINKTYPE_NFLOG, LINKTYPE_NULL, LINKTYPE_RAW)
from .store import (Q_ACK, Q_CAPLEN, Q_CLOCK, Q_DPORT, Q_DST0, Q_FLAGS, Q_FRAG, Q_FRAME, Q_HLEN, Q_IFACE, Q_IPID, Q_IPVER,
                    Q_MSS, Q_PLEN, Q_SACK0, Q_SACKN, Q_SACKP, Q_SEQ, Q_SPORT, Q_SRC0, Q_TFO, Q_TRUNC, Q_TSECR,
                    Q_TSNS, Q_TSVAL, Q_TTL, Q_VLAN, Q_VLAN2, Q_WIN, Q_WIRELEN, Q_WS)

# -- per-frame decode status ----------------------------------------------------------------------
ST_TCP = 0
ST_NOT_IP = 1
ST_NOT_TCP = 2
ST_UNKNOWN_LINK = 3
ST_BAD_IP = 4
ST_BAD_TCP = 5
ST_FRAGMENT = 6
ST_SHORT = 7
ST_OTHER_GROUP = 8  # a TCP segment of a connection in another connection group (``groups``): no row here
ST_TUNNEL = 9  # internal: an IP header that carries another one
MAX_TUNNEL_DEPTH = 4

SKIP_REASONS = {
    ST_NOT_IP: "not IP (ARP, LLC, other EtherTypes)",
    ST_NOT_TCP: "IP but not TCP",
    ST_BAD_IP: "malformed IP header",
    ST_BAD_TCP: "malformed TCP header",
    ST_SHORT: "frame ends before the TCP header does (snaplen or damage)",
}

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100  # IEEE 802.1Q
ETHERTYPE_QINQ = 0x88A8  # IEEE 802.1ad
ETHERTYPE_QINQ_OLD = 0x9100
ETHERTYPE_MPLS = 0x8847  # RFC 3032
ETHERTYPE_MPLS_MC = 0x8848
ETHERTYPE_PPPOE = 0x8864  # RFC 2516 session stage
ETHERTYPE_FABRICPATH = 0x8903  # Cisco FabricPath: 2 bytes of FTag/TTL, then a whole inner Ethernet frame
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057
DLT_RAW_BSD, DLT_RAW_OPENBSD = 12, 14  # raw IP under the platforms' own DLT numbers

IPPROTO_TCP = 6
IPPROTO_IPIP = 4  # IPv4 in IP (RFC 2003)
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41  # IPv6 in IP (RFC 4213)
IPPROTO_GRE = 47  # RFC 2784
VXLAN_PORT = 4789  # RFC 7348: 8-byte header, then an Ethernet frame (tshark's default port)

AF_INET = 2  # address families of BSD loopback and NFLOG headers
AF_INET6 = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, macOS

# IEEE 802.11-2020 section 9.2.4: frame control, then addresses per ToDS/FromDS, QoS and HT control
WLAN_TYPE_DATA = 2
WLAN_SUBTYPE_NULL = 0x4  # subtype bit: a data frame without a body
WLAN_SUBTYPE_QOS = 0x8  # subtype bit: a QoS Control field follows the addresses
WLAN_FC_DS = 0x03  # ToDS | FromDS: both set, a fourth address follows
WLAN_FC_PROTECTED = 0x40  # encrypted body: not readable as IP
WLAN_FC_ORDER = 0x80  # in a QoS frame: a 4-byte HT Control field follows
WLAN_QOS_AMSDU = 0x80  # QoS Control: the body is an A-MSDU (not followed)
LLC_SNAP = 0xAAAA03  # 802.2 LLC with a SNAP header (RFC 1042): OUI, then an EtherType
RADIOTAP_TSFT, RADIOTAP_FLAGS, RADIOTAP_EXT = 1 << 0, 1 << 1, 1 << 31  # present bits (radiotap.org)
RADIOTAP_F_FCS, RADIOTAP_F_DATAPAD = 0x10, 0x20  # flags: FCS at the end; header padded to 4 bytes

NFULA_PAYLOAD = 9  # NFLOG TLV holding the packet (libpcap pcap/nflog.h)
NFLOG_TLV_TYPE = 0x3FFF  # type bits of a TLV (the top two are netlink's nested / byte-order flags)

ARC_P_IP, ARC_P_IPV6 = 212, 196  # ARCNET protocol ids with RFC 1201 / RFC 2497 headers
ARC_P_IP_RFC1051, ARC_P_ARP_RFC1051 = 240, 241  # the older ids, without split flag and sequence
ARC_EXCEPTION = 0xFF  # split flag of an RFC 1201 exception packet
# IPv6 extension headers with the generic (next header, length in 8-octet units - 1) layout (RFC 8200)
IPV6_EXT_GENERIC = (0, 43, 60, 135, 139, 140)
IPV6_EXT_AH = 51  # length in 4-octet units - 2 (RFC 4302)
IPV6_EXT_FRAGMENT = 44

TCPOPT_EOL, TCPOPT_NOP, TCPOPT_MSS, TCPOPT_WSCALE = 0, 1, 2, 3  # RFC 9293, RFC 7323
TCPOPT_SACK_PERM, TCPOPT_SACK, TCPOPT_TIMESTAMP = 4, 5, 8  # RFC 2018, RFC 7323
TCPOPT_TFO, TCPOPT_EXP, TFO_EXP_MAGIC = 34, 254, 0xF989  # RFC 7413 (and its experimental form)

# Connection groups (``analyze --jobs``): group ``hash(endpoints) % groups`` decodes a segment, the others
# skip it after its ports. The hash is a sum over the two endpoints (address words, port), so both
# directions of a connection, and every connection reusing its 4-tuple, fall in the same group.
GROUP_MUL = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio (Fibonacci hashing, Knuth 6.4)
GROUP_MIX = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64's finalizer (Steele, Lea, Flood 2014)

KNOWN_LINKTYPES = np.array([LINKTYPE_NULL, LINKTYPE_ETHERNET, DLT_RAW_BSD, DLT_RAW_OPENBSD, LINKTYPE_RAW,
                            LINKTYPE_C_HDLC, LINKTYPE_IEEE802_11, LINKTYPE_LOOP, LINKTYPE_LINUX_SLL,
                            LINKTYPE_IEEE802_11_RADIOTAP, LINKTYPE_ARCNET_LINUX, LINKTYPE_IPV4, LINKTYPE_IPV6,
                            LINKTYPE_NFLOG, LINKTYPE_LINUX_SLL2], dtype=np.int32)


@njit(cache=True, nogil=True, _nrt=False)
def _be16(d, p):
    return (np.int64(d[p]) << 8) | np.int64(d[p + 1])


@njit(cache=True, nogil=True, _nrt=False)
def _le16(d, p):
    return np.int64(d[p]) | (np.int64(d[p + 1]) << 8)


@njit(cache=True, nogil=True, _nrt=False)
def _le32(d, p):
    return _le16(d, p) | (_le16(d, p + 2) << 16)


@njit(cache=True, nogil=True, _nrt=False)
def _be32(d, p):
    return (np.int64(d[p]) << 24) | (np.int64(d[p + 1]) << 16) | (np.int64(d[p + 2]) << 8) | np.int64(d[p + 3])


@njit(cache=True, nogil=True, _nrt=False)
def _endpoint_hash(u32, w, j, port):
    """Hash of one endpoint of row ``j``: the address words from matrix row ``w`` on, and the port."""
    h = np.uint64(port)
    for k in range(4):
        h = (h ^ np.uint64(u32[w + k, j])) * GROUP_MUL
        h ^= h >> np.uint64(32)
    return h


@njit(cache=True, nogil=True, _nrt=False)
def connection_group(u32, j, sport, dport, groups):
    """The connection group (0 .. ``groups`` - 1) of row ``j``, whose addresses are written, and its ports."""
    h = _endpoint_hash(u32, np.int64(Q_SRC0), j, sport) + _endpoint_hash(u32, np.int64(Q_DST0), j, dport)
    h = (h ^ (h >> np.uint64(30))) * GROUP_MIX
    h ^= h >> np.uint64(31)
    return np.int64(h % np.uint64(groups))


@njit(cache=True, nogil=True, _nrt=False)
def split_groups(u32, u16, n, groups, rows, counts):
    """Rows ``0 .. n-1`` of a store (its uint32 and uint16 matrices) by connection group: the indices of
    group ``g``'s rows, in order, in ``rows[g, :counts[g]]``."""
    for g in range(groups):
        counts[g] = 0
    for j in range(n):
        g = connection_group(u32, j, np.int64(u16[Q_SPORT, j]), np.int64(u16[Q_DPORT, j]), groups)
        rows[g, counts[g]] = j
        counts[g] += 1


@njit(cache=True, nogil=True, inline="always")
def _decode_tcp(d, t, tcp_len, end, j, i64, i32, u32, u16, i16, i8, b, groups, group):
    if tcp_len < 20:
        return ST_BAD_TCP
    if t + 20 > end:
        return ST_SHORT
    hlen = (np.int64(d[t + 12]) >> 4) * 4
    if hlen < 20 or hlen > tcp_len:
        return ST_BAD_TCP
    if groups > 1 and connection_group(u32, j, _be16(d, t), _be16(d, t + 2), groups) != group:
        return ST_OTHER_GROUP
    u16[Q_SPORT, j] = _be16(d, t)
    u16[Q_DPORT, j] = _be16(d, t + 2)
    u32[Q_SEQ, j] = _be32(d, t + 4)
    u32[Q_ACK, j] = _be32(d, t + 8)
    u16[Q_FLAGS, j] = ((np.int64(d[t + 12]) & 0xF) << 8) | np.int64(d[t + 13])  # reserved bits too, as tshark
    u16[Q_WIN, j] = _be16(d, t + 14)
    i16[Q_HLEN, j] = hlen
    i32[Q_PLEN, j] = tcp_len - hlen
    b[Q_TRUNC, j] = 1 if t + tcp_len > end else 0
    i32[Q_MSS, j] = -1
    i16[Q_WS, j] = -1
    i16[Q_TFO, j] = -1
    b[Q_SACKP, j] = 0
    i8[Q_SACKN, j] = 0
    for e in range(2 * SACK_MAX_BLOCKS):
        u32[Q_SACK0 + e, j] = 0
    i64[Q_TSVAL, j] = -1
    i64[Q_TSECR, j] = -1
    o = t + 20
    oend = min(t + hlen, end)
    while o < oend:
        kind = d[o]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            o += 1
            continue
        if o + 1 >= oend:
            break
        olen = np.int64(d[o + 1])
        if olen < 2 or o + olen > oend:
            break
        if kind == TCPOPT_MSS and olen == 4:
            i32[Q_MSS, j] = _be16(d, o + 2)
        elif kind == TCPOPT_WSCALE and olen == 3:
            i16[Q_WS, j] = d[o + 2]
        elif kind == TCPOPT_SACK_PERM and olen == 2:
            b[Q_SACKP, j] = 1
        elif kind == TCPOPT_SACK and olen >= 10 and (olen - 2) % 8 == 0:
            nb = min((olen - 2) // 8, SACK_MAX_BLOCKS)
            i8[Q_SACKN, j] = nb
            for s in range(nb):
                u32[Q_SACK0 + 2 * s, j] = _be32(d, o + 2 + 8 * s)
                u32[Q_SACK0 + 2 * s + 1, j] = _be32(d, o + 6 + 8 * s)
        elif kind == TCPOPT_TIMESTAMP and olen == 10:
            i64[Q_TSVAL, j] = _be32(d, o + 2)
            i64[Q_TSECR, j] = _be32(d, o + 6)
        elif kind == TCPOPT_TFO:
            i16[Q_TFO, j] = olen - 2
        elif kind == TCPOPT_EXP and olen >= 4 and _be16(d, o + 2) == TFO_EXP_MAGIC:
            i16[Q_TFO, j] = olen - 4
        o += olen
    return ST_TCP


@njit(cache=True, nogil=True, _nrt=False)
def _gre_inner(d, g, end):
    """IP version carried by a GRE header at ``g`` (RFC 2784/2890), and the inner offset; 0 if none."""
    if g + 4 > end:
        return 0, g
    fl = _be16(d, g)
    if fl & 7:  # version 1 is PPTP's enhanced GRE carrying PPP: not followed here
        return 0, g
    hl = 4 + (4 if fl & 0xC000 else 0) + (4 if fl & 0x2000 else 0) + (4 if fl & 0x1000 else 0)
    proto = _be16(d, g + 2)
    if proto == ETHERTYPE_IPV4:
        return 4, g + hl
    if proto == ETHERTYPE_IPV6:
        return 6, g + hl
    return 0, g


@njit(cache=True, nogil=True, _nrt=False)
def _udp_tunnel(d, u, end, wend, j, i32):
    """The IP header inside a UDP datagram at ``u`` when it is VXLAN (RFC 7348: UDP header, 8-byte VXLAN
    header, inner Ethernet frame); returns (status, ip offset, ip version, wire end): ST_TUNNEL or not TCP."""
    if u + 8 > end or _be16(d, u + 2) != VXLAN_PORT:
        return ST_NOT_TCP, u, 0, wend
    e = u + 16
    if e + 14 > end:
        return ST_SHORT, u, 0, wend
    q, v, st, wend = _ethertype_chain(d, e + 14, end, wend, _be16(d, e + 12), j, i32)
    return (ST_TUNNEL if st == ST_TCP else st), q, v, wend


@njit(cache=True, nogil=True, inline="always")
def _decode_ip(d, p, end, wend, ipver, j, i64, i32, u32, u16, i16, i8, b, groups, group):
    """Decode the IP layer at ``p`` into row ``j``; returns a status (ST_FRAGMENT: Python's turn).

    Tunnels (IP in IP, IPv6 in IPv4 and back, GRE version 0, VXLAN) are followed to the innermost IP
    header, whose addresses the row reports, as tshark's fields do. A segment of another connection group
    (``groups`` > 1, this one ``group``) is ST_OTHER_GROUP, its row not written.
    """
    for _depth in range(MAX_TUNNEL_DEPTH):
        st, p, ipver, wend = _decode_ip_header(d, p, end, wend, ipver, j, i64, i32, u32, u16, i16, i8, b, groups,
                                               group)
        if st != ST_TUNNEL:
            return st
    return ST_NOT_TCP


@njit(cache=True, nogil=True, inline="always")
def _decode_ip_header(d, p, end, wend, ipver, j, i64, i32, u32, u16, i16, i8, b, groups, group):
    """One IP header; returns (status, next offset, next version, next wire end) for tunnels."""
    i8[Q_IPVER, j] = ipver
    i32[Q_IPID, j] = -1
    if ipver == 4:
        if p + 20 > end:
            return ST_SHORT, p, 0, wend
        if (d[p] >> 4) != 4:
            return ST_BAD_IP, p, 0, wend
        ihl = (np.int64(d[p]) & 0xF) * 4
        total = _be16(d, p + 2)
        if total == 0:  # TSO: the NIC fills the length in later (Zeek PR #1831)
            total = end - p
        if ihl < 20 or total < ihl:
            return ST_BAD_IP, p, 0, wend
        if total > wend - p:  # longer than the frame on the wire: trust the frame (as Wireshark)
            total = wend - p
        i32[Q_IPID, j] = _be16(d, p + 4)
        i16[Q_TTL, j] = d[p + 8]
        for w in range(3):
            u32[Q_SRC0 + w, j] = 0
            u32[Q_DST0 + w, j] = 0
        u32[Q_SRC0 + 3, j] = _be32(d, p + 12)
        u32[Q_DST0 + 3, j] = _be32(d, p + 16)
        frag = _be16(d, p + 6)
        if (frag & 0x2000) or (frag & 0x1FFF):
            return ST_FRAGMENT, p, 0, wend
        proto = d[p + 9]
        if p + ihl > end:
            return ST_SHORT, p, 0, wend
        if proto == IPPROTO_TCP:
            return (_decode_tcp(d, p + ihl, total - ihl, end, j, i64, i32, u32, u16, i16, i8, b, groups, group),
                    p, 0, wend)
        if proto == IPPROTO_IPIP:
            return ST_TUNNEL, p + ihl, 4, p + total
        if proto == IPPROTO_IPV6:
            return ST_TUNNEL, p + ihl, 6, p + total
        if proto == IPPROTO_GRE:
            v, q = _gre_inner(d, p + ihl, end)
            if v:
                return ST_TUNNEL, q, v, p + total
        if proto == IPPROTO_UDP:
            return _udp_tunnel(d, p + ihl, end, p + total, j, i32)
        return ST_NOT_TCP, p, 0, wend
    if ipver == 6:
        if p + 40 > end:
            return ST_SHORT, p, 0, wend
        if (d[p] >> 4) != 6:
            return ST_BAD_IP, p, 0, wend
        remaining = _be16(d, p + 4)
        nh = d[p + 6]
        i16[Q_TTL, j] = d[p + 7]
        for w in range(4):
            u32[Q_SRC0 + w, j] = _be32(d, p + 8 + 4 * w)
            u32[Q_DST0 + w, j] = _be32(d, p + 24 + 4 * w)
        q = p + 40
        if remaining == 0:  # jumbogram or TSO: take what was captured
            remaining = end - q
        if remaining > wend - q:
            remaining = wend - q
        for _hop in range(32):
            if nh == IPPROTO_TCP or nh == IPPROTO_IPIP or nh == IPPROTO_IPV6 or nh == IPPROTO_GRE \
                    or nh == IPPROTO_UDP:
                break
            if q + 8 > end:
                return ST_SHORT, p, 0, wend
            if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140:
                hl = (np.int64(d[q + 1]) + 1) * 8
            elif nh == IPV6_EXT_AH:
                hl = (np.int64(d[q + 1]) + 2) * 4
            elif nh == IPV6_EXT_FRAGMENT:
                hl = 8
                i32[Q_IPID, j] = _be32(d, q + 4)
                fo = _be16(d, q + 2)
                if (fo >> 3) != 0 or (fo & 1):
                    return ST_FRAGMENT, p, 0, wend
            else:
                return ST_NOT_TCP, p, 0, wend
            nh = d[q]
            q += hl
            remaining -= hl
        if remaining < 0:
            return ST_BAD_IP, p, 0, wend
        if nh == IPPROTO_TCP:
            return _decode_tcp(d, q, remaining, end, j, i64, i32, u32, u16, i16, i8, b, groups, group), p, 0, wend
        if nh == IPPROTO_IPIP:
            return ST_TUNNEL, q, 4, q + remaining
        if nh == IPPROTO_IPV6:
            return ST_TUNNEL, q, 6, q + remaining
        if nh == IPPROTO_GRE:
            v, g = _gre_inner(d, q, end)
            if v:
                return ST_TUNNEL, g, v, q + remaining
        if nh == IPPROTO_UDP:
            return _udp_tunnel(d, q, end, q + remaining, j, i32)
        return ST_NOT_TCP, p, 0, wend
    return ST_BAD_IP, p, 0, wend


@njit(cache=True, nogil=True, _nrt=False)
def _link_layer(d, p, end, wend, lt, j, i32):
    """Skip the link header of one frame; returns (ip offset, ip version, status, wire end of the IP)."""
    i32[Q_VLAN, j] = -1
    i32[Q_VLAN2, j] = -1
    if lt == LINKTYPE_ETHERNET:
        if p + 14 > end:
            return p, 0, ST_SHORT, wend
        return _ethertype_chain(d, p + 14, end, wend, _be16(d, p + 12), j, i32)
    if lt == LINKTYPE_LINUX_SLL:  # protocol at byte 14
        if p + 16 > end:
            return p, 0, ST_SHORT, wend
        return _ethertype_chain(d, p + 16, end, wend, _be16(d, p + 14), j, i32)
    if lt == LINKTYPE_LINUX_SLL2:  # protocol first
        if p + 20 > end:
            return p, 0, ST_SHORT, wend
        return _ethertype_chain(d, p + 20, end, wend, _be16(d, p), j, i32)
    if lt == LINKTYPE_NULL or lt == LINKTYPE_LOOP:  # address family, host (NULL) or network (LOOP) order
        if p + 4 > end:
            return p, 0, ST_SHORT, wend
        af = _be32(d, p)
        if lt == LINKTYPE_NULL and af > 0xFFFF:
            af = _le32(d, p)
        v = _address_family(af)
        return p + 4, v, ST_TCP if v else ST_NOT_IP, wend
    if lt == LINKTYPE_RAW or lt == DLT_RAW_BSD or lt == DLT_RAW_OPENBSD:  # version nibble
        if p + 1 > end:
            return p, 0, ST_SHORT, wend
        return p, d[p] >> 4, ST_TCP, wend
    if lt == LINKTYPE_IPV4:
        return p, 4, ST_TCP, wend
    if lt == LINKTYPE_IPV6:
        return p, 6, ST_TCP, wend
    if lt == LINKTYPE_C_HDLC:  # address, control, protocol (an EtherType)
        if p + 4 > end:
            return p, 0, ST_SHORT, wend
        return _ethertype_chain(d, p + 4, end, wend, _be16(d, p + 2), j, i32)
    if lt == LINKTYPE_IEEE802_11_RADIOTAP or lt == LINKTYPE_IEEE802_11:
        return _wlan(d, p, end, wend, lt == LINKTYPE_IEEE802_11_RADIOTAP, j, i32)
    if lt == LINKTYPE_NFLOG:
        return _nflog(d, p, end, wend)
    if lt == LINKTYPE_ARCNET_LINUX:
        return _arcnet(d, p, end, wend)
    return p, 0, ST_UNKNOWN_LINK, wend


@njit(cache=True, nogil=True, _nrt=False)
def _address_family(af):
    """IP version of an address family number (BSD loopback, NFLOG), 0 when not IP."""
    if af == AF_INET:
        return 4
    for v6 in AF_INET6:
        if af == v6:
            return 6
    return 0


@njit(cache=True, nogil=True, _nrt=False)
def _ethertype_chain(d, p, end, wend, etype, j, i32):
    """From the EtherType ``etype`` (its header ends at ``p``) to IP: VLAN tags (the first two are kept,
    in the first free of the two columns: an inner frame's follow the outer's), Cisco FabricPath, an MPLS
    label stack, a PPPoE session. Returns as ``_link_layer``."""
    while True:
        if etype == ETHERTYPE_VLAN or etype == ETHERTYPE_QINQ or etype == ETHERTYPE_QINQ_OLD:
            if p + 4 > end:
                return p, 0, ST_SHORT, wend
            etype = _be16(d, p + 2)
            if etype == ETHERTYPE_FABRICPATH:  # this tag belongs to the FabricPath header (tshark: cfp.1ad)
                pass
            elif i32[Q_VLAN, j] == -1:
                i32[Q_VLAN, j] = _be16(d, p) & 0xFFF
            elif i32[Q_VLAN2, j] == -1:
                i32[Q_VLAN2, j] = _be16(d, p) & 0xFFF
            p += 4
        elif etype == ETHERTYPE_FABRICPATH:  # FTag/TTL, then the inner frame's addresses and EtherType
            if p + 16 > end:
                return p, 0, ST_SHORT, wend
            etype = _be16(d, p + 14)
            p += 16
        else:
            break
    if etype == ETHERTYPE_MPLS or etype == ETHERTYPE_MPLS_MC:
        for _label in range(16):  # pop labels to the bottom of the stack (RFC 3032)
            if p + 4 > end:
                return p, 0, ST_SHORT, wend
            bottom = d[p + 2] & 1
            p += 4
            if bottom:
                break
        if p + 1 > end:
            return p, 0, ST_SHORT, wend
        etype = ETHERTYPE_IPV4 if (d[p] >> 4) == 4 else ETHERTYPE_IPV6 if (d[p] >> 4) == 6 else 0
    elif etype == ETHERTYPE_PPPOE:  # session header (RFC 2516): its length bounds the PPP frame
        if p + 8 > end:
            return p, 0, ST_SHORT, wend
        wend = min(wend, p + 6 + _be16(d, p + 4))
        ppp = _be16(d, p + 6)
        p += 8
        etype = ETHERTYPE_IPV4 if ppp == PPP_IPV4 else ETHERTYPE_IPV6 if ppp == PPP_IPV6 else 0
    if etype == ETHERTYPE_IPV4:
        return p, 4, ST_TCP, wend
    if etype == ETHERTYPE_IPV6:
        return p, 6, ST_TCP, wend
    return p, 0, ST_NOT_IP, wend


@njit(cache=True, nogil=True, _nrt=False)
def _wlan(d, p, end, wend, radiotap, j, i32):
    """An 802.11 data frame (behind a radiotap header when ``radiotap``) to its LLC/SNAP EtherType.

    Frames that are not data, carry no body, are protected (encrypted) or hold an A-MSDU are not IP here.
    """
    pad = False
    if radiotap:  # version, pad, length (little-endian), present bitmaps, fields (radiotap.org)
        if p + 8 > end:
            return p, 0, ST_SHORT, wend
        rlen = _le16(d, p + 2)
        if p + rlen > end:
            return p, 0, ST_SHORT, wend
        flags = _radiotap_flags(d, p, p + rlen)
        if flags & RADIOTAP_F_FCS:
            wend -= 4
        pad = (flags & RADIOTAP_F_DATAPAD) != 0
        p += rlen
    if p + 24 > end:
        return p, 0, ST_SHORT, wend
    fc, flags = np.int64(d[p]), np.int64(d[p + 1])
    subtype = fc >> 4
    if (fc & 3) != 0 or ((fc >> 2) & 3) != WLAN_TYPE_DATA or subtype & WLAN_SUBTYPE_NULL \
            or flags & WLAN_FC_PROTECTED:
        return p, 0, ST_NOT_IP, wend
    hl = 24 + (6 if (flags & WLAN_FC_DS) == WLAN_FC_DS else 0)
    if subtype & WLAN_SUBTYPE_QOS:
        if p + hl + 2 > end:
            return p, 0, ST_SHORT, wend
        if d[p + hl] & WLAN_QOS_AMSDU:
            return p, 0, ST_NOT_IP, wend
        hl += 2 + (4 if flags & WLAN_FC_ORDER else 0)
    if pad:
        hl = (hl + 3) & ~3
    q = p + hl
    if q + 8 > end:
        return p, 0, ST_SHORT, wend
    if (_be16(d, q) << 8 | d[q + 2]) != LLC_SNAP:
        return p, 0, ST_NOT_IP, wend
    return _ethertype_chain(d, q + 8, end, wend, _be16(d, q + 6), j, i32)


@njit(cache=True, nogil=True, _nrt=False)
def _radiotap_flags(d, r, rend):
    """The Flags field of the radiotap header ``d[r:rend]``, 0 when absent: it follows the present
    bitmaps and, when present, the 8-byte TSFT field aligned to 8 bytes from the header's start."""
    present = _le32(d, r + 4)
    q = r + 8
    word = present
    while word & RADIOTAP_EXT and q + 4 <= rend:
        word = _le32(d, q)
        q += 4
    if not present & RADIOTAP_FLAGS:
        return 0
    if present & RADIOTAP_TSFT:
        q = r + ((q - r + 7) & ~7) + 8
    return d[q] if q < rend else 0


@njit(cache=True, nogil=True, _nrt=False)
def _nflog(d, p, end, wend):
    """NFLOG: address family, version, resource id, then TLVs padded to 4 bytes, the packet in
    NFULA_PAYLOAD. TLV lengths and types are in the capturing host's byte order: little-endian unless
    the first TLV's length only makes sense big-endian."""
    if p + 8 > end:
        return p, 0, ST_SHORT, wend
    ipver = _address_family(np.int64(d[p]))
    if not ipver:
        return p, 0, ST_NOT_IP, wend
    q = p + 4
    little = 4 <= _le16(d, q) <= end - q
    while q + 4 <= end:
        tlen = _le16(d, q) if little else _be16(d, q)
        ttype = (_le16(d, q + 2) if little else _be16(d, q + 2)) & NFLOG_TLV_TYPE
        if tlen < 4:
            return p, 0, ST_NOT_IP, wend
        if ttype == NFULA_PAYLOAD:
            return q + 4, ipver, ST_TCP, min(wend, q + tlen)
        q += (tlen + 3) & ~3
    return p, 0, ST_SHORT if q < wend else ST_NOT_IP, wend


@njit(cache=True, nogil=True, _nrt=False)
def _arcnet(d, p, end, wend):
    """ARCNET as Linux captures it: source, destination, 2-byte offset, protocol id; then, for RFC 1201
    and RFC 2497 ids, split flag and sequence number (an exception packet, split flag FF, first has
    2 bytes of FF padding and the protocol id again). RFC 1051 ids have nothing more."""
    if p + 5 > end:
        return p, 0, ST_SHORT, wend
    proto = d[p + 4]
    q = p + 5
    if proto == ARC_P_IP_RFC1051:
        return q, 4, ST_TCP, wend
    if proto == ARC_P_ARP_RFC1051:
        return q, 0, ST_NOT_IP, wend
    if q + 3 > end:
        return p, 0, ST_SHORT, wend
    if d[q] == ARC_EXCEPTION:
        if q + 7 > end:
            return p, 0, ST_SHORT, wend
        proto = d[q + 3]
        q += 4
    q += 3
    if proto == ARC_P_IP:
        return q, 4, ST_TCP, wend
    if proto == ARC_P_IPV6:
        return q, 6, ST_TCP, wend
    return q, 0, ST_NOT_IP, wend


@njit(cache=True, nogil=True, _nrt=False)
def _decode_frames(d, offsets, caplens, wirelens, linktypes, ts_ns, ifaces, first_frame, start,
                   i64, i32, u32, u16, i16, i8, b, counts, frag_idx, frag_off, frag_ver, frag_vlan, groups, group,
                   clock):
    """Decode every frame; TCP rows are written compactly from row ``start``. With ``groups`` > 1, only
    the segments of connection group ``group`` get a row (``connection_group``). ``clock[0]``: the latest
    frame time so far (``store.CLOCK_COLUMN``), carried in and out.

    Returns (rows written, fragments found). ``counts[status]`` counts frames by status.
    """
    j = start
    nf = 0
    clk = clock[0]
    for i in range(len(offsets)):
        if ts_ns[i] > clk:
            clk = ts_ns[i]
        p = offsets[i]
        end = p + caplens[i]
        p, ipver, st, wend = _link_layer(d, p, end, p + max(wirelens[i], caplens[i]), linktypes[i], j, i32)
        if st == ST_TCP:
            st = _decode_ip(d, p, end, wend, ipver, j, i64, i32, u32, u16, i16, i8, b, groups, group)
        counts[st] += 1
        if st == ST_FRAGMENT:
            frag_idx[nf] = i
            frag_off[nf] = p
            frag_ver[nf] = ipver
            frag_vlan[nf, 0] = i32[Q_VLAN, j]
            frag_vlan[nf, 1] = i32[Q_VLAN2, j]
            nf += 1
        if st != ST_TCP:
            continue
        i64[Q_FRAME, j] = first_frame + i
        i64[Q_TSNS, j] = ts_ns[i]
        i64[Q_CLOCK, j] = clk
        i16[Q_IFACE, j] = ifaces[i]
        i32[Q_CAPLEN, j] = caplens[i]
        i32[Q_WIRELEN, j] = max(wirelens[i], caplens[i])
        b[Q_FRAG, j] = 0
        j += 1
    clock[0] = clk
    return j - start, nf
