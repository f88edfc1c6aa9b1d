"""The compiled decoding kernel: one loop over a frame batch, link layer to TCP options, into a ``ColumnStore``.

The per-frame work is one compiled loop (numba) over the batch's offset arrays that writes header
fields into preallocated column arrays (``store.py``); there is no Python object per packet.

Layers understood (constants from https://www.tcpdump.org/linktypes.html):
  Ethernet (1) with any stack of 802.1Q / 802.1ad / 0x9100 tags, Linux SLL (113) and SLL2 (276),
  BSD NULL (0) and LOOP (108), RAW (101, and the platform DLT values 12 and 14), IPv4 (228), IPv6 (229).
  IPv4 with options; IPv6 with the extension-header chain (hop-by-hop, routing, destination options,
  mobility, HIP, shim6, AH, fragment). A fragmented datagram is handed back for reassembly
  (``fragments.py``) before TCP is read. Tunnels (IP in IP, 6in4, 4in6, GRE version 0), MPLS label
  stacks and PPPoE sessions are followed to the innermost IP header.
"""
from __future__ import annotations

import numpy as np

from ..jit import njit
from ..schema import SACK_MAX_BLOCKS
from .store import (Q_ACK, Q_CAPLEN, Q_DPORT, Q_DST0, Q_FLAGS, Q_FRAG, Q_FRAME, Q_HLEN, Q_IFACE, Q_IPID, Q_IPVER,
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

KNOWN_LINKTYPES = np.array([0, 1, 12, 14, 101, 108, 113, 228, 229, 276], dtype=np.int32)


@njit(cache=True, nogil=True, _nrt=False)
def _be16(d, p):
    return (np.int64(d[p]) << 8) | np.int64(d[p + 1])


@njit(cache=True, nogil=True, _nrt=False)
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
