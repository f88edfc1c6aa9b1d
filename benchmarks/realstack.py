#!/usr/bin/env python3
"""Cause accuracy on real TCP stacks: Linux's own, between network namespaces, captured on both sides.

    sudo .venv/bin/python benchmarks/realstack.py                  # every variant, ~1 minute
    sudo .venv/bin/python benchmarks/realstack.py --variants nosack-2 sack-5

``gen.py`` writes the causes it simulates; this script lets the kernel's TCP decide everything (fast
retransmit, RTO, go-back-N without SACK, D-SACK, delayed ACKs) and reads the causes off two captures of
the same packets. Three namespaces of this process's own, ``a`` - ``r`` - ``b`` (veth pairs, offloads off
where ``ethtool`` is there); ``r`` forwards and drops, at random (nftables ``numgen``), a share of the
packets each way: the only loss. Capture A is taken on ``a``'s interface, B on ``b``'s, with tcpdump. ``a``
opens 8 connections to ``b``: 4 send 3 MB, 4 make 20 requests of 50-3000 bytes that ``b`` answers with
100-30000 bytes. Each variant sets the loss each way and the stacks' SACK and timestamps (sysctls).

Truth for each data segment of a capture X (one of its directions: the sender's side S, the receiver's
side R; frames matched across captures by 4-tuple, IP ID and sequence number, on one clock):

- X on the sender's side (nothing is lost between the sender and X): a copy of bytes captured before is a
  retransmission; ``spurious`` if R's capture shows every byte of it received in copies sent before it
  (the original was not lost, if perhaps delayed past this copy), else ``needed_captured``.
- X on the receiver's side: a copy of bytes captured before is ``spurious`` (they had all arrived); bytes
  not captured before that S had sent before are a retransmission whose original was lost before X
  (``needed_upstream``); a first transmission arriving after higher data is ``reordering`` (the router's
  two cores reorder now and then).

Ours is right when ``kind`` is ``spurious_retransmission``, a needed kind (``retransmission`` or
``fast_retransmission``) with ``original_captured`` as the truth says, or ``out_of_order``. ``false flags``
counts rows on frames the truth calls a first transmission in order. Needs root, ``ip``, ``nft``,
``tcpdump``; results go to ``benchmarks/results/realstack-latest.json``, captures to
``benchmarks/data/realstack/``.
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "realstack"
RESULTS = ROOT / "benchmarks" / "results"
PORT = 5001
A_ADDR, B_ADDR = "10.9.1.1", "10.9.2.1"

# name: (drop per mille a->b, b->a, sysctls of both stacks)
VARIANTS = {
    "sack-2": (20, 20, {}),
    "sack-5": (50, 50, {}),
    "sack-ackloss": (10, 50, {}),
    "nots-3": (30, 30, {"net.ipv4.tcp_timestamps": 0}),
    "nosack-2": (20, 20, {"net.ipv4.tcp_sack": 0}),
    "nosack-ackloss": (10, 50, {"net.ipv4.tcp_sack": 0}),
    "nosack-nots-2": (20, 20, {"net.ipv4.tcp_sack": 0, "net.ipv4.tcp_timestamps": 0}),
    "nosack-nots-5": (50, 50, {"net.ipv4.tcp_sack": 0, "net.ipv4.tcp_timestamps": 0}),
}
CONNECTIONS = 8
BULK = 3_000_000


# -- the two peers (run inside the namespaces: ``--peer server|client``) ---------------------------------
def _server() -> None:
    srv = socket.create_server(("0.0.0.0", PORT), backlog=64)
    srv.settimeout(90)

    def serve(conn: socket.socket, seed: int) -> None:
        import random
        rng = random.Random(seed)
        conn.settimeout(60)
        try:
            while data := conn.recv(65536):
                if data.endswith(b"?"):  # a request: answer it
                    conn.sendall(bytes(rng.randint(100, 30000)) + b"!")
        except OSError:
            pass
        conn.close()

    seed = 0
    while True:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        seed += 1
        threading.Thread(target=serve, args=(conn, seed), daemon=True).start()


def _client() -> None:
    import random

    def one(k: int) -> None:
        rng = random.Random(k)
        conn = socket.create_connection((B_ADDR, PORT), timeout=60)
        try:
            if k % 2 == 0:
                left = BULK
                while left > 0:
                    conn.sendall(bytes(min(left, 16384)))
                    left -= 16384
            else:
                for _ in range(20):
                    conn.sendall(bytes(rng.randint(50, 3000)) + b"?")
                    got = b""
                    while not got.endswith(b"!"):
                        data = conn.recv(65536)
                        if not data:
                            break
                        got += data
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(65536):
                pass
        except OSError as exc:
            print(f"client {k}: {exc}", file=sys.stderr)
        conn.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(CONNECTIONS)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()


# -- the namespaces -------------------------------------------------------------------------------------
def _run(*cmd: str, check: bool = True, stdin: str | None = None) -> None:
    subprocess.run(cmd, check=check, input=stdin, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _in(ns: str, *cmd: str, **kw) -> None:
    _run("ip", "netns", "exec", ns, *cmd, **kw)


def capture_variant(name: str, out: Path) -> tuple[Path, Path]:
    drop_ab, drop_ba, sysctls = VARIANTS[name]
    tag = f"rs{os.getpid() % 100000}"
    ns = {k: f"{tag}{k}" for k in "arb"}
    links = (("a", f"{tag}va", "r", f"{tag}ra"), ("b", f"{tag}vb", "r", f"{tag}rb"))
    procs: list[subprocess.Popen] = []
    paths = (out / f"{name}-A.pcap", out / f"{name}-B.pcap")
    try:
        for n in ns.values():
            _run("ip", "netns", "add", n)
            _in(n, "ip", "link", "set", "lo", "up")
        for x, xi, y, yi in links:
            _run("ip", "link", "add", xi, "type", "veth", "peer", "name", yi)
            _run("ip", "link", "set", xi, "netns", ns[x])
            _run("ip", "link", "set", yi, "netns", ns[y])
        for n, dev, addr in ((ns["a"], links[0][1], A_ADDR), (ns["r"], links[0][3], "10.9.1.2"),
                             (ns["r"], links[1][3], "10.9.2.2"), (ns["b"], links[1][1], B_ADDR)):
            _in(n, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            _in(n, "ip", "link", "set", dev, "up")
            if shutil.which("ethtool"):  # one packet a segment, as on a wire (no TSO/GSO/GRO packets)
                _in(n, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", check=False)
        _in(ns["a"], "ip", "route", "add", "default", "via", "10.9.1.2")
        _in(ns["b"], "ip", "route", "add", "default", "via", "10.9.2.2")
        _in(ns["r"], "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for key, value in sysctls.items():
            for n in (ns["a"], ns["b"]):
                _in(n, "sysctl", "-q", "-w", f"{key}={value}")
        _in(ns["r"], "nft", "-f", "-", stdin=(
            "table inet loss {\n chain forwarding {\n  type filter hook forward priority 0;\n"
            f"  ip daddr {B_ADDR} numgen random mod 1000 < {drop_ab} drop\n"
            f"  ip daddr {A_ADDR} numgen random mod 1000 < {drop_ba} drop\n }}\n}}\n"))
        for n, dev, path in ((ns["a"], links[0][1], paths[0]), (ns["b"], links[1][1], paths[1])):
            procs.append(subprocess.Popen(["ip", "netns", "exec", n, "tcpdump", "-i", dev, "-s", "128", "-U", "-w",
                                           str(path), "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)
        me = [sys.executable, str(Path(__file__).resolve()), "--peer"]
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns["b"], *me, "server"]))
        time.sleep(0.5)
        subprocess.run(["ip", "netns", "exec", ns["a"], *me, "client"], timeout=180, check=False)
        time.sleep(1.0)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for n in ns.values():
            _run("ip", "netns", "del", n, check=False)
    return paths


# -- truth and accuracy ---------------------------------------------------------------------------------
def _segments(path: Path) -> list[dict]:
    """Data segments (and FINs) of a capture, in frame order: frame, time, 4-tuple key, IP ID, relative range."""
    import analyzer

    df = analyzer.read_packets(str(path))
    base: dict = {}
    out = []
    cols = [df[c] for c in ("frame", "ts_ns", "src", "sport", "dport", "ip_id", "seq_raw", "payload_len", "flags")]
    cols[2] = cols[2].astype(str)
    for fr, ts, src, sp, dp, ipid, seq, plen, fl in zip(*cols):
        key = (src, int(sp), int(dp))
        if fl & 0x02:  # SYN: the base of the relative sequence numbers
            base[key] = (int(seq) + 1) & 0xFFFFFFFF
            continue
        fin = int(fl & 0x01)
        if plen == 0 and not fin or key not in base:
            continue
        lo = (int(seq) - base[key]) & 0xFFFFFFFF
        out.append(dict(frame=int(fr), ts=int(ts), key=key, ipid=int(ipid), lo=lo, hi=lo + int(plen) + fin))
    return out


def _covers(spans, lo: int, hi: int) -> bool:
    """Do the byte ranges ``spans`` (sorted (start, end) pairs) cover all of [lo, hi)?"""
    pos = lo
    for a, b in spans:
        if a <= pos < b:
            pos = b
        if pos >= hi:
            return True
    return pos >= hi


class _Coverage:
    """Byte ranges received, each with its time, per key: which were all there before a time."""

    def __init__(self, segments: list[dict]):
        self.by = defaultdict(list)
        for s in segments:
            self.by[s["key"]].append((s["ts"], s["lo"], s["hi"]))

    def covered(self, key, lo: int, hi: int, before: int) -> bool:
        return _covers(sorted((a, b) for t, a, b in self.by.get(key, ()) if t < before), lo, hi)

    def sent(self, key, lo: int, hi: int, before: int) -> bool:
        return any(t < before and max(a, lo) < min(b, hi) for t, a, b in self.by.get(key, ()))


def truth(x: list[dict], other: list[dict], near_addr: str) -> dict[int, str]:
    """Each data segment's cause in capture ``x`` (see the module docstring); ``near_addr``: the host on
    whose side of the router ``x`` was taken."""
    other_cov = _Coverage(other)
    at_other = {(s["key"], s["ipid"], s["lo"]): s["ts"] for s in other}
    sent_at = {(s["key"], s["ipid"], s["lo"]): s["ts"] for s in x}
    # what the far side received, by the time each copy was sent (x's clock): for "an earlier copy arrived"
    arrived_by_send = _Coverage([dict(s, ts=sent_at[(s["key"], s["ipid"], s["lo"])]) for s in other
                                 if (s["key"], s["ipid"], s["lo"]) in sent_at])
    seen: dict = defaultdict(list)  # key -> sorted (lo, hi) captured so far in x
    top: dict = defaultdict(int)
    out = {}
    for s in x:
        key, lo, hi = s["key"], s["lo"], s["hi"]
        spans = seen[key]
        before = _covers(spans, lo, hi)
        if key[0] == near_addr:  # x is the sender's side
            if before:  # not needed when copies sent before it all arrived, whenever they did
                out[s["frame"]] = ("spurious" if arrived_by_send.covered(key, lo, hi, s["ts"])
                                   else "needed_captured")
        elif before:
            out[s["frame"]] = "spurious"
        else:
            sent = at_other.get((key, s["ipid"], lo))
            if sent is not None and other_cov.sent(key, lo, hi, sent):
                out[s["frame"]] = "needed_upstream"
            elif lo < top[key]:
                out[s["frame"]] = "reordering"
        bisect.insort(spans, (lo, hi))
        top[key] = max(top[key], hi)
    return out


NEEDED = ("retransmission", "fast_retransmission")


def accuracy(path: Path, x: list[dict], other: list[dict], near_addr: str) -> dict:
    import analyzer

    rows = analyzer.analyze(str(path)).retransmissions.set_index("frame")
    kinds, orig = rows["kind"].to_dict(), rows["original_captured"].to_dict()
    want = truth(x, other, near_addr)
    right, total = Counter(), Counter()
    for frame, cause in want.items():
        k = kinds.get(frame, "")
        ok = {"spurious": k == "spurious_retransmission",
              "needed_captured": k in NEEDED and orig.get(frame) is True,
              "needed_upstream": k in NEEDED and orig.get(frame) is False,
              "reordering": k == "out_of_order"}[cause]
        total[cause] += 1
        right[cause] += ok
    false_flags = sum(1 for f, k in kinds.items() if f not in want and k != "syn_retransmission")
    return {"per_cause": {c: [right[c], total[c]] for c in total}, "right": sum(right.values()),
            "frames": sum(total.values()), "false_flags": false_flags}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--peer", choices=("server", "client"), help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help="keep the captures in benchmarks/data/realstack")
    args = ap.parse_args(argv)
    if args.peer:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        (_server if args.peer == "server" else _client)()
        return 0
    missing = [t for t in ("ip", "nft", "tcpdump") if not shutil.which(t)]
    if os.geteuid() != 0 or missing:
        print("realstack: needs root and " + ", ".join(missing or ["ip", "nft", "tcpdump"]), file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    DATA.mkdir(parents=True, exist_ok=True)
    results = {}
    print(f"{'variant':<16} {'side':<4} {'needed, captured':>17} {'needed, upstream':>17} {'spurious':>11} "
          f"{'reordering':>11} {'overall':>8} {'false flags':>11}")
    for name in args.variants:
        a_path, b_path = capture_variant(name, DATA)
        a, b = _segments(a_path), _segments(b_path)
        for side, path, x, other, near in (("A", a_path, a, b, A_ADDR), ("B", b_path, b, a, B_ADDR)):
            r = accuracy(path, x, other, near)
            results[f"{name}/{side}"] = r
            cell = lambda c: "{}/{}".format(*r["per_cause"].get(c, [0, 0]))  # noqa: E731
            print(f"{name:<16} {side:<4} {cell('needed_captured'):>17} {cell('needed_upstream'):>17} "
                  f"{cell('spurious'):>11} {cell('reordering'):>11} {r['right'] / max(r['frames'], 1):>8.3f} "
                  f"{r['false_flags']:>11}")
        if not args.keep:
            a_path.unlink()
            b_path.unlink()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "realstack-latest.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
