"""Frame batch -> packet table: link layer, IPv4/IPv6 (+ fragments), TCP header and options.

The per-frame work is one compiled loop (numba) over the batch's offset arrays that writes header
fields into preallocated column arrays; there is no Python object per packet. The only Python-level
per-packet step is IP fragment reassembly, which touches fragments alone (rare in practice).

Layers understood (constants from https://www.tcpdump.org/linktypes.html):
  Ethernet (1) with any stack of 802.1Q / 802.1ad / 0x9100 tags, Linux SLL (113) and SLL2 (276),
  BSD NULL (0) and LOOP (108), RAW (101, and the platform DLT values 12 and 14), IPv4 (228), IPv6 (229).
  IPv4 with options; IPv6 with the extension-header chain (hop-by-hop, routing, destination options,
  mobility, HIP, shim6, AH, fragment). A fragmented datagram is reassembled before TCP is read.
"""
from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numba import njit

from .capture.frames import LINKTYPE_NAMES, LINKTYPE_RAW, FrameBatch
from .schema import PACKET_COLUMNS, SACK_MAX_BLOCKS

# -- per-frame decode status ----------------------------------------------------------------------
ST_TCP = 0
ST_NOT_IP = 1
ST_NOT_TCP = 2
ST_UNKNOWN_LINK = 3
ST_BAD_IP = 4
ST_BAD_TCP = 5
ST_FRAGMENT = 6
ST_SHORT = 7

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

IPPROTO_TCP = 6
# IPv6 extension headers with the generic (next header, length in 8-octet units - 1) layout (RFC 8200)
IPV6_EXT_GENERIC = (0, 43, 60, 135, 139, 140)
IPV6_EXT_AH = 51  # length in 4-octet units - 2 (RFC 4302)
IPV6_EXT_FRAGMENT = 44

TCPOPT_EOL, TCPOPT_NOP, TCPOPT_MSS, TCPOPT_WSCALE = 0, 1, 2, 3  # RFC 9293, RFC 7323
TCPOPT_SACK_PERM, TCPOPT_SACK, TCPOPT_TIMESTAMP = 4, 5, 8  # RFC 2018, RFC 7323
TCPOPT_TFO, TCPOPT_EXP, TFO_EXP_MAGIC = 34, 254, 0xF989  # RFC 7413 (and its experimental form)

# -- rows of the integer work matrix the kernel fills ---------------------------------------------
(K_STATUS, K_VLAN, K_VLAN2, K_IPVER, K_IPOFF, K_IPID, K_TTL, K_SPORT, K_DPORT, K_SEQ, K_ACK, K_FLAGS,
 K_WIN, K_HLEN, K_PLEN, K_TRUNC, K_MSS, K_WS, K_SACKP, K_SACKN, K_TSVAL, K_TSECR, K_TFO) = range(23)
K_SACK0 = 23  # 2 * SACK_MAX_BLOCKS edges follow
N_K = K_SACK0 + 2 * SACK_MAX_BLOCKS


@njit(cache=True, inline="always")
def _be16(d, p):
    return (np.int64(d[p]) << 8) | np.int64(d[p + 1])


@njit(cache=True, inline="always")
def _be32(d, p):
    return (np.int64(d[p]) << 24) | (np.int64(d[p + 1]) << 16) | (np.int64(d[p + 2]) << 8) | np.int64(d[p + 3])


