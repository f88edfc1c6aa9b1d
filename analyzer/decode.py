"""Frame batch -> packet table: link layer, IPv4/IPv6 (+ fragments), TCP header and options.

The per-frame work is one compiled loop (numba) over the batch's offset arrays that writes header
fields into preallocated column arrays; there is no Python object per packet. The only Python-level
per-packet step is IP fragment reassembly, which touches fragments alone (rare in practice).

Layers understood (constants from https://www.tcpdump.org/linktypes.html):
  Ethernet (1) with any stack of 802.1Q / 802.1ad / 0x9100 tags, Linux SLL (113) and SLL2 (276),
  BSD NULL (0) and LOOP (108), RAW (101, and the platform DLT values 12 and 14), IPv4 (228), IPv6 (229).
  IPv4 with options; IPv6 with the extension-header chain (hop-by-hop, routing, destination options,
  mobility, HIP, shim6, AH, fragment). A fragmented datagram is reassembled before TCP is read.
  Tunnels (IP in IP, 6in4, 4in6, GRE version 0), MPLS label stacks and PPPoE sessions are followed
  to the innermost IP header.
"""
from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .capture.frames import LINKTYPE_NAMES, LINKTYPE_RAW, FrameBatch
from .jit import njit
from .schema import PACKET_COLUMNS, SACK_MAX_BLOCKS

if TYPE_CHECKING:
    import pandas as pd

# -- per-frame decode status ----------------------------------------------------------------------
ST_TCP = 0
ST_NOT_IP = 1
ST_NOT_TCP = 2
ST_UNKNOWN_LINK = 3
ST_BAD_IP = 4
ST_BAD_TCP = 5
ST_FRAGMENT = 6
ST_SHORT = 7
ST_TUNNEL = 8  # internal: an IP header that carries another one
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
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057

IPPROTO_TCP = 6
IPPROTO_IPIP = 4  # IPv4 in IP (RFC 2003)
IPPROTO_IPV6 = 41  # IPv6 in IP (RFC 4213)
IPPROTO_GRE = 47  # RFC 2784
# IPv6 extension headers with the generic (next header, length in 8-octet units - 1) layout (RFC 8200)
IPV6_EXT_GENERIC = (0, 43, 60, 135, 139, 140)
IPV6_EXT_AH = 51  # length in 4-octet units - 2 (RFC 4302)
IPV6_EXT_FRAGMENT = 44

TCPOPT_EOL, TCPOPT_NOP, TCPOPT_MSS, TCPOPT_WSCALE = 0, 1, 2, 3  # RFC 9293, RFC 7323
TCPOPT_SACK_PERM, TCPOPT_SACK, TCPOPT_TIMESTAMP = 4, 5, 8  # RFC 2018, RFC 7323
TCPOPT_TFO, TCPOPT_EXP, TFO_EXP_MAGIC = 34, 254, 0xF989  # RFC 7413 (and its experimental form)

# -- column storage -----------------------------------------------------------------------------
# The kernel writes each TCP row straight into typed matrices, one per dtype, one matrix row per
# packet-table column; the DataFrame's columns are views of those rows (no conversion pass).
I64_COLS = ("frame", "ts_ns", "tsval", "tsecr")
I32_COLS = ("vlan", "vlan_inner", "ip_id", "payload_len", "caplen", "wirelen", "mss",
            "src_id", "dst_id")  # the last two: address codes, filled in Python
U32_COLS = ("seq_raw", "ack_raw",
            *[f"sack{b}_{e}" for b in range(1, SACK_MAX_BLOCKS + 1) for e in ("le", "re")],
            "src_w0", "src_w1", "src_w2", "src_w3", "dst_w0", "dst_w1", "dst_w2", "dst_w3")
