#!/usr/bin/env python3
"""A/B timing of ``analyze`` between an earlier commit and the working tree, runs alternating.

    python benchmarks/ab.py --base HEAD~1                 # 5 runs each on the 1M-frame benchmark file
    python benchmarks/ab.py --base 7c5b951 --runs 7 --file benchmarks/data/bench-5000000-s1-v2.pcap
    python benchmarks/ab.py --base HEAD~1 --cold 3        # also: cold kernel compile, 3 runs each
    python benchmarks/ab.py --base 7c5b951 --now issue10-records-copy-fix --runs 9   # two earlier commits

The base commit (and ``--now``, when given instead of the working tree) is checked out in a temporary
git worktree and both versions run as fresh processes (``python -m analyzer analyze -q FILE``), one of
each in turn, so drifts of the machine's speed hit both alike; the medians and their ratio are printed.
``--cold`` times a run on the small demo capture with an empty numba cache (a fresh private
NUMBA_CACHE_DIR each time): the kernels' compile time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
DEFAULT_FILE = ROOT / "benchmarks" / "data" / "bench-1000000-s1-v2.pcap"
SMALL = ROOT / "captures" / "demo.pcap"


def timed(tree: Path, capture: Path, out: Path, env: dict) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([PYTHON, "-m", "analyzer", "analyze", "-q", str(capture), "-o", str(out)],
                       env=dict(env, PYTHONPATH=str(tree)), cwd=tree, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode not in (0, 1):
        raise SystemExit(f"{tree}: analyze failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return elapsed


def alternate(trees: dict[str, Path], runs: int, capture: Path, scratch: Path, cold: bool) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in trees}
    for i in range(runs):
        for name, tree in (trees.items() if i % 2 == 0 else reversed(trees.items())):
            env = dict(os.environ)
            if cold:
                cache = Path(tempfile.mkdtemp(prefix="ab-numba-", dir=scratch))
                env["NUMBA_CACHE_DIR"] = str(cache)
            times[name].append(timed(tree, capture, scratch / f"out-{name}", env))
            if cold:
                shutil.rmtree(cache, ignore_errors=True)
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(title)
    for k, v in times.items():
        print(f"  {k:5} median {med[k]:.3f} s   runs " + " ".join(f"{t:.3f}" for t in v))
    print(f"  now / base = {med['now'] / med['base']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the earlier commit")
    ap.add_argument("--now", help="compare this commit instead of the working tree")
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE, help="capture to analyze (default: the 1M file)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each version (default 5)")
    ap.add_argument("--cold", type=int, default=0, help="also time N cold-cache runs of each on the demo capture")
    args = ap.parse_args(argv)
    args.file = args.file.resolve()  # (each version runs in its own tree's folder)
    if not args.file.is_file():
        ap.error(f"no capture {args.file}")
    scratch = Path(tempfile.mkdtemp(prefix="ab-"))
    trees = {"base": scratch / "base", "now": scratch / "now" if args.now else ROOT}
    try:
        for name, rev in (("base", args.base), ("now", args.now)):
            if rev:
                subprocess.run(["git", "worktree", "add", "--detach", str(trees[name]), rev], cwd=ROOT, check=True,
                               capture_output=True)
        for tree in trees.values():  # compile and cache each version's kernels, byte-compile its modules
            subprocess.run([PYTHON, "-m", "compileall", "-q", str(tree / "analyzer")], check=False)
            timed(tree, SMALL, scratch / "warm", dict(os.environ))
        with open(args.file, "rb") as fh:  # the file in the page cache
            while fh.read(1 << 24):
                pass
        report(f"analyze {args.file.name}, {args.runs} runs each, alternating",
               alternate(trees, args.runs, args.file, scratch, cold=False))
        if args.cold:
            report(f"cold compile (analyze {SMALL.name} with an empty numba cache), {args.cold} runs each",
                   alternate(trees, args.cold, SMALL, scratch, cold=True))
        return 0
    finally:
        for tree in trees.values():
            if tree != ROOT:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
