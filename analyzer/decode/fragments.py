"""IP fragment reassembly (RFC 791, RFC 8200 section 4.5), in Python: it touches fragments only."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .headers import IPV6_EXT_AH, IPV6_EXT_FRAGMENT, IPV6_EXT_GENERIC

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