@njit(cache=True)
def _decode_tcp(d, t, tcp_len, end, i, k):
    if tcp_len < 20:
        return ST_BAD_TCP
    if t + 20 > end:
        return ST_SHORT
    k[K_SPORT, i] = _be16(d, t)
    k[K_DPORT, i] = _be16(d, t + 2)
    k[K_SEQ, i] = _be32(d, t + 4)
    k[K_ACK, i] = _be32(d, t + 8)
    hlen = (np.int64(d[t + 12]) >> 4) * 4
    k[K_FLAGS, i] = ((np.int64(d[t + 12]) & 0xF) << 8) | np.int64(d[t + 13])  # 3 reserved bits too, as tshark
    k[K_WIN, i] = _be16(d, t + 14)
    k[K_HLEN, i] = hlen
    if hlen < 20 or hlen > tcp_len:
        return ST_BAD_TCP
    k[K_PLEN, i] = tcp_len - hlen
    k[K_TRUNC, i] = 1 if t + tcp_len > end else 0
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
            k[K_MSS, i] = _be16(d, o + 2)
        elif kind == TCPOPT_WSCALE and olen == 3:
            k[K_WS, i] = d[o + 2]
        elif kind == TCPOPT_SACK_PERM and olen == 2:
            k[K_SACKP, i] = 1
        elif kind == TCPOPT_SACK and olen >= 10 and (olen - 2) % 8 == 0:
            nb = min((olen - 2) // 8, SACK_MAX_BLOCKS)
            k[K_SACKN, i] = nb
            for b in range(nb):
                k[K_SACK0 + 2 * b, i] = _be32(d, o + 2 + 8 * b)
                k[K_SACK0 + 2 * b + 1, i] = _be32(d, o + 6 + 8 * b)
        elif kind == TCPOPT_TIMESTAMP and olen == 10:
            k[K_TSVAL, i] = _be32(d, o + 2)
            k[K_TSECR, i] = _be32(d, o + 6)
        elif kind == TCPOPT_TFO:
            k[K_TFO, i] = olen - 2
        elif kind == TCPOPT_EXP and olen >= 4 and _be16(d, o + 2) == TFO_EXP_MAGIC:
            k[K_TFO, i] = olen - 4
        o += olen
    return ST_TCP


@njit(cache=True)
def _decode_ip(d, p, end, wend, ipver, i, k, addr):
    k[K_IPVER, i] = ipver
    k[K_IPOFF, i] = p
    if ipver == 4:
        if p + 20 > end:
            return ST_SHORT
        if (d[p] >> 4) != 4:
            return ST_BAD_IP
        ihl = (np.int64(d[p]) & 0xF) * 4
        total = _be16(d, p + 2)
        if total == 0:  # TSO: the NIC fills the length in later (Zeek PR #1831)
            total = end - p
        if ihl < 20 or total < ihl:
            return ST_BAD_IP
        if total > wend - p:  # longer than the frame on the wire: trust the frame (as Wireshark)
            total = wend - p
        k[K_IPID, i] = _be16(d, p + 4)
        k[K_TTL, i] = d[p + 8]
        for w in range(4):
            addr[i, w] = 0
            addr[i, 4 + w] = 0
        addr[i, 3] = _be32(d, p + 12)
        addr[i, 7] = _be32(d, p + 16)
        frag = _be16(d, p + 6)
        if (frag & 0x2000) or (frag & 0x1FFF):
            return ST_FRAGMENT
        if d[p + 9] != IPPROTO_TCP:
            return ST_NOT_TCP
        if p + ihl > end:
            return ST_SHORT
        return _decode_tcp(d, p + ihl, total - ihl, end, i, k)
    if ipver == 6:
        if p + 40 > end:
            return ST_SHORT
        if (d[p] >> 4) != 6:
            return ST_BAD_IP
        remaining = _be16(d, p + 4)
        nh = d[p + 6]
        k[K_TTL, i] = d[p + 7]
        for w in range(4):
            addr[i, w] = _be32(d, p + 8 + 4 * w)
            addr[i, 4 + w] = _be32(d, p + 24 + 4 * w)
        q = p + 40
        if remaining == 0:  # jumbogram or TSO: take what was captured
            remaining = end - q
        if remaining > wend - q:
            remaining = wend - q
        for _hop in range(32):
            if nh == IPPROTO_TCP:
                break
            if q + 8 > end:
                return ST_SHORT
            if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140:
                hl = (np.int64(d[q + 1]) + 1) * 8
            elif nh == IPV6_EXT_AH:
                hl = (np.int64(d[q + 1]) + 2) * 4
            elif nh == IPV6_EXT_FRAGMENT:
                hl = 8
                k[K_IPID, i] = _be32(d, q + 4)
                fo = _be16(d, q + 2)
                if (fo >> 3) != 0 or (fo & 1):
                    return ST_FRAGMENT
            else:
                return ST_NOT_TCP
            nh = d[q]
            q += hl
            remaining -= hl
        if nh != IPPROTO_TCP:
            return ST_NOT_TCP
        if remaining < 0:
            return ST_BAD_IP
        return _decode_tcp(d, q, remaining, end, i, k)
    return ST_BAD_IP


@njit(cache=True)
def _decode_frames(d, offsets, caplens, wirelens, linktypes, k, addr):
    for i in range(len(offsets)):
        p = offsets[i]
        end = p + caplens[i]
        wend = p + max(wirelens[i], caplens[i])
        lt = linktypes[i]
        k[K_VLAN, i] = -1
        k[K_VLAN2, i] = -1
        k[K_IPID, i] = -1
        k[K_MSS, i] = -1
        k[K_WS, i] = -1
        k[K_TSVAL, i] = -1
        k[K_TSECR, i] = -1
        k[K_TFO, i] = -1
        etype = -1
        ipver = 0
        if lt == 1:  # Ethernet
            if p + 14 > end:
                k[K_STATUS, i] = ST_SHORT
                continue
            etype = _be16(d, p + 12)
            p += 14
        elif lt == 113:  # Linux SLL: protocol at 14
            if p + 16 > end:
                k[K_STATUS, i] = ST_SHORT
                continue
            etype = _be16(d, p + 14)
            p += 16
        elif lt == 276:  # Linux SLL2: protocol first
            if p + 20 > end:
                k[K_STATUS, i] = ST_SHORT
                continue
            etype = _be16(d, p)
            p += 20
        elif lt == 0 or lt == 108:  # BSD loopback: address family, host (0) or network (108) order
            if p + 4 > end:
                k[K_STATUS, i] = ST_SHORT
                continue
            af = _be32(d, p)
            if lt == 0 and af > 0xFFFF:
                af = ((af & 0xFF) << 24) | ((af & 0xFF00) << 8) | ((af >> 8) & 0xFF00) | (af >> 24)
            p += 4
            if af == 2:
                ipver = 4
            elif af == 10 or af == 24 or af == 28 or af == 30:
                ipver = 6
            else:
                k[K_STATUS, i] = ST_NOT_IP
                continue
        elif lt == 101 or lt == 12 or lt == 14:  # raw IP: version nibble
            if p + 1 > end:
                k[K_STATUS, i] = ST_SHORT
                continue
            ipver = d[p] >> 4
        elif lt == 228:
            ipver = 4
        elif lt == 229:
            ipver = 6
        else:
            k[K_STATUS, i] = ST_UNKNOWN_LINK
            continue
        if etype != -1:
            tags = 0
            while (etype == ETHERTYPE_VLAN or etype == ETHERTYPE_QINQ or etype == ETHERTYPE_QINQ_OLD) \
                    and p + 4 <= end:
                tci = _be16(d, p) & 0xFFF
                if tags == 0:
                    k[K_VLAN, i] = tci
                elif tags == 1:
                    k[K_VLAN2, i] = tci
                etype = _be16(d, p + 2)
                p += 4
                tags += 1
            if etype == ETHERTYPE_IPV4:
                ipver = 4
            elif etype == ETHERTYPE_IPV6:
                ipver = 6
            else:
                k[K_STATUS, i] = ST_NOT_IP
                continue
        k[K_STATUS, i] = _decode_ip(d, p, end, wend, ipver, i, k, addr)


def _kernel(data, offsets, caplens, wirelens, linktypes) -> tuple[np.ndarray, np.ndarray]:
    n = len(offsets)
    k = np.zeros((N_K, n), dtype=np.int64)
    addr = np.zeros((n, 8), dtype=np.uint32)
    if n:
        _decode_frames(data, offsets, caplens, wirelens, linktypes, k, addr)
    return k, addr


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
_INT_COLUMNS = {  # packet-table column -> kernel row
    "vlan": K_VLAN, "vlan_inner": K_VLAN2, "ip_version": K_IPVER, "ip_id": K_IPID, "ttl": K_TTL,
    "sport": K_SPORT, "dport": K_DPORT, "seq_raw": K_SEQ, "ack_raw": K_ACK, "flags": K_FLAGS,
    "window": K_WIN, "tcp_hlen": K_HLEN, "payload_len": K_PLEN, "truncated": K_TRUNC, "mss": K_MSS,
    "wscale": K_WS, "sack_permitted": K_SACKP, "sack_count": K_SACKN, "tsval": K_TSVAL,
    "tsecr": K_TSECR, "tfo_cookie_len": K_TFO,
    **{f"sack{b + 1}_{e}": K_SACK0 + 2 * b + j for b in range(SACK_MAX_BLOCKS)
       for j, e in enumerate(("le", "re"))},
}
_DTYPES = {c.name: c.dtype for c in PACKET_COLUMNS}


@dataclass
class DecodeStats:
    """What the decoder met: frames, TCP rows and skipped frames by reason."""

    frames: int = 0
    tcp_segments: int = 0
    skipped: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {"frames": self.frames, "tcp_segments": self.tcp_segments, "skipped": dict(self.skipped)}


class Decoder:
    """Decodes frame batches into packet-table columns, carrying fragment state between batches."""

    def __init__(self):
        self.defrag = Defragmenter()
        self.stats = DecodeStats()

    def decode(self, batch: FrameBatch) -> dict[str, np.ndarray]:
        """Decode one batch into a dict of column arrays (addresses as ``src_words``/``dst_words``)."""
        k, addr = _kernel(batch.data, batch.offsets, batch.caplens, batch.wirelens, batch.linktypes)
        status = k[K_STATUS]
        self.stats.frames += len(batch)
        self._count_skips(status, batch.linktypes)
        rows = np.flatnonzero(status == ST_TCP)
        cols = self._columns(batch, k, addr, rows)
        frags = np.flatnonzero(status == ST_FRAGMENT)
        if len(frags):
            extra = self._reassemble(batch, k, frags)
            if extra is not None:
                cols = {name: np.concatenate([cols[name], extra[name]]) for name in cols}
                order = np.argsort(cols["frame"], kind="stable")
                cols = {name: a[order] for name, a in cols.items()}
        self.stats.tcp_segments += len(cols["frame"])
        return cols

    def finish(self) -> None:
        """Count fragment sets still incomplete at the end of the capture."""
        left = len(self.defrag.pending)
        if left:
            self.stats.skipped["IP fragments never completed (datagrams)"] += left
            self.defrag.pending.clear()
        if self.defrag.expired:
            self.stats.skipped["IP fragments timed out (datagrams)"] += self.defrag.expired
            self.defrag.expired = 0

    def _count_skips(self, status: np.ndarray, linktypes: np.ndarray) -> None:
        counts = np.bincount(status, minlength=ST_SHORT + 1)
        for code, reason in SKIP_REASONS.items():
            if counts[code]:
                self.stats.skipped[reason] += int(counts[code])
        if counts[ST_UNKNOWN_LINK]:
            lts, n = np.unique(linktypes[status == ST_UNKNOWN_LINK], return_counts=True)
            for lt, c in zip(lts.tolist(), n.tolist()):
                name = "frame on an undescribed pcapng interface" if lt == -1 else \
                    f"unknown link type {lt}" + (f" ({LINKTYPE_NAMES[lt]})" if lt in LINKTYPE_NAMES else "")
                self.stats.skipped[name] += c

    @staticmethod
    def _columns(batch: FrameBatch, k: np.ndarray, addr: np.ndarray, rows: np.ndarray) -> dict:
        cols: dict[str, np.ndarray] = {
            "frame": (batch.first_frame + rows).astype(np.int64),
            "ts_ns": batch.ts_ns[rows],
            "interface": batch.interfaces[rows].astype(np.int16),
            "fragmented": np.zeros(len(rows), dtype=bool),
            "caplen": batch.caplens[rows].astype(np.int32),
            "wirelen": batch.wirelens[rows].astype(np.int32),
        }
        for name, row in _INT_COLUMNS.items():
            cols[name] = k[row, rows].astype(_DTYPES[name])
        cols["src_words"] = addr[rows, :4]
        cols["dst_words"] = addr[rows, 4:]
        return cols

    def _reassemble(self, batch: FrameBatch, k: np.ndarray, frags: np.ndarray) -> dict | None:
        whole, frames = [], []
        for i in frags.tolist():
            start = int(k[K_IPOFF, i])
            end = int(batch.offsets[i] + batch.caplens[i])
            ts = int(batch.ts_ns[i])
            self.defrag.expire(ts)
            got = self.defrag.add(bytes(batch.data[start:end]), int(k[K_IPVER, i]), ts)
            if got is not None:
                whole.append(got)
                frames.append(i)
        if not whole:
            return None
        sub = FrameBatch.from_frames([w for w, _ in whole], batch.ts_ns[frames].tolist(), LINKTYPE_RAW)
        sk, saddr = _kernel(sub.data, sub.offsets, sub.caplens, sub.wirelens, sub.linktypes)
        status = sk[K_STATUS]
        # The fragments were already counted as frames; count what the datagram turned out to be.
        for code, reason in SKIP_REASONS.items():
            n = int((status == code).sum())
            if n:
                self.stats.skipped[reason + " (reassembled datagram)"] += n
        ok = np.flatnonzero(status == ST_TCP)
        rows = np.asarray(frames, dtype=np.int64)[ok]
        cols = self._columns(batch, k, np.zeros((len(batch), 8), np.uint32), rows)
        for name, row in _INT_COLUMNS.items():
            if name not in ("vlan", "vlan_inner"):
                cols[name] = sk[row, ok].astype(_DTYPES[name])
        cols["ip_id"] = np.asarray([whole[j][1] for j in ok.tolist()], dtype=np.int32) \
            if len(ok) else np.zeros(0, np.int32)
        cols["fragmented"][:] = True
        cols["caplen"] = batch.caplens[rows].astype(np.int32)
        cols["src_words"] = saddr[ok, :4]
        cols["dst_words"] = saddr[ok, 4:]
        return cols


# -- columns -> DataFrame ---------------------------------------------------------------------------
def _address_text(ipver: int, words: tuple[int, int, int, int]) -> str:
    if ipver == 4:
        return str(ipaddress.IPv4Address(words[3]))
    return str(ipaddress.IPv6Address((words[0] << 96) | (words[1] << 64) | (words[2] << 32) | words[3]))


def address_categoricals(ipver: np.ndarray, src: np.ndarray, dst: np.ndarray) -> tuple[pd.Categorical, ...]:
    """Turn (n, 4) uint32 address words into two categoricals sharing one category list.

    Only unique addresses are formatted as text, so this costs a hash pass, not a string per packet.
    """
    n = len(ipver)
    words = np.concatenate([src, dst]).astype(np.uint64)
    v = np.concatenate([ipver, ipver]).astype(np.uint64)
    hi = (words[:, 0] << np.uint64(32)) | words[:, 1]
    lo = (words[:, 2] << np.uint64(32)) | words[:, 3]
    hi_codes, hi_uniq = pd.factorize(hi ^ (v << np.uint64(60)))
    lo_codes, _ = pd.factorize(lo)
    codes, uniq_idx = pd.factorize(hi_codes.astype(np.int64) * (int(lo_codes.max(initial=0)) + 1) + lo_codes)
    first = np.zeros(len(uniq_idx), dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # first occurrence of each code
    names = [_address_text(int(v[j]), tuple(int(x) for x in words[j])) for j in first.tolist()]
    # Categories in sorted text order make the same address list whatever the batch order.
    order = np.argsort(np.asarray(names, dtype=object), kind="stable")
    remap = np.empty(len(order), dtype=np.int64)
    remap[order] = np.arange(len(order))
    cats = pd.Index(np.asarray(names, dtype=object)[order])
    final = remap[codes] if len(codes) else codes
    dtype = pd.CategoricalDtype(cats)
    return (pd.Categorical.from_codes(final[:n], dtype=dtype), pd.Categorical.from_codes(final[n:], dtype=dtype))


def to_frame(cols: dict[str, np.ndarray]) -> pd.DataFrame:
    """Build the packet table, columns in the declared order and dtypes."""
    src, dst = address_categoricals(cols["ip_version"], cols["src_words"], cols["dst_words"])
    data = {}
    for c in PACKET_COLUMNS:
        if c.name == "ts":
            data["ts"] = cols["ts_ns"] / 1e9
        elif c.name == "src":
            data["src"] = src
        elif c.name == "dst":
            data["dst"] = dst
        else:
            data[c.name] = cols[c.name].astype(c.dtype, copy=False)
    return pd.DataFrame(data, copy=False)


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def empty_columns() -> dict[str, np.ndarray]:
    cols = {c.name: np.zeros(0, dtype=c.dtype) for c in PACKET_COLUMNS
            if c.name not in ("ts", "src", "dst")}
    cols["src_words"] = np.zeros((0, 4), np.uint32)
    cols["dst_words"] = np.zeros((0, 4), np.uint32)
    return cols


def decode_batch(batch: FrameBatch, decoder: Decoder | None = None) -> pd.DataFrame:
    """Decode one frame batch into a packet-table DataFrame (used by live capture)."""
    return to_frame((decoder or Decoder()).decode(batch))