U16_COLS = ("sport", "dport", "flags", "window")
I16_COLS = ("interface", "ttl", "tcp_hlen", "wscale", "tfo_cookie_len")
I8_COLS = ("ip_version", "sack_count")
B_COLS = ("fragmented", "truncated", "sack_permitted")  # stored as uint8, shown as bool
GROUPS = (("int64", I64_COLS), ("int32", I32_COLS), ("uint32", U32_COLS), ("uint16", U16_COLS),
          ("int16", I16_COLS), ("int8", I8_COLS), ("uint8", B_COLS))

# matrix row of each column (numba folds these module constants into the kernel)
Q_FRAME, Q_TSNS, Q_TSVAL, Q_TSECR = range(4)
Q_VLAN, Q_VLAN2, Q_IPID, Q_PLEN, Q_CAPLEN, Q_WIRELEN, Q_MSS, Q_SRCID, Q_DSTID = range(9)
Q_SEQ, Q_ACK, Q_SACK0 = 0, 1, 2
Q_SRC0 = Q_SACK0 + 2 * SACK_MAX_BLOCKS
Q_DST0 = Q_SRC0 + 4
Q_SPORT, Q_DPORT, Q_FLAGS, Q_WIN = range(4)
Q_IFACE, Q_TTL, Q_HLEN, Q_WS, Q_TFO = range(5)
Q_IPVER, Q_SACKN = range(2)
Q_FRAG, Q_TRUNC, Q_SACKP = range(3)


class Codes(NamedTuple):
    """An address column as ``codes`` (int32) into ``categories`` (the decoder's address texts)."""

    codes: np.ndarray
    categories: list[str]


class ColumnStore:
    """Typed matrices with room for ``capacity`` rows; ``n`` rows are filled.

    ``addresses`` is the decoder's address list the ``src_id``/``dst_id`` codes index (set by
    ``Decoder.code_addresses``); ``packet_column`` gives the packet table's columns over these rows."""

    def __init__(self, capacity: int):
        self.capacity = max(int(capacity), 1)
        self.n = 0
        self.addresses: list[str] = []
        # np.empty does not touch memory: an over-estimated capacity costs address space, not RSS.
        self.mats = tuple(np.empty((len(names), self.capacity), dtype=dt) for dt, names in GROUPS)

    def reserve(self, more: int) -> None:
        if self.n + more <= self.capacity:
            return
        cap = max(self.capacity * 2, self.n + more)
        mats = tuple(np.empty((m.shape[0], cap), dtype=m.dtype) for m in self.mats)
        for old, new in zip(self.mats, mats):
            new[:, :self.n] = old[:, :self.n]
        self.mats, self.capacity = mats, cap

    def column(self, name: str) -> np.ndarray:
        for (dt, names), m in zip(GROUPS, self.mats):
            if name in names:
                col = m[names.index(name), :self.n]
                return col.view(bool) if dt == "uint8" else col
        raise KeyError(name)

    def __len__(self) -> int:
        return self.n

    def packet_column(self, name: str):
        """The packet-table column ``name`` over the filled rows: ``Codes`` for ``src``/``dst``, seconds for ``ts``."""
        if name in ("src", "dst"):
            return Codes(self.column(name + "_id"), self.addresses)
        if name == "ts":
            return self.column("ts_ns") / 1e9
        return self.column(name)

    def words(self, prefix: str) -> np.ndarray:
        """(n, 4) uint32 address words of ``src`` or ``dst``."""
        u32 = self.mats[2]
        first = U32_COLS.index(prefix + "_w0")
        return u32[first:first + 4, :self.n].T

    def append(self, other: "ColumnStore") -> None:
        self.reserve(other.n)
        for m, o in zip(self.mats, other.mats):
            m[:, self.n:self.n + other.n] = o[:, :other.n]
        self.n += other.n

    @classmethod
    def concat(cls, stores: list["ColumnStore"]) -> "ColumnStore":
        """One store holding the rows of ``stores`` in order (one copy per matrix)."""
        if len(stores) == 1:
            return stores[0]
        out = cls.__new__(cls)
        out.n = out.capacity = sum(s.n for s in stores)
        out.addresses = stores[0].addresses if stores else []
        out.mats = tuple(np.concatenate([s.mats[g][:, :s.n] for s in stores], axis=1)
                         if stores else np.empty((len(names), 0), dtype=dt)
                         for g, (dt, names) in enumerate(GROUPS))
        return out

    def reorder(self, order: np.ndarray, start: int) -> None:
        """Reorder rows ``start:`` by ``order`` (indices relative to ``start``)."""
        for m in self.mats:
            m[:, start:self.n] = m[:, start:self.n][:, order]


