#!/usr/bin/env python3
"""Scale benchmark: many short connections (``many.py``), ``tcp-analyzer analyze`` beside ``tcptrace -n -l``.

    python benchmarks/scale.py                                 # 200,000 and 2,000,000 connections, 3 runs
    python benchmarks/scale.py --connections 200000 --runs 5

For each size the capture is generated once and cached in ``benchmarks/data/`` as
``many-<connections>-s<seed>-v<many.py version>.pcap`` (git-ignored). Then analyze and tcptrace run in
turns (analyze, tcptrace, analyze, ...), each a fresh process on the file, already in the page cache; wall
time and peak RSS (GNU time's ``%M``: ``bench.run_once``) are the medians of ``--runs`` runs. After
the runs, analyze's tables are checked: one connection and one established handshake per generated
connection, every connection closed by both FINs (Zeek's SF), no retransmission row. Results go to
``benchmarks/results/scale-<time>.json`` and ``scale-latest.json``. Exit status 1 when a table is wrong
or a run fails.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (run_once, Result, host_info, save)
import many  # noqa: E402

SIZES = (200_000, 2_000_000)


def ensure_capture(connections: int, seed: int) -> Path:
    """The cached capture of ``connections`` connections, generated (in a child process) when missing."""
    bench.DATA.mkdir(parents=True, exist_ok=True)
    path = bench.DATA / f"many-{connections}-s{seed}-v{many.MANY_VERSION}.pcap"
    if path.exists():
        print(f"reusing {path.relative_to(bench.ROOT)}")
        return path
    print(f"generating {path.relative_to(bench.ROOT)} ({connections:,} connections) ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(bench.HERE / "many.py"), "--connections", str(connections), "--seed",
                    str(seed), "-o", str(path), "-q"], check=True)
    print(f"  done in {time.perf_counter() - t0:.1f} s")
    return path


def check_tables(out: Path, connections: int) -> list[str]:
    """What is wrong with analyze's tables of a many.py capture (nothing: an empty list)."""
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    problems = []
    conns = pacsv.read_csv(out / "connections.csv")
    hs = pacsv.read_csv(out / "handshakes.csv")
    rx = pacsv.read_csv(out / "retransmissions.csv")
    established = pc.sum(pc.equal(hs["outcome"], "established")).as_py() or 0
    closed = pc.sum(pc.equal(conns["conn_state"], "SF")).as_py() or 0
    for what, got in (("connections", conns.num_rows), ("handshakes", hs.num_rows),
                      ("established handshakes", established), ("SF connections", closed)):
        if got != connections:
            problems.append(f"{what}: {got:,}, expected {connections:,}")
    if rx.num_rows:
        problems.append(f"{rx.num_rows:,} retransmission rows, expected none")
    return problems


def scale_one(connections: int, seed: int, runs: int, out: Path) -> dict:
    path = ensure_capture(connections, seed)
    bench.warm_cache(path)
    env = dict(os.environ, PYTHONPATH=str(bench.ROOT))
    tools = [bench.Result("analyze", f"tcp-analyzer analyze {path.name} -o DIR -q"),
             bench.Result("tcptrace", f"tcptrace -n -l {path.name}")]
    argvs = [[bench.PYTHON, "-m", "analyzer", "analyze", str(path), "-o", str(out), "-q"],
             ["tcptrace", "-n", "-l", str(path)]]
    if not shutil.which("tcptrace"):
        tools[1].status, tools[1].note = "unavailable", "tcptrace is not installed (Debian package tcptrace)"
    for k in range(runs):  # in turns, so a slow spell of the shared machine falls on both
        for res, argv in zip(tools, argvs):
            if res.status != "ok":
                continue
            r = bench.run_once(argv, env=env)
            res.runs.append(r)
            if r.rc:
                res.status, res.note = "failed", f"exit {r.rc}: " + (r.stderr.strip().splitlines() or [""])[-1][:200]
                continue
            print(f"  {connections:>9,} {res.name:9s} run {k + 1}/{runs}: {r.seconds:8.2f} s {r.rss_mb:9.1f} MB",
                  flush=True)
    problems = check_tables(out, connections) if tools[0].status == "ok" else ["analyze failed"]
    for p in problems:
        print(f"  WRONG: {p}")
    return {"connections": connections, "frames": connections * many.FRAMES_PER_CONNECTION,
            "bytes": path.stat().st_size, "capture": str(path.relative_to(bench.ROOT)), "tables_ok": not problems,
            "problems": problems,
            "results": [{"name": r.name, "command": r.command, "status": r.status, "note": r.note,
                         "seconds": r.seconds, "rss_mb": r.rss_mb,
                         "runs": [{"seconds": round(x.seconds, 3), "rss_mb": round(x.rss_mb, 1)} for x in r.runs]}
                        for r in tools]}


def table(sizes: list[dict]) -> str:
    rows = ["| capture | analyze wall | analyze peak RSS | tcptrace wall | tcptrace peak RSS |", "|---|---:|---:|---:|---:|"]
    for s in sizes:
        a, t = ({r["name"]: r for r in s["results"]}[n] for n in ("analyze", "tcptrace"))
        fmt = lambda r, key, unit: "-" if r[key] is None else (f"{r[key]:.1f} s" if unit == "s" else  # noqa: E731
                                                                f"{r[key]:,.0f} MB")
        rows.append(f"| {s['connections']:,} connections, {s['frames']:,} frames | {fmt(a, 'seconds', 's')} | "
                    f"{fmt(a, 'rss_mb', 'MB')} | {fmt(t, 'seconds', 's')} | {fmt(t, 'rss_mb', 'MB')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, action="append",
                    help=f"capture sizes, repeatable (default {', '.join(f'{s:,}' for s in SIZES)})")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="runs per tool; the median is reported (default 3)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    bench.precompile()
    sizes = []
    with tempfile.TemporaryDirectory(prefix="tcp-analyzer-scale-") as tmp:
        for n in args.connections or SIZES:
            sizes.append(scale_one(n, args.seed, args.runs, Path(tmp) / "out"))
    print("\n" + table(sizes))
    report = {"kind": "scale", "host": bench.host_info(), "runs": args.runs, "sizes": sizes}
    print(f"\nwrote {bench.save(report).relative_to(bench.ROOT)}")
    ok = all(s["tables_ok"] and all(r["status"] != "failed" for r in s["results"]) for s in sizes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
