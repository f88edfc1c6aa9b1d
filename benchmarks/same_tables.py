#!/usr/bin/env python3
"""Are the tables byte-identical to an earlier commit's? For refactors that must not change output.

    python benchmarks/same_tables.py                 # against HEAD, on the default captures
    python benchmarks/same_tables.py --base HEAD~3   # against another commit
    python benchmarks/same_tables.py --base HEAD x.pcap y.pcapng

The earlier commit is checked out in a temporary git worktree; both versions run ``python -m analyzer
analyze --packets`` on the same captures (the shared real captures, ``captures/demo.pcap`` and the 1M-frame
benchmark file when ``benchmarks/data`` has it), and every written file is compared byte by byte.
Exit status 0 when all are identical, 1 otherwise (each differing file is named, with its first
differing line).
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
SHARED = ROOT.parent / "shared" / "captures" / "real"


def default_captures() -> list[Path]:
    caps = sorted(p for p in SHARED.glob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng")) if SHARED.is_dir() else []
    caps.append(ROOT / "captures" / "demo.pcap")
    caps += sorted((ROOT / "benchmarks" / "data").glob("bench-1000000-*.pcap"))
    return caps


def run(tree: Path, captures: list[Path], out: Path, extra: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=str(tree))
    for cap in captures:  # one run per capture: each table set in its own folder, named after the file
        r = subprocess.run([PYTHON, "-m", "analyzer", "analyze", "-q", "--packets", *extra, str(cap),
                            "-o", str(out / cap.name)], env=env, cwd=tree, capture_output=True, text=True)
        if r.returncode not in (0, 1):
            raise SystemExit(f"{tree}: analyze {cap} failed ({r.returncode}): {r.stderr.strip()[-400:]}")


def first_difference(a: Path, b: Path) -> str:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for n, (x, y) in enumerate(zip(fa, fb), 1):
            if x != y:
                return f"line {n}:\n    base: {x[:200]!r}\n    now:  {y[:200]!r}"
    return "one file is a prefix of the other"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("captures", nargs="*", type=Path)
    ap.add_argument("--base", default="HEAD", help="commit to compare with (default HEAD)")
    ap.add_argument("--format", default="csv", choices=("csv", "parquet", "json"))
    args = ap.parse_args(argv)
    captures = args.captures or default_captures()
    scratch = Path(tempfile.mkdtemp(prefix="same-tables-"))
    base_tree = scratch / "base"
    try:
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        extra = ["--format", args.format]
        run(base_tree, captures, scratch / "out-base", extra)
        run(ROOT, captures, scratch / "out-now", extra)
        base_files = sorted(p.relative_to(scratch / "out-base") for p in (scratch / "out-base").rglob("*") if p.is_file())
        now_files = sorted(p.relative_to(scratch / "out-now") for p in (scratch / "out-now").rglob("*") if p.is_file())
        bad = 0
        for rel in sorted(set(base_files) | set(now_files)):
            a, b = scratch / "out-base" / rel, scratch / "out-now" / rel
            if not a.exists() or not b.exists():
                print(f"{rel}: only in {'now' if b.exists() else 'base'}")
                bad += 1
            elif not filecmp.cmp(a, b, shallow=False):
                print(f"{rel}: differs at {first_difference(a, b)}")
                bad += 1
        print(f"{len(captures)} captures, {len(base_files)} files: "
              + ("all byte-identical" if not bad else f"{bad} differ") + f" (base {args.base})")
        return 1 if bad else 0
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