@njit(cache=True, nogil=True, inline="always")
def _be16(d, p):
    return (np.int64(d[p]) << 8) | np.int64(d[p + 1])


@njit(cache=True, nogil=True, inline="always")
def _be32(d, p):
    return (np.int64(d[p]) << 24) | (np.int64(d[p + 1]) << 16) | (np.int64(d[p + 2]) << 8) | np.int64(d[p + 3])


@njit(cache=True, nogil=True, inline="always")
def _decode_tcp(d, t, tcp_len, end, j, i64, i32, u32, u16, i16, i8, b):
    if tcp_len < 20:
        return ST_BAD_TCP
    if t + 20 > end:
        return ST_SHORT
    hlen = (np.int64(d[t + 12]) >> 4) * 4
    if hlen < 20 or hlen > tcp_len:
        return ST_BAD_TCP
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


@njit(cache=True, nogil=True, inline="always")
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


@njit(cache=True, nogil=True, inline="always")
def _decode_ip(d, p, end, wend, ipver, j, i64, i32, u32, u16, i16, i8, b):
    """Decode the IP layer at ``p`` into row ``j``; returns a status (ST_FRAGMENT: Python's turn).

    Tunnels (IP in IP, IPv6 in IPv4 and back, GRE version 0) are followed to the innermost IP
    header, whose addresses the row reports, as tshark's fields do.
    """
    for _depth in range(MAX_TUNNEL_DEPTH):
        st, p, ipver, wend = _decode_ip_header(d, p, end, wend, ipver, j, i64, i32, u32, u16, i16, i8, b)
        if st != ST_TUNNEL:
            return st
    return ST_NOT_TCP


@njit(cache=True, nogil=True, inline="always")
def _decode_ip_header(d, p, end, wend, ipver, j, i64, i32, u32, u16, i16, i8, b):
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
            return _decode_tcp(d, p + ihl, total - ihl, end, j, i64, i32, u32, u16, i16, i8, b), p, 0, wend
        if proto == IPPROTO_IPIP:
            return ST_TUNNEL, p + ihl, 4, p + total
        if proto == IPPROTO_IPV6:
            return ST_TUNNEL, p + ihl, 6, p + total
        if proto == IPPROTO_GRE:
            v, q = _gre_inner(d, p + ihl, end)
            if v:
                return ST_TUNNEL, q, v, p + total
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
            if nh == IPPROTO_TCP or nh == IPPROTO_IPIP or nh == IPPROTO_IPV6 or nh == IPPROTO_GRE:
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
            return _decode_tcp(d, q, remaining, end, j, i64, i32, u32, u16, i16, i8, b), p, 0, wend
        if nh == IPPROTO_IPIP:
            return ST_TUNNEL, q, 4, q + remaining
        if nh == IPPROTO_IPV6:
            return ST_TUNNEL, q, 6, q + remaining
        if nh == IPPROTO_GRE:
            v, g = _gre_inner(d, q, end)
            if v:
                return ST_TUNNEL, g, v, q + remaining
        return ST_NOT_TCP, p, 0, wend
    return ST_BAD_IP, p, 0, wend


