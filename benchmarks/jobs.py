#!/usr/bin/env python3
"""Wall time of ``analyze --jobs 1`` against ``--jobs N``, runs alternating, medians; tables checked identical.

    python benchmarks/jobs.py                              # the 1M and 5M files, --jobs 1 vs 2, 5 runs each
    python benchmarks/jobs.py --jobs 2 3 --runs 7 FILE...  # other files, more job counts

Each run is a fresh process (``python -m analyzer analyze -q FILE -o DIR --jobs J``) on a file read once
beforehand (in the page cache). The job counts run one after the other in each round, in reverse order
every other round, so a slow spell of the shared machine falls on all of them. With ``--wait-idle S``
each round first waits (up to S seconds) for a second in which the CPUs are 90% idle: other work on a
shared machine takes the cores a parallel run needs. The CPUs' idle share just before each round is
printed beside it. After the runs, every job count's tables must be byte-identical to
``--jobs 1``'s. Target (issue 14): ``--jobs 2`` at most 0.75 x ``--jobs 1`` on a 2-core machine.
Results go to ``benchmarks/results/jobs-latest.json``. Exit status 1 when tables differ or a run fails.
"""
from __future__ import annotations

import argparse
import filecmp
import json
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
DATA = ROOT / "benchmarks" / "data"
DEFAULT_FILES = [DATA / "bench-1000000-s1-v2.pcap", DATA / "bench-5000000-s1-v2.pcap"]
TARGET = 0.75  # --jobs 2 wall time over --jobs 1's


def timed(capture: Path, out: Path, jobs: int) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([PYTHON, "-m", "analyzer", "analyze", "-q", str(capture), "-o", str(out), "--jobs", str(jobs)],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"--jobs {jobs} on {capture} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return elapsed


def idle_share(seconds: float = 1.0) -> float:
    """The share of CPU time spent idle over ``seconds`` (from /proc/stat; 0 where there is none)."""
    def sample() -> tuple[int, int]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except OSError:
            return 0, 1
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_idle(limit: float) -> float:
    """Wait up to ``limit`` seconds for a second with the CPUs at least 90% idle; the last share seen."""
    deadline = time.monotonic() + limit
    while True:
        share = idle_share()
        if share >= 0.9 or time.monotonic() >= deadline:
            return share


def same_tables(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def bench(capture: Path, jobs: list[int], runs: int, scratch: Path, idle_wait: float) -> dict:
    with open(capture, "rb") as fh:  # the file in the page cache
        while fh.read(1 << 24):
            pass
    counts = [1, *[j for j in jobs if j != 1]]
    times: dict[int, list[float]] = {j: [] for j in counts}
    idle = []
    for i in range(runs):
        idle.append(wait_idle(idle_wait) if idle_wait else idle_share())
        for j in counts if i % 2 == 0 else reversed(counts):
            times[j].append(timed(capture, scratch / f"out-{j}", j))
        print(f"  round {i + 1}: " + "  ".join(f"--jobs {j} {times[j][-1]:.2f} s" for j in counts)
              + f"   (CPUs {idle[-1]:.0%} idle before)", flush=True)
    med = {j: statistics.median(t) for j, t in times.items()}
    result = {"file": str(capture), "runs": runs, "times": times, "median": med, "idle_before": idle,
              "ratio": {j: med[j] / med[1] for j in counts}, "identical": {}}
    for j in counts[1:]:
        result["identical"][j] = same_tables(scratch / "out-1", scratch / f"out-{j}")
        print(f"  --jobs {j}: median {med[j]:.2f} s vs {med[1]:.2f} s = {result['ratio'][j]:.3f} x --jobs 1"
              + ("" if j != 2 else f" (target {TARGET})") + f"; tables "
              + ("byte-identical" if result["identical"][j] else "DIFFER"))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="captures (default: the 1M and 5M benchmark files)")
    ap.add_argument("--jobs", nargs="+", type=int, default=[2], help="job counts to compare with 1 (default 2)")
    ap.add_argument("--runs", type=int, default=5, help="runs of each (default 5; the median is reported)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="before each round, wait up to S seconds for the CPUs to be idle")
    args = ap.parse_args(argv)
    files = args.files or DEFAULT_FILES
    missing = [f for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"missing: {', '.join(map(str, missing))} (python benchmarks/gen.py --frames N --seed 1 "
                         f"-o FILE writes one)")
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "analyzer")], check=False)
    results = []
    for capture in files:
        print(f"{capture.name}: {args.runs} runs each, alternating ({os.cpu_count()} cores)", flush=True)
        scratch = Path(tempfile.mkdtemp(prefix="jobs-bench-"))
        try:
            timed(ROOT / "captures" / "demo.pcap", scratch / "warm", 2)  # kernels compiled and cached
            results.append(bench(capture, args.jobs, args.runs, scratch, args.wait_idle))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "jobs-latest.json").write_text(json.dumps(results, indent=2))
    return 0 if all(all(r["identical"].values()) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
