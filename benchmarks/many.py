#!/usr/bin/env python3
"""Seeded capture of many short TCP connections: the traffic of a busy server over a day, for scale runs.

    python benchmarks/many.py --connections 200000 -o many.pcap        # 2,000,000 frames
    python benchmarks/many.py --connections 2000 --seed 3 -o small.pcap

Every connection is the same ten frames, seen at the server (the capture point is on its host):

    1 SYN  2 SYN-ACK  3 ACK  4 request  5 ACK  6 response  7 ACK  8 FIN (client)  9 FIN  10 ACK

IPv4 over Ethernet, a classic pcap with microsecond timestamps. Connections start as a Poisson process
whose rate keeps about ``--open`` (400) of them open at once; each has its own round-trip time (2-60 ms)
and server think time (0.2-20 ms), so their frames interleave. Fields are what a Linux pair sends: random
ISNs, per-direction IP IDs counting up from a random start, TCP timestamps (a millisecond clock per host
and connection; TSecr echoes the peer's latest TSval), MSS 1460, window scale 7 and SACK-permitted in
the SYN and SYN-ACK, advertised windows of 500-3000 (scaled) afterwards, a request of 60-600 bytes and a
response of 100-1400 (zero bytes). No 4-tuple is used twice, nothing is lost or resent: every handshake
is established and no frame is a retransmission, which ``scale.py`` checks in the tables.

Headers are written by ``gen.py``'s structured-dtype writer (``gen.write_frames``), block by block of
connections, so memory stays flat whatever ``--connections``: frames of a block's connections that end
after the next block starts wait for it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen  # noqa: E402  (the header writer and its flag constants)

MANY_VERSION = 1  # bump when the output for a given (connections, seed, open) changes
FRAMES_PER_CONNECTION = 10
BLOCK = 50_000  # connections simulated at a time
OPEN_DEFAULT = 400
CLIENTS = 60_000  # client hosts 10.1.0.1-10.1.234.96; each uses its next port per connection
SERVERS = 40  # server hosts 10.200.0.1-40
EPHEMERAL = 32768  # first client port (Linux ip_local_port_range)
MSS = 1460
WSCALE = 7
RTT_US = (2_000, 60_000)
THINK_US = (200, 20_000)
REQUEST = (60, 600)
RESPONSE = (100, 1400)
STACK_US = 30  # a host's turn-around for an immediate answer (SYN-ACK, ACK, FIN-ACK)
CLIENT_GAP_US = 50  # the client's request right after its ACK; its FIN after the response's ACK
A, S, F, P = gen.TH_ACK, gen.TH_SYN, gen.TH_FIN, gen.TH_PSH
# the ten frames: (direction 0 client / 1 server, flags); their times are in _times()
SCRIPT = ((0, S), (1, S | A), (0, A), (0, P | A), (1, A), (1, P | A), (0, A), (0, F | A), (1, F | A), (0, A))


def _times(n: int, rtt: np.ndarray, think: np.ndarray) -> np.ndarray:
    """Capture times (us after the connection's SYN) of the ten frames, (n, 10). At the server: what the
    client sends in answer to the server comes one RTT after it."""
    t = np.zeros((n, FRAMES_PER_CONNECTION), dtype=np.int64)
    t[:, 1] = STACK_US  # SYN-ACK
    t[:, 2] = rtt  # the client's ACK
    t[:, 3] = rtt + CLIENT_GAP_US  # request
    t[:, 4] = t[:, 3] + STACK_US  # the server's ACK of it
    t[:, 5] = t[:, 3] + think  # response
    t[:, 6] = t[:, 5] + rtt  # its ACK
    t[:, 7] = t[:, 6] + CLIENT_GAP_US  # client FIN
    t[:, 8] = t[:, 7] + STACK_US  # server FIN
    t[:, 9] = t[:, 8] + rtt  # the last ACK
    return t


def _block(rng: np.random.Generator, first: int, n: int, start: np.ndarray) -> tuple[dict, gen.Flows]:
    """Packets (gen's column names, flow-major) and flows of connections ``first .. first + n - 1``
    starting at ``start`` (us since gen.EPOCH_START)."""
    k = np.arange(first, first + n)
    rtt = rng.integers(*RTT_US, n)
    think = rng.integers(*THINK_US, n)
    req, resp = rng.integers(*REQUEST, n), rng.integers(*RESPONSE, n)
    isn = rng.integers(1, 2**32 - 4 * RESPONSE[1], (n, 2))  # never wraps to 0 (Wireshark reads 0 as unset)
    ipid0 = rng.integers(0, 65536, (n, 2))
    ts0 = rng.integers(0, 2**31, (n, 2))  # each side's TSval at the SYN, ms
    f = gen.Flows(
        v6=np.zeros(n, bool), vlan=np.zeros(n, np.int64), ts=np.ones(n, bool), sack=np.ones(n, bool),
        tap=np.ones(n, np.int64), cli_ip=(10 << 24) | (1 << 16) | (1 + k % CLIENTS),
        srv_ip=(10 << 24) | (200 << 16) | rng.integers(1, SERVERS + 1, n), cport=EPHEMERAL + k // CLIENTS,
        sport=rng.choice(gen.SERVER_PORTS, n), mss_c=np.full(n, MSS), mss_s=np.full(n, MSS),
        ws_c=np.full(n, WSCALE), ws_s=np.full(n, WSCALE), win_c=rng.integers(500, 3000, n),
        win_s=rng.integers(500, 3000, n), isn=isn, ttl=np.stack([64 - rng.integers(3, 20, n), np.full(n, 64)], 1))
    d = np.array([s[0] for s in SCRIPT], dtype=np.int8)
    flags = np.array([s[1] for s in SCRIPT], dtype=np.uint8)
    plen = np.zeros((n, FRAMES_PER_CONNECTION), dtype=np.int32)
    plen[:, 3], plen[:, 5] = req, resp
    # sequence space used before each frame, per direction: SYN 1, payload, FIN 1
    used = plen + ((flags & (S | F)) != 0)
    sent = np.zeros_like(used, dtype=np.int64)
    recv = np.zeros_like(sent)
    for i in range(1, FRAMES_PER_CONNECTION):
        own = d == d[i]
        sent[:, i] = used[:, :i][:, own[:i]].sum(axis=1)
        recv[:, i] = used[:, :i][:, ~own[:i]].sum(axis=1)
    seq_raw = (isn[:, d] + sent) & gen.MASK32
    ack_raw = np.where((flags & A) != 0, (isn[:, 1 - d] + recv) & gen.MASK32, 0)
    t = start[:, None] + _times(n, rtt, think)
    tsval = ts0[:, d] + (t - start[:, None]) // 1000
    tsecr = np.zeros_like(tsval)  # the peer's latest TSval before this frame (none for the SYN)
    for i in range(1, FRAMES_PER_CONNECTION):
        peer = np.flatnonzero(d[:i] != d[i])
        tsecr[:, i] = tsval[:, peer[-1]] if len(peer) else 0
    ipid = (ipid0[:, d] + np.cumsum(np.eye(2, dtype=np.int64)[d], axis=0)[np.arange(len(d)), d] - 1) & 0xFFFF
    p = {"flow": np.repeat(np.arange(n), FRAMES_PER_CONNECTION), "d": np.tile(d, n), "flags": np.tile(flags, n),
         "plen": plen.ravel(), "seq_raw": seq_raw.ravel().astype(np.uint32),
         "ack_raw": ack_raw.ravel().astype(np.uint32), "ipid": ipid.ravel().astype(np.int32),
         "tsval": (tsval.ravel() & gen.MASK32), "tsecr": (tsecr.ravel() & gen.MASK32),
         "nsack": np.zeros(n * FRAMES_PER_CONNECTION, np.int8), "t": t.ravel()}
    return p, f


def _concat(a: tuple[dict, gen.Flows], b: tuple[dict, gen.Flows]) -> tuple[dict, gen.Flows]:
    """Packets and flows of two sets as one (``b``'s flow indices moved past ``a``'s)."""
    (pa, fa), (pb, fb) = a, b
    shift = len(fa.v6)
    p = {name: np.concatenate([pa[name], pb[name] + (shift if name == "flow" else 0)]) for name in pa}
    f = gen.Flows(**{name: np.concatenate([getattr(fa, name), getattr(fb, name)]) for name in fa.__dataclass_fields__})
    return p, f


def _subset(p: dict, f: gen.Flows, keep: np.ndarray) -> tuple[dict, gen.Flows]:
    """The packets ``keep`` and only their flows, renumbered."""
    flows, inverse = np.unique(p["flow"][keep], return_inverse=True)
    q = {name: v[keep] for name, v in p.items()}
    q["flow"] = inverse.astype(np.int64)
    return q, gen.Flows(**{name: getattr(f, name)[flows] for name in f.__dataclass_fields__})


def generate(path: str, connections: int, seed: int = 1, open_at_once: int = OPEN_DEFAULT) -> dict:
    """Writes the capture; returns counts (connections, frames, bytes, duration_s, seconds)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    mean_life = (sum(RTT_US) / 2 * 3 + sum(THINK_US) / 2)  # us a connection stays open, on average
    gap = mean_life / open_at_once  # Little's law: open = arrival rate x lifetime
    empty = (dict.fromkeys(("flow", "d", "flags", "plen", "seq_raw", "ack_raw", "ipid", "tsval", "tsecr", "nsack",
                            "t"), np.empty(0, np.int64)), _block(rng, 0, 0, np.empty(0, np.int64))[1])
    carry, clock, frames, written = empty, 0.0, 0, 0
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        written += gen.write_pcap_header(out)
        for first in range(0, connections, BLOCK):
            n = min(BLOCK, connections - first)
            starts = clock + np.cumsum(rng.exponential(gap, n))
            clock = float(starts[-1])
            block = _block(rng, first, n, starts.astype(np.int64))
            p, f = _concat(carry, block)
            last = first + n >= connections
            cut = np.inf if last else clock  # frames after the block's last SYN wait for the next block
            ready = np.flatnonzero(p["t"] <= cut)
            order = ready[np.lexsort((ready, p["t"][ready]))]  # time, then flow-major order
            written += gen.write_frames(out, p, f, order, p["t"][order])
            frames += len(order)
            carry = _subset(p, f, np.flatnonzero(p["t"] > cut))
    Path(tmp).replace(path)
    return {"generator": "benchmarks/many.py", "version": MANY_VERSION, "seed": seed, "connections": connections,
            "open_at_once": open_at_once, "frames": frames, "bytes": written,
            "duration_s": round(clock / 1e6, 3), "seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=200_000, help="connections (default 200,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--open", type=int, default=OPEN_DEFAULT, help="connections open at once, on average (400)")
    ap.add_argument("-o", "--output", default="many.pcap", help="output pcap (default many.pcap)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.connections < 1 or args.open < 1:
        ap.error("--connections and --open must be at least 1")
    meta = generate(args.output, args.connections, args.seed, args.open)
    if not args.quiet:
        print(", ".join(f"{k} {v}" for k, v in meta.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