@njit(cache=True, nogil=True, inline="always")
def _link_layer(d, p, end, lt, j, i32):
    """Skip the link header of one frame; returns (ip offset, ip version, status)."""
    i32[Q_VLAN, j] = -1
    i32[Q_VLAN2, j] = -1
    etype = -1
    ipver = 0
    if lt == 1:  # Ethernet
        if p + 14 > end:
            return p, 0, ST_SHORT
        etype = _be16(d, p + 12)
        p += 14
    elif lt == 113:  # Linux SLL: protocol at byte 14
        if p + 16 > end:
            return p, 0, ST_SHORT
        etype = _be16(d, p + 14)
        p += 16
    elif lt == 276:  # Linux SLL2: protocol first
        if p + 20 > end:
            return p, 0, ST_SHORT
        etype = _be16(d, p)
        p += 20
    elif lt == 0 or lt == 108:  # BSD loopback: address family, host (0) or network (108) order
        if p + 4 > end:
            return p, 0, ST_SHORT
        af = _be32(d, p)
        if lt == 0 and af > 0xFFFF:
            af = ((af & 0xFF) << 24) | ((af & 0xFF00) << 8) | ((af >> 8) & 0xFF00) | (af >> 24)
        p += 4
        if af == 2:
            ipver = 4
        elif af == 10 or af == 24 or af == 28 or af == 30:
            ipver = 6
        else:
            return p, 0, ST_NOT_IP
    elif lt == 101 or lt == 12 or lt == 14:  # raw IP: version nibble
        if p + 1 > end:
            return p, 0, ST_SHORT
        ipver = d[p] >> 4
    elif lt == 228:
        ipver = 4
    elif lt == 229:
        ipver = 6
    else:
        return p, 0, ST_UNKNOWN_LINK
    if etype != -1:
        tags = 0
        while (etype == ETHERTYPE_VLAN or etype == ETHERTYPE_QINQ or etype == ETHERTYPE_QINQ_OLD) \
                and p + 4 <= end:
            tci = _be16(d, p) & 0xFFF
            if tags == 0:
                i32[Q_VLAN, j] = tci
            elif tags == 1:
                i32[Q_VLAN2, j] = tci
            etype = _be16(d, p + 2)
            p += 4
            tags += 1
        if etype == ETHERTYPE_MPLS or etype == ETHERTYPE_MPLS_MC:
            for _label in range(16):  # pop labels to the bottom of the stack (RFC 3032)
                if p + 4 > end:
                    return p, 0, ST_SHORT
                bottom = d[p + 2] & 1
                p += 4
                if bottom:
                    break
            if p + 1 > end:
                return p, 0, ST_SHORT
            etype = ETHERTYPE_IPV4 if (d[p] >> 4) == 4 else ETHERTYPE_IPV6 if (d[p] >> 4) == 6 else 0
        elif etype == ETHERTYPE_PPPOE:  # PPPoE session header (RFC 2516), then the PPP protocol
            if p + 8 > end:
                return p, 0, ST_SHORT
            ppp = _be16(d, p + 6)
            p += 8
            etype = ETHERTYPE_IPV4 if ppp == PPP_IPV4 else ETHERTYPE_IPV6 if ppp == PPP_IPV6 else 0
        if etype == ETHERTYPE_IPV4:
            ipver = 4
        elif etype == ETHERTYPE_IPV6:
            ipver = 6
        else:
            return p, 0, ST_NOT_IP
    return p, ipver, ST_TCP


@njit(cache=True, nogil=True, _nrt=False)
def _decode_frames(d, offsets, caplens, wirelens, linktypes, ts_ns, ifaces, first_frame, start,
                   i64, i32, u32, u16, i16, i8, b, counts, frag_idx, frag_off, frag_ver, frag_vlan):
    """Decode every frame; TCP rows are written compactly from row ``start``.

    Returns (rows written, fragments found). ``counts[status]`` counts frames by status.
    """
    j = start
    nf = 0
    for i in range(len(offsets)):
        p = offsets[i]
        end = p + caplens[i]
        wend = p + max(wirelens[i], caplens[i])
        p, ipver, st = _link_layer(d, p, end, linktypes[i], j, i32)
        if st == ST_TCP:
            st = _decode_ip(d, p, end, wend, ipver, j, i64, i32, u32, u16, i16, i8, b)
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
        i16[Q_IFACE, j] = ifaces[i]
        i32[Q_CAPLEN, j] = caplens[i]
        i32[Q_WIRELEN, j] = max(wirelens[i], caplens[i])
        b[Q_FRAG, j] = 0
        j += 1
    return j - start, nf


