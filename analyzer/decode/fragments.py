"""IP fragment reassembly (RFC 791, RFC 8200 section 4.5), in Python: it touches fragments only.

What is held is bounded as the Linux kernel bounds it: the bytes of pending fragments (with a cost for
each piece held, as its ``truesize``) and the number of pending datagrams; beyond either, the datagram
whose first fragment came first is dropped. A datagram keeps only the bytes received, and sets idle
too long leave from the oldest, so that each fragment costs about the same whatever is pending.
"""
from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field

from .headers import IPV6_EXT_AH, IPV6_EXT_FRAGMENT, IPV6_EXT_GENERIC

MAX_PENDING_BYTES = 4 << 20  # Linux net.ipv4.ipfrag_high_thresh (and ip6frag_high_thresh): 4 MiB
MAX_PENDING_DATAGRAMS = 4096  # datagrams waiting for fragments at once (their bookkeeping is most of a small one)
PIECE_COST = 256  # bytes counted for each piece held, beyond its own (Python's bookkeeping for it)
DATAGRAM_COST = 512  # bytes counted for each pending datagram, before any piece
IP_MAX_LENGTH = 65535  # largest IPv4 total length (RFC 791) and IPv6 payload length (RFC 8200)


@dataclass
class _Datagram:
    first_ts: int  # capture time of its first fragment
    ident: int
    header: bytes | None = None  # IP header to put in front of the reassembled payload
    total: int | None = None  # payload length, known once the last fragment arrived
    starts: list[int] = field(default_factory=list)  # byte ranges covered: [starts[k], ends[k]), sorted,
    ends: list[int] = field(default_factory=list)  # apart (ranges that meet are merged)
    pieces: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, bytes) as received, not overlapping
    cost: int = DATAGRAM_COST  # what it counts against MAX_PENDING_BYTES

    def complete(self) -> bool:
        return self.header is not None and self.total is not None and self.starts == [0] and self.ends == [self.total]

    def payload(self) -> bytes:
        body = bytearray(self.total or 0)
        for offset, piece in self.pieces:
            body[offset:offset + len(piece)] = piece
        return bytes(body)


class Defragmenter:
    """Collects IPv4 and IPv6 fragments and returns whole datagrams (RFC 791, RFC 8200 section 4.5).

    Overlaps keep the bytes that arrived first. Sets idle for ``timeout_ns`` of capture time are
    dropped and counted in ``expired``, as Zeek's ``frag_timeout`` and Linux's ``ipfrag_time`` do; sets
    dropped to stay within ``max_bytes`` and ``max_datagrams`` are counted in ``evicted``.
    """

    def __init__(self, timeout_ns: int = 60_000_000_000, max_bytes: int = MAX_PENDING_BYTES,
                 max_datagrams: int = MAX_PENDING_DATAGRAMS):
        self.pending: OrderedDict[tuple, _Datagram] = OrderedDict()  # oldest first fragment first
        self.pending_bytes = 0
        self.timeout_ns = timeout_ns
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.expired = 0
        self.evicted = 0
        self.bad = 0

    def add(self, pkt: bytes, ipver: int, ts_ns: int) -> tuple[bytes, int] | None:
        """Add one fragment (IP header onwards); returns (whole datagram, ident) when complete."""
        parsed = self._parse4(pkt) if ipver == 4 else self._parse6(pkt)
        if parsed is None:
            self.bad += 1
            return None
        key, header, offset, more, payload, ident = parsed
        end = offset + len(payload)
        if end > IP_MAX_LENGTH - (len(header) if ipver == 4 else 0):
            self.bad += 1  # longer than any IP datagram: Linux drops it too
            return None
        dg = self.pending.get(key)
        if dg is None:
            dg = self.pending[key] = _Datagram(first_ts=ts_ns, ident=ident)
            self.pending_bytes += dg.cost
        if offset == 0:
            dg.header = header
        if not more:
            dg.total = end
        for lo, hi in _cover(dg.starts, dg.ends, offset, end):
            dg.pieces.append((lo, payload[lo - offset:hi - offset]))
            dg.cost += hi - lo + PIECE_COST
            self.pending_bytes += hi - lo + PIECE_COST
        if dg.complete():
            self._drop(key)
            return self._rebuild(dg.header, dg.payload(), ipver), dg.ident
        while self.pending_bytes > self.max_bytes or len(self.pending) > self.max_datagrams:
            self._drop(next(iter(self.pending)))
            self.evicted += 1
        return None

    def expire(self, now_ns: int) -> None:
        """Drop the sets first seen more than ``timeout_ns`` before ``now_ns``, oldest first."""
        while self.pending:
            key, dg = next(iter(self.pending.items()))
            if now_ns - dg.first_ts <= self.timeout_ns:
                break
            self._drop(key)
            self.expired += 1

    def drop_all(self) -> None:
        """The capture ended: every set still pending never completed (counted in ``expired``)."""
        self.expired += len(self.pending)
        self.pending.clear()
        self.pending_bytes = 0

    def _drop(self, key: tuple) -> None:
        self.pending_bytes -= self.pending.pop(key).cost

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
            h[4:6] = struct.pack("!H", len(body))
        return bytes(h) + body


def _cover(starts: list[int], ends: list[int], lo: int, hi: int) -> list[tuple[int, int]]:
    """Add ``[lo, hi)`` to the sorted ranges ``starts``/``ends`` (merging those it meets or overlaps);
    returns the parts of it that were not covered yet. Costs a binary search and the ranges merged."""
    if hi <= lo:
        return []
    i = bisect_left(ends, lo)  # the first range ending at or after lo
    j = bisect_right(starts, hi)  # ranges i to j-1 start at or before hi: they meet [lo, hi)
    new, cur = [], lo
    for k in range(i, j):
        if starts[k] > cur:
            new.append((cur, starts[k]))
        cur = max(cur, ends[k])
    if cur < hi:
        new.append((cur, hi))
    if i < j:
        lo, hi = min(lo, starts[i]), max(hi, ends[j - 1])
    starts[i:j] = [lo]
    ends[i:j] = [hi]
    return new