# -- IP fragment reassembly (Python; fragments only) ----------------------------------------------
@dataclass
class _Datagram:
    header: bytes | None = None  # IP header to put in front of the reassembled payload
    total: int | None = None  # payload length, known once the last fragment arrived
    data: bytearray = field(default_factory=bytearray)
    have: list[tuple[int, int]] = field(default_factory=list)  # covered byte ranges
    first_ts: int = 0
    ident: int = -1


class Defragmenter:
    """Collects IPv4 and IPv6 fragments and returns whole datagrams (RFC 791, RFC 8200 section 4.5).

    Overlaps keep the bytes that arrived first. Sets idle for ``timeout_ns`` of capture time are
    dropped and counted, as Zeek's ``frag_timeout`` and Linux's ``ipfrag_time`` do.
    """

    def __init__(self, timeout_ns: int = 60_000_000_000):
        self.pending: dict[tuple, _Datagram] = {}
        self.timeout_ns = timeout_ns
        self.expired = 0
        self.bad = 0

    def add(self, pkt: bytes, ipver: int, ts_ns: int) -> tuple[bytes, int] | None:
        """Add one fragment (IP header onwards); returns (whole datagram, ident) when complete."""
        parsed = self._parse4(pkt) if ipver == 4 else self._parse6(pkt)
        if parsed is None:
            self.bad += 1
            return None
        key, header, offset, more, payload, ident = parsed
        dg = self.pending.get(key)
        if dg is None:
            dg = self.pending[key] = _Datagram(first_ts=ts_ns, ident=ident)
        if offset == 0:
            dg.header = header
        if not more:
            dg.total = offset + len(payload)
        end = offset + len(payload)
        if len(dg.data) < end:
            dg.data.extend(b"\0" * (end - len(dg.data)))
        for lo, hi in _missing(dg.have, offset, end):
            dg.data[lo:hi] = payload[lo - offset:hi - offset]
        dg.have = _merge(dg.have + [(offset, end)])
        if dg.header is None or dg.total is None or dg.have[0] != (0, dg.total) or len(dg.have) != 1:
            return None
        del self.pending[key]
        body = bytes(dg.data[:dg.total])
        return self._rebuild(dg.header, body, ipver), dg.ident

    def expire(self, now_ns: int) -> None:
        old = [key for key, dg in self.pending.items() if now_ns - dg.first_ts > self.timeout_ns]
        for key in old:
            del self.pending[key]
        self.expired += len(old)

    @staticmethod
    def _parse4(pkt: bytes):
        if len(pkt) < 20:
            return None
        ihl = (pkt[0] & 0xF) * 4
        total, ident, frag = struct.unpack("!HHH", pkt[2:8])
        if ihl < 20 or total < ihl or len(pkt) < total:
            return None  # a fragment cut by the snaplen cannot be reassembled
        key = (4, pkt[12:20], ident, pkt[9])
        return key, pkt[:ihl], (frag & 0x1FFF) * 8, bool(frag & 0x2000), pkt[ihl:total], ident

    @staticmethod
    def _parse6(pkt: bytes):
        if len(pkt) < 40:
            return None
        plen = struct.unpack("!H", pkt[4:6])[0]
        nh, q = pkt[6], 40
        while nh != IPV6_EXT_FRAGMENT:
            if nh not in IPV6_EXT_GENERIC and nh != IPV6_EXT_AH or q + 8 > len(pkt):
                return None
            hl = (pkt[q + 1] + 1) * 8 if nh != IPV6_EXT_AH else (pkt[q + 1] + 2) * 4
            nh, q = pkt[q], q + hl
        if q + 8 > len(pkt) or len(pkt) < 40 + plen:
            return None
        inner, _res, fo, ident = struct.unpack("!BBHI", pkt[q:q + 8])
        # Rebuilt header: the fixed header only, next header = the fragmented protocol.
        header = pkt[:6] + bytes([inner]) + pkt[7:40]
        key = (6, pkt[8:40], ident)
        return key, header, (fo >> 3) * 8, bool(fo & 1), pkt[q + 8:40 + plen], ident

    @staticmethod
    def _rebuild(header: bytes, body: bytes, ipver: int) -> bytes:
        h = bytearray(header)
        if ipver == 4:
            h[2:4] = struct.pack("!H", len(h) + len(body))
            h[6:8] = b"\0\0"
        else:
            h[4:6] = struct.pack("!H", len(body) if len(body) < 65536 else 0)
        return bytes(h) + body


def _missing(have: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    out, cur = [], lo
    for a, b in have:
        if b <= cur or a >= hi:
            continue
        if a > cur:
            out.append((cur, a))
        cur = max(cur, b)
    if cur < hi:
        out.append((cur, hi))
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ranges.sort()
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# -- batch decoder ----------------------------------------------------------------------------------
@dataclass
class DecodeStats:
    """What the decoder met: frames, TCP rows and skipped frames by reason."""

    frames: int = 0
    tcp_segments: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"frames": self.frames, "tcp_segments": self.tcp_segments, "skipped": dict(self.skipped)}


def _address_text(ipver: int, hi: int, lo: int) -> str:
    if ipver == 4:
        return str(ipaddress.IPv4Address(lo))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


class Decoder:
    """Decodes frame batches into a ``ColumnStore``, carrying state between batches.

    State carried: pending IP fragments, and the address list (``addresses``), so that the address
    codes of every batch index one list that only grows (first appearance order).
    """

    def __init__(self):
        self.defrag = Defragmenter()
        self.stats = DecodeStats()
        self.addresses: list[str] = []
        self._table = np.full(0, -1, dtype=np.int64)  # address hash table (``_code_addresses``)
        self._keys = np.empty((0, 3), dtype=np.uint64)  # (version, high, low) of each address id

    def decode_into(self, batch: FrameBatch, store: ColumnStore, code_addresses: bool = True) -> None:
        """Append the TCP rows of ``batch`` to ``store``.

        With ``code_addresses=False`` the caller calls ``code_addresses`` once for many batches.
        """
        start = store.n
        store.reserve(len(batch))
        counts = np.zeros(ST_SHORT + 1, dtype=np.int64)
        nfmax = len(batch)
        frag_idx, frag_off = np.empty(nfmax, np.int64), np.empty(nfmax, np.int64)
        frag_ver, frag_vlan = np.empty(nfmax, np.int64), np.empty((nfmax, 2), np.int64)
        rows, nf = _decode_frames(batch.data, batch.offsets, batch.caplens, batch.wirelens,
                                  batch.linktypes, batch.ts_ns, batch.interfaces, batch.first_frame,
                                  start, *store.mats, counts, frag_idx, frag_off, frag_ver, frag_vlan)
        store.n += rows
        self.stats.frames += len(batch)
        self._count_skips(counts, batch.linktypes)
        if nf:
            self._reassemble(batch, store, frag_idx[:nf], frag_off[:nf], frag_ver[:nf], frag_vlan[:nf])
            order = np.argsort(store.mats[0][Q_FRAME, start:store.n], kind="stable")
            store.reorder(order, start)
        if code_addresses:
            self.code_addresses(store, start)
        self.stats.tcp_segments += store.n - start

    def finish(self) -> None:
        """Count fragment sets still incomplete at the end of the capture."""
        self.defrag.expired += len(self.defrag.pending)
        self.defrag.pending.clear()
        if self.defrag.expired:
            self.stats.skipped["IP datagrams whose fragments never all arrived"] += self.defrag.expired
            self.defrag.expired = 0
        if self.defrag.bad:
            self.stats.skipped["IP fragments that could not be reassembled (cut or malformed)"] += self.defrag.bad
            self.defrag.bad = 0

    def _count_skips(self, counts: np.ndarray, linktypes: np.ndarray) -> None:
        for code, reason in SKIP_REASONS.items():
            if counts[code]:
                self.stats.skipped[reason] += int(counts[code])
        if counts[ST_UNKNOWN_LINK]:
            unknown = ~np.isin(linktypes, KNOWN_LINKTYPES)
            lts, n = np.unique(linktypes[unknown], return_counts=True)
            for lt, c in zip(lts.tolist(), n.tolist()):
                name = "frame on an undescribed pcapng interface" if lt == -1 else \
                    f"unknown link type {lt}" + (f" ({LINKTYPE_NAMES[lt]})" if lt in LINKTYPE_NAMES else "")
                self.stats.skipped[name] += c

    def _reassemble(self, batch, store, frag_idx, frag_off, frag_ver, frag_vlan) -> None:
        whole, which = [], []
        for f, i in enumerate(frag_idx.tolist()):
            ts = int(batch.ts_ns[i])
            self.defrag.expire(ts)
            end = int(batch.offsets[i] + batch.caplens[i])
            got = self.defrag.add(bytes(batch.data[int(frag_off[f]):end]), int(frag_ver[f]), ts)
            if got is not None:
                whole.append(got)
                which.append(f)
        if not whole:
            return
        sub = FrameBatch.from_frames([w for w, _ in whole], [0] * len(whole), LINKTYPE_RAW)
        tmp = ColumnStore(len(sub))
        counts = np.zeros(ST_SHORT + 1, dtype=np.int64)
        scratch = [np.empty(len(sub), np.int64) for _ in range(3)]
        tmp.n, _ = _decode_frames(sub.data, sub.offsets, sub.caplens, sub.wirelens, sub.linktypes,
                                  sub.ts_ns, sub.interfaces, 0, 0, *tmp.mats, counts, *scratch,
                                  np.empty((len(sub), 2), np.int64))
        for code, reason in SKIP_REASONS.items():
            if counts[code]:
                self.stats.skipped[reason + " (reassembled datagram)"] += int(counts[code])
        # Rows of tmp are datagrams that turned out to be TCP; put back what the frames said.
        got = tmp.mats[0][Q_FRAME, :tmp.n].copy()  # index into `whole`
        f = np.asarray(which, dtype=np.int64)[got]
        i = frag_idx[f]
        i64, i32, u32, u16, i16, i8, b = (m[:, :tmp.n] for m in tmp.mats)
        i64[Q_FRAME] = batch.first_frame + i
        i64[Q_TSNS] = batch.ts_ns[i]
        i16[Q_IFACE] = batch.interfaces[i]
        i32[Q_CAPLEN] = batch.caplens[i]
        i32[Q_WIRELEN] = np.maximum(batch.wirelens[i], batch.caplens[i])
        i32[Q_VLAN] = frag_vlan[f, 0]
        i32[Q_VLAN2] = frag_vlan[f, 1]
        i32[Q_IPID] = np.asarray([whole[g][1] for g in got.tolist()], dtype=np.int64)
        b[Q_FRAG] = 1
        store.append(tmp)

    def code_addresses(self, store: ColumnStore, start: int = 0) -> None:
        """Fill src_id/dst_id of rows ``start:`` with indices into ``self.addresses``.

        Ids are given in order of first appearance (sources of the rows, then destinations), through a
        hash table that lives as long as the decoder; only new addresses are turned into text here.
        """
        store.addresses = self.addresses
        n = store.n - start
        if n == 0:
            return
        known = len(self.addresses)
        table = self._table
        if 2 * (known + 2 * n) > len(table):  # keep the load under one half
            table = np.full(1 << max(12, (4 * (known + 2 * n)).bit_length()), -1, dtype=np.int64)
            _rehash_addresses(self._table, self._keys, table)
            self._table = table
        if len(self._keys) < known + 2 * n:
            keys = np.empty((max(2 * len(self._keys), known + 2 * n), 3), dtype=np.uint64)
            keys[:known] = self._keys[:known]
            self._keys = keys
        u32, i32 = store.mats[2], store.mats[1]
        coded = _code_addresses(store.mats[5][Q_IPVER], u32, start, store.n, table, self._keys, known,
                                i32[Q_SRCID], i32[Q_DSTID])
        for ver, hi, lo in self._keys[known:coded].tolist():
            self.addresses.append(_address_text(int(ver), int(hi), int(lo)))


@njit(cache=True, nogil=True, inline="always")
def _address_slot(ver, hi, lo, mask):
    h = (hi * np.uint64(0x9E3779B97F4A7C15)) ^ (lo * np.uint64(0xC2B2AE3D27D4EB4F)) ^ ver
    h ^= h >> np.uint64(29)
    return np.int64(h & np.uint64(mask))


@njit(cache=True, nogil=True, _nrt=False)
def _code_addresses(ipver, u32, start, stop, table, keys, coded, src_id, dst_id):
    """Address ids of rows ``start:stop`` (sources first, then destinations) into ``src_id``/``dst_id``.

    ``table`` (open addressing, -1 = empty) maps an address to its id; ``keys[id]`` = (version, high
    64 bits, low 64 bits). New addresses get ids from ``coded`` on; returns the new count.
    """
    mask = len(table) - 1
    for side in range(2):
        w = Q_SRC0 if side == 0 else Q_DST0
        out = src_id if side == 0 else dst_id
        for j in range(start, stop):
            ver = np.uint64(ipver[j])
            hi = (np.uint64(u32[w, j]) << np.uint64(32)) | np.uint64(u32[w + 1, j])
            lo = (np.uint64(u32[w + 2, j]) << np.uint64(32)) | np.uint64(u32[w + 3, j])
            slot = _address_slot(ver, hi, lo, mask)
            while True:
                got = table[slot]
                if got < 0:
                    table[slot] = coded
                    keys[coded, 0], keys[coded, 1], keys[coded, 2] = ver, hi, lo
                    got = coded
                    coded += 1
                    break
                if keys[got, 2] == lo and keys[got, 1] == hi and keys[got, 0] == ver:
                    break
                slot = (slot + 1) & mask
            out[j] = got
    return coded


@njit(cache=True, nogil=True, _nrt=False)
def _rehash_addresses(old, keys, table):
    mask = len(table) - 1
    for i in range(len(old)):
        got = old[i]
        if got < 0:
            continue
        slot = _address_slot(keys[got, 0], keys[got, 1], keys[got, 2], mask)
        while table[slot] >= 0:
            slot = (slot + 1) & mask
        table[slot] = got


KNOWN_LINKTYPES = np.array([0, 1, 12, 14, 101, 108, 113, 228, 229, 276], dtype=np.int32)


# -- columns -> DataFrame ---------------------------------------------------------------------------
def to_frame(store: ColumnStore) -> pd.DataFrame:
    """The packet table over ``store``'s rows, columns in the declared order and dtypes (no copy)."""
    import pandas as pd

    cats = pd.CategoricalDtype(pd.Index(store.addresses, dtype=object))
    data = {}
    for c in PACKET_COLUMNS:
        if c.name == "ts":
            data["ts"] = store.column("ts_ns") / 1e9
        elif c.name in ("src", "dst"):
            data[c.name] = pd.Categorical.from_codes(store.column(c.name + "_id"), dtype=cats)
        else:
            data[c.name] = store.column(c.name)
    return pd.DataFrame(data, copy=False)


def decode_batch(batch: FrameBatch, decoder: Decoder | None = None) -> pd.DataFrame:
    """Decode one frame batch into a packet-table DataFrame (live capture uses this)."""
    decoder = decoder or Decoder()
    store = ColumnStore(len(batch))
    decoder.decode_into(batch, store)
    return to_frame(store)
