#!/usr/bin/env python3
"""Benchmark: the native reader and the analyze CLI beside tcpdump, tshark and tcptrace.

    python benchmarks/bench.py                      # 1,000,000 frames, 3 runs each
    python benchmarks/bench.py --skip tshark        # leave out the slow tools (tshark and tshark-fields)
    python benchmarks/bench.py --memory             # also: 5x larger file, batched, RSS over time

The capture comes from ``benchmarks/gen.py`` (seeded) and is cached in ``benchmarks/data/``. Every tool
runs as a fresh process on the same file, already in the page cache; wall time and peak RSS (GNU time's
``%M``) are the medians of ``--runs`` runs. Results go to ``benchmarks/results/``
(JSON plus a Markdown table) and to stdout.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
RESULTS = HERE / "results"
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
CLI = str(VENV_BIN / "tcp-analyzer")

sys.path.insert(0, str(HERE))
import gen  # noqa: E402

# targets (issues 2 and 3)
READER_MIN_FPS = 1_500_000
MAX_RSS_MB = 1024
TSHARK_FIELDS_MIN_RATIO = 20.0
FLAT_GROWTH_MAX = 0.10  # RSS at 100% may exceed RSS at 20% by at most 10% (+ FLAT_SLACK_MB)
FLAT_SLACK_MB = 32

TSHARK_ANALYSIS_FIELDS = ["frame.number", "tcp.stream", "tcp.analysis.retransmission",
                          "tcp.analysis.fast_retransmission", "tcp.analysis.spurious_retransmission",
                          "tcp.analysis.out_of_order", "tcp.analysis.duplicate_ack",
                          "tcp.analysis.initial_rtt"]

READER_SNIPPET = (  # prints rows, then seconds of read_packets itself: warm (kernels loaded), and cold
    "import io, sys, time, analyzer\n"
    "t0 = time.perf_counter()\n"
    "analyzer.read_packets(io.BytesIO(open(sys.argv[1], 'rb').read(1 << 16)))  # loads the compiled kernels\n"
    "t1 = time.perf_counter()\n"
    "df = analyzer.read_packets(sys.argv[1])\n"
    "t2 = time.perf_counter()\n"
    "print(len(df), (t1 - t0) + (t2 - t1), t2 - t1)\n"
)

ITER_SNIPPET = r"""
import json, sys, time, analyzer
def rss():
    with open('/proc/self/status') as fh:
        for line in fh:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
samples = [(0, rss(), 0.0)]
t0 = time.perf_counter()
rows = 0
for batch in analyzer.iter_packets(sys.argv[1], batch_size=int(sys.argv[2])):
    rows += len(batch)
    samples.append((rows, rss(), time.perf_counter() - t0))
    del batch
print(json.dumps({"rows": rows, "samples": samples}))
"""


# ----------------------------------------------------------------------------------------------
# Running one command
# ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    rss_mb: float
    rc: int
    stdout: str = ""
    stderr: str = ""


GNU_TIME = "/usr/bin/time"


def run_once(argv: list[str], capture_stdout: bool = False, env=None) -> Run:
    """Runs ``argv`` (stdout to /dev/null unless captured); wall time and the command's peak RSS.

    Peak RSS comes from GNU time (``%M``) when present: a child forked straight from this Python
    process would inherit its ``ru_maxrss`` floor across exec (Linux keeps the pre-exec high-water mark).
    """
    out = subprocess.PIPE if capture_stdout else subprocess.DEVNULL
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as tfile:
        wrapped = [GNU_TIME, "-f", "%M", "-o", tfile.name, *argv] if os.access(GNU_TIME, os.X_OK) else argv
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=out, stderr=err, env=env, cwd=ROOT)
        stdout = proc.stdout.read().decode(errors="replace") if capture_stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        rss_mb = usage.ru_maxrss / 1024
        if wrapped is not argv:
            lines = [ln for ln in tfile.read().splitlines() if ln.strip()]
            if lines and lines[-1].strip().isdigit():
                rss_mb = int(lines[-1]) / 1024
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return Run(seconds, rss_mb, rc, stdout, stderr[-2000:])


@dataclass
class Result:
    name: str
    command: str
    runs: list[Run] = field(default_factory=list)
    status: str = "ok"  # ok | failed | unavailable | skipped
    note: str = ""
    warm_seconds: float | None = None  # reader: the read_packets call alone, compiled kernels loaded

    @property
    def seconds(self) -> float | None:
        return statistics.median(r.seconds for r in self.runs) if self.runs and self.status == "ok" else None

    @property
    def rss_mb(self) -> float | None:
        return statistics.median(r.rss_mb for r in self.runs) if self.runs and self.status == "ok" else None


def measure(name: str, argv: list[str], runs: int, check=None, setup=None) -> Result:
    res = Result(name, " ".join(argv))
    for k in range(runs):
        if not run_into(res, argv, k, runs, check, setup):
            break
    return res


def run_into(res: Result, argv: list[str], k: int, runs: int, check=None, setup=None) -> bool:
    """Run ``argv`` once more for ``res``; False (and ``res`` marked failed) when it fails."""
    if setup:
        setup()
    r = run_once(argv, capture_stdout=check is not None)
    res.runs.append(r)
    if r.rc != 0:
        res.status = "failed"
        res.note = f"exit {r.rc}: " + (r.stderr.strip().splitlines() or [""])[-1][:200]
        return False
    if check:
        problem = check(r)
        if problem:
            res.status = "failed"
            res.note = problem
            return False
    print(f"  {res.name:15s} run {k + 1}/{runs}: {r.seconds:8.2f} s  {r.rss_mb:8.1f} MB", flush=True)
    return True


def by_name(results: list[Result], name: str) -> Result | None:
    return next((r for r in results if r.name == name), None)


# ----------------------------------------------------------------------------------------------
# What is available
# ----------------------------------------------------------------------------------------------


def probe_reader() -> str | None:
    """None when analyzer.read_packets / iter_packets import; else the reason."""
    r = subprocess.run([PYTHON, "-c", "import analyzer; analyzer.read_packets; analyzer.iter_packets"],
                       capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        return "analyzer.read_packets/iter_packets not importable: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    return None


def probe_cli() -> tuple[str | None, str]:
    """(None, help text) when ``tcp-analyzer analyze --help`` works; else (reason, '')."""
    if not os.access(CLI, os.X_OK):
        return f"{CLI} not installed (pip install -e .)", ""
    r = subprocess.run([CLI, "analyze", "--help"], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        return "tcp-analyzer analyze --help failed: " + ((r.stderr or r.stdout).strip().splitlines() or ["?"])[-1], ""
    return None, r.stdout


def ensure_capture(frames: int, seed: int) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"bench-{frames}-s{seed}-v{gen.GEN_VERSION}.pcap"
    meta = Path(str(path) + ".meta.json")
    if path.exists() and meta.exists() and Path(str(path) + ".truth.csv").exists():
        print(f"reusing {path.relative_to(ROOT)}")
    else:
        print(f"generating {path.relative_to(ROOT)} ({frames:,} frames, seed {seed}) ...", flush=True)
        t0 = time.perf_counter()
        # a separate process, so this one stays small (children would inherit its peak RSS floor)
        subprocess.run([sys.executable, str(HERE / "gen.py"), "--frames", str(frames), "--seed", str(seed),
                        "-o", str(path), "-q"], check=True)
        print(f"  done in {time.perf_counter() - t0:.1f} s")
    return path


def precompile() -> None:
    """Byte-compile the package, as a regular install does: with an editable install and
    PYTHONDONTWRITEBYTECODE set, each run would otherwise compile its modules again (~0.05 s)."""
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(ROOT / "analyzer")], cwd=ROOT, check=False)


def warm_cache(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


# ----------------------------------------------------------------------------------------------
# The speed benchmark
# ----------------------------------------------------------------------------------------------


NEEDED = (gen.KIND_RTO, gen.KIND_FAST)  # needed retransmissions: the trigger is timeout or fast recovery


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes")


def _ratio(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def _cause_report(kind: str, truth: dict[int, dict], found: dict[int, dict], has_oc: bool) -> dict:
    """How our rows read the truth rows of one cause."""
    rows = [(fr, r) for fr, r in truth.items() if r["kind"] == kind]
    ours = [found[fr]["kind"] if fr in found else "none" for fr, _ in rows]
    right = [o == kind for o in ours]
    lost = [ok for ok, (_, r) in zip(right, rows) if r["original_captured"] == "false"]
    oc = [fr in found and _truthy(found[fr]["original_captured"]) == _truthy(r["original_captured"])
          for fr, r in rows] if has_oc else []
    return {
        "truth": len(rows), "correct": sum(right), "accuracy": _ratio(sum(right), len(rows)),
        "accuracy_original_not_captured": _ratio(sum(lost), len(lost)),
        "original_captured_agreement": _ratio(sum(oc), len(oc)) if has_oc else "n/a",
        "ours": dict(sorted(Counter(ours).items())),
    }


def accuracy(outdir: Path, path: Path) -> dict:
    """Our retransmissions.csv against the generator's truth file: for every out-of-sequence frame, is our
    ``kind`` its true cause (and our ``original_captured`` the truth's: n/a while the engine has no such
    column), per cause; the trigger among needed retransmissions; recall and precision of the flagged
    frames; and tshark's agreement per cause when ``gen.py --check`` left it beside the capture."""
    truth = gen.read_truth(str(path))
    rfile = outdir / "retransmissions.csv"
    if not rfile.exists():
        return {"error": "no retransmissions.csv"}
    with open(rfile, newline="") as fh:
        reader = csv.DictReader(fh)
        has_oc = "original_captured" in (reader.fieldnames or [])
        found = {int(row["frame"]): row for row in reader}
    per_cause = {kind: _cause_report(kind, truth, found, has_oc) for kind in gen.KINDS}
    spurious = [(fr, r) for fr, r in truth.items() if r["kind"] == gen.KIND_SPURIOUS]
    by_evidence = {}
    for shown in (True, False):
        sel = [fr for fr, r in spurious if (r["evidence"] != "none") == shown]
        by_evidence["with_evidence" if shown else "no_evidence"] = {
            "truth": len(sel), "accuracy": _ratio(sum(found.get(fr, {}).get("kind") == gen.KIND_SPURIOUS
                                                      for fr in sel), len(sel))}
    needed = [(fr, r) for fr, r in truth.items() if r["kind"] in NEEDED and found.get(fr, {}).get("kind") in NEEDED]
    tp = set(found) & set(truth)
    correct = sum(v["correct"] for v in per_cause.values())
    report = {
        "truth": len(truth), "reported": len(found), "true_positive": len(tp),
        "recall": _ratio(len(tp), len(truth)), "precision": _ratio(len(tp), len(found)),
        "overall_accuracy": _ratio(correct, len(truth)),
        "trigger_accuracy_needed": _ratio(sum(found[fr]["kind"] == r["kind"] for fr, r in needed), len(needed)),
        "original_captured": "reported" if has_oc else "n/a (no original_captured column)",
        "per_cause": per_cause, "spurious_by_evidence": by_evidence,
        "missed_sample": sorted(set(truth) - set(found))[:10],
        "extra_sample": sorted(set(found) - set(truth))[:10],
    }
    baseline = Path(str(path) + ".tshark.json")
    if baseline.exists():
        report["tshark"] = json.loads(baseline.read_text())
    return report


def print_accuracy(a: dict) -> None:
    """The accuracy report as a table, one line per cause, tshark's agreement beside ours when known."""
    if "error" in a:
        print(f"  accuracy vs truth file: {a['error']}")
        return
    ts = a.get("tshark", {}).get("per_cause", {})
    print(f"  cause accuracy vs truth file: overall {a['overall_accuracy']} over {a['truth']:,} out-of-sequence "
          f"frames; flagged recall {a['recall']}, precision {a['precision']} ({a['reported']:,} reported)")
    print(f"    {'cause':26s} {'truth':>7s} {'ours':>9s} {'orig. not capt.':>15s} {'orig_captured':>13s}"
          f" {'tshark':>7s}")
    for kind, v in a["per_cause"].items():
        cells = (v["accuracy"], v["accuracy_original_not_captured"], v["original_captured_agreement"],
                 ts.get(kind, {}).get("agreement"))
        cells = ["-" if c is None else c for c in cells]
        print(f"    {kind:26s} {v['truth']:>7,} {cells[0]:>9} {cells[1]:>15} {cells[2]:>13} {cells[3]:>7}")
    ev = a["spurious_by_evidence"]
    print(f"    trigger (timeout vs fast) among needed retransmissions: {a['trigger_accuracy_needed']}; spurious "
          f"with evidence in the file {ev['with_evidence']['accuracy']} ({ev['with_evidence']['truth']:,}), "
          f"without {ev['no_evidence']['accuracy']} ({ev['no_evidence']['truth']:,})")
    if "tshark" in a:
        print(f"    tshark overall {a['tshark'].get('agreement')} (gen.py --check)")


def speed(args) -> dict:
    path = ensure_capture(args.frames, args.seed)
    meta = json.loads(Path(str(path) + ".meta.json").read_text())
    frames = meta["frames"]
    print(f"capture: {frames:,} frames, {meta['bytes'] / 1e6:.0f} MB, {meta['flows']:,} flows "
          f"({meta['ipv6_flows']} IPv6, {meta['vlan_flows']} VLAN), {meta['retransmitted_frames']:,} retransmitted")
    warm_cache(path)
    precompile()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if "tshark" in skip:
        skip.add("tshark-fields")
    results: list[Result] = []
    outdir = Path(tempfile.mkdtemp(prefix="bench-analyze-"))
    accuracy_report = None

    def skipped(name, why):
        r = Result(name, "", status="skipped", note=why)
        results.append(r)
        print(f"  {name:15s} skipped: {why}")

    # (a) the native reader
    if "reader" in skip:
        skipped("reader", "--skip")
    elif (why := probe_reader()) is not None:
        results.append(Result("reader", "analyzer.read_packets(path)", status="unavailable", note=why))
        print(f"  reader          unavailable: {why}")
    else:
        def rows_ok(r: Run):
            got = (r.stdout.strip().splitlines() or ["?"])[-1].split()
            return None if got[0] == str(frames) else f"read_packets returned {got[0]} rows, expected {frames}"
        res = measure("reader", [PYTHON, "-c", READER_SNIPPET, str(path)], args.runs, check=rows_ok)
        res.command = "python -c 'analyzer.read_packets(path)'"
        if res.status == "ok":
            cold = statistics.median(float(r.stdout.split()[-2]) for r in res.runs)
            warm = statistics.median(float(r.stdout.split()[-1]) for r in res.runs)
            res.warm_seconds = warm
            res.note = (f"read_packets call alone: {warm:.2f} s = {frames / warm:,.0f} frames/s with the compiled "
                        f"kernels loaded; {cold:.2f} s including their first load")
            print(f"  reader          {res.note}")
        results.append(res)

    # (b) the whole CLI and (c)-(f) the reference tools, run in turns (analyze, tcpdump, ..., analyze, ...)
    # so that a slow spell of the machine falls on all of them, not on one tool's runs
    specs: list[tuple[Result, list[str], object, object]] = []  # (result, argv, check, setup)
    if "analyze" in skip:
        skipped("analyze", "--skip")
    else:
        why, _help = probe_cli()
        if why is not None:
            results.append(Result("analyze", "tcp-analyzer analyze FILE -o DIR", status="unavailable", note=why))
            print(f"  analyze         unavailable: {why}")
        else:
            def clean():
                shutil.rmtree(outdir, ignore_errors=True)

            def wrote(r: Run):
                missing = [n for n in ("connections", "handshakes", "retransmissions")
                           if not (outdir / f"{n}.csv").exists()]
                return f"no {', '.join(missing)} CSV written" if missing else None
            res = Result("analyze", "tcp-analyzer analyze FILE -o DIR")
            results.append(res)
            specs.append((res, [CLI, "analyze", str(path), "-o", str(outdir)], wrote, clean))

    tools = [
        ("tcpdump", ["tcpdump", "-nr", str(path)]),
        ("tshark", ["tshark", "-r", str(path)]),
        ("tshark-fields", ["tshark", "-n", "-r", str(path), "-T", "fields"]
         + [x for f in TSHARK_ANALYSIS_FIELDS for x in ("-e", f)]),
        ("tcptrace", ["tcptrace", "-n", "-l", str(path)]),
    ]
    for name, argv in tools:
        if name in skip:
            skipped(name, "--skip")
            continue
        if shutil.which(argv[0]) is None:
            results.append(Result(name, " ".join(argv), status="unavailable", note=f"{argv[0]} not installed"))
            print(f"  {name:15s} unavailable: {argv[0]} not installed")
            continue
        res = Result(name, " ".join(argv).replace(str(path), "FILE"))
        results.append(res)
        specs.append((res, argv, None, None))
    for k in range(args.runs):
        for res, argv, check, setup in specs:
            if res.status == "ok":
                run_into(res, argv, k, args.runs, check, setup)
    if by_name(results, "analyze") is not None and by_name(results, "analyze").status == "ok":
        accuracy_report = accuracy(outdir, path)
    shutil.rmtree(outdir, ignore_errors=True)

    by = {r.name: r for r in results}
    checks = targets(by, frames)
    report = {
        "kind": "speed", "when": dt.datetime.now().isoformat(timespec="seconds"), "host": host_info(),
        "capture": {"path": str(path.relative_to(ROOT)), **meta}, "runs": args.runs,
        "results": [result_dict(r, frames) for r in results], "targets": checks, "accuracy": accuracy_report,
    }
    print()
    print(speed_table(results, frames))
    print()
    for r in results:
        if r.status == "ok" and r.note:
            print(f"  {r.name}: {r.note}")
    for c in checks:
        print(f"  [{c['verdict']:4s}] {c['target']}: {c['measured']}")
    if accuracy_report:
        print_accuracy(accuracy_report)
    return report


def targets(by: dict[str, Result], frames: int) -> list[dict]:
    out = []

    def add(target, ok, measured):
        out.append({"target": target, "verdict": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
                    "measured": measured})
    rd, an = by.get("reader"), by.get("analyze")
    tf, tt = by.get("tshark-fields"), by.get("tcptrace")
    if rd and rd.seconds:
        warm = getattr(rd, "warm_seconds", None) or rd.seconds
        fps = frames / warm
        add(f"reader >= {READER_MIN_FPS:,} frames/s (read_packets call, kernels loaded)", fps >= READER_MIN_FPS,
            f"{fps:,.0f} frames/s; whole process {frames / rd.seconds:,.0f} frames/s")
        add(f"reader peak RSS < {MAX_RSS_MB} MB", rd.rss_mb < MAX_RSS_MB, f"{rd.rss_mb:.0f} MB")
    else:
        add(f"reader >= {READER_MIN_FPS:,} frames/s", None, rd.note if rd else "not run")
    if an and an.seconds:
        add(f"analyze peak RSS < {MAX_RSS_MB} MB", an.rss_mb < MAX_RSS_MB, f"{an.rss_mb:.0f} MB")
        if tt and tt.seconds:
            add("analyze wall time < tcptrace -n -l", an.seconds < tt.seconds,
                f"{an.seconds:.2f} s vs {tt.seconds:.2f} s")
        else:
            add("analyze wall time < tcptrace -n -l", None, "tcptrace not run")
        if tf and tf.seconds:
            ratio = tf.seconds / an.seconds
            add(f"analyze >= {TSHARK_FIELDS_MIN_RATIO:.0f}x faster than tshark fields",
                ratio >= TSHARK_FIELDS_MIN_RATIO, f"{ratio:.1f}x")
        else:
            add(f"analyze >= {TSHARK_FIELDS_MIN_RATIO:.0f}x faster than tshark fields", None, "tshark not run")
    else:
        add("analyze (CLI) targets", None, an.note if an else "not run")
    return out


def result_dict(r: Result, frames: int) -> dict:
    d = {"name": r.name, "command": r.command, "status": r.status, "note": r.note,
         "runs": [{"seconds": round(x.seconds, 4), "rss_mb": round(x.rss_mb, 1)} for x in r.runs]}
    if r.seconds:
        d.update(seconds=round(r.seconds, 4), rss_mb=round(r.rss_mb, 1), frames_per_s=round(frames / r.seconds))
    return d


def speed_table(results: list[Result], frames: int) -> str:
    base = {n: next((r.seconds for r in results if r.name == n and r.seconds), None) for n in ("reader", "analyze")}
    lines = ["| tool | seconds (median) | frames/s | peak RSS MB | x reader | x analyze | command |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r.seconds is None:
            lines.append(f"| {r.name} | {r.status} | | | | | {r.note or r.command} |")
            continue
        rel = [f"{r.seconds / base[n]:.2f}" if base[n] else "" for n in ("reader", "analyze")]
        lines.append(f"| {r.name} | {r.seconds:.2f} | {frames / r.seconds:,.0f} | {r.rss_mb:.0f} | "
                     f"{rel[0]} | {rel[1]} | `{r.command}` |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The memory benchmark: a 5x larger file in batches
# ----------------------------------------------------------------------------------------------


def at_fraction(samples: list[tuple[float, float]], total: float, frac: float) -> float | None:
    """RSS (MB) of the first sample at or beyond ``frac`` of the work."""
    for done, mb in samples:
        if done >= frac * total:
            return mb
    return samples[-1][1] if samples else None


def flat_verdict(r20, r50, r100) -> tuple[bool | None, str]:
    if r20 is None or r100 is None:
        return None, "no samples"
    limit = r20 * (1 + FLAT_GROWTH_MAX) + FLAT_SLACK_MB
    return r100 <= limit and (r50 or 0) <= limit, f"limit {limit:.0f} MB (20% value +{FLAT_GROWTH_MAX:.0%} +{FLAT_SLACK_MB} MB)"


def _proc_rss_mb(pid: int) -> float | None:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def _read_position(pid: int, path: Path) -> float | None:
    """Offset of ``pid``'s open file descriptor on ``path`` (how far it has read), or None."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                    return int(fh.readline().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return None


def sample_external(argv: list[str], path: Path, interval: float = 0.1) -> tuple[Run, list[tuple[float, float]]]:
    """Runs ``argv`` under GNU time; samples its VmRSS against how far it has read ``path``.

    Progress is the file offset of the command's descriptor on ``path`` (/proc/PID/fdinfo), so RSS
    can be reported at 20%, 50% and 100% of the file without help from the command itself.
    """
    size = path.stat().st_size
    samples: list[tuple[float, float]] = []
    use_time = os.access(GNU_TIME, os.X_OK)
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as tfile:
        wrapped = [GNU_TIME, "-f", "%M", "-o", tfile.name, *argv] if use_time else argv
        t0 = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        stop = threading.Event()

        def poll():
            pid = None if use_time else proc.pid
            while not stop.is_set():
                try:
                    if pid is None:  # the command is GNU time's only child
                        kids = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
                        pid = int(kids[0]) if kids else None
                    if pid is not None:
                        pos, rss = _read_position(pid, path), _proc_rss_mb(pid)
                        if pos is not None and rss is not None:
                            samples.append((pos / size, rss))
                except (OSError, ValueError):
                    pass
                stop.wait(interval)
        th = threading.Thread(target=poll, daemon=True)
        th.start()
        _, status, usage = os.wait4(proc.pid, 0)
        stop.set()
        th.join()
        seconds = time.perf_counter() - t0
        rss_mb = usage.ru_maxrss / 1024
        lines = [ln for ln in tfile.read().splitlines() if ln.strip()] if use_time else []
        if lines and lines[-1].strip().isdigit():
            rss_mb = int(lines[-1]) / 1024
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return Run(seconds, rss_mb, os.waitstatus_to_exitcode(status), "", stderr[-2000:]), samples


def memory(args) -> dict:
    frames = args.frames * 5 if args.memory_frames is None else args.memory_frames
    path = ensure_capture(frames, args.seed)
    meta = json.loads(Path(str(path) + ".meta.json").read_text())
    frames = meta["frames"]
    print(f"memory: {frames:,} frames, {meta['bytes'] / 1e9:.2f} GB, batch size {args.batch_size:,}")
    warm_cache(path)
    out: dict = {"kind": "memory", "when": dt.datetime.now().isoformat(timespec="seconds"), "host": host_info(),
                 "capture": {"path": str(path.relative_to(ROOT)), **meta}, "batch_size": args.batch_size, "modes": []}

    def record(name, status, note="", samples=None, total=1.0, run: Run | None = None):
        entry = {"name": name, "status": status, "note": note}
        if samples:
            r20, r50, r100 = (at_fraction(samples, total, f) for f in (0.2, 0.5, 1.0))
            ok, rule = flat_verdict(r20, r50, r100)
            entry.update(rss_mb_at={"20%": r20, "50%": r50, "100%": r100}, flat=ok, rule=rule,
                         samples=len(samples),
                         rss_mb_by_tenth=[round(at_fraction(samples, total, q / 10), 1) for q in range(1, 11)])
            print(f"  {name:22s} RSS at 20% {r20:7.0f} MB, 50% {r50:7.0f} MB, 100% {r100:7.0f} MB"
                  f" -> {'flat' if ok else 'GROWS'} ({rule})")
        if run:
            entry.update(seconds=round(run.seconds, 2), peak_rss_mb=round(run.rss_mb, 1),
                         frames_per_s=round(frames / run.seconds))
            print(f"  {name:22s} {run.seconds:.1f} s, {frames / run.seconds:,.0f} frames/s, peak RSS {run.rss_mb:.0f} MB")
        if status != "ok":
            print(f"  {name:22s} {status}: {note}")
        out["modes"].append(entry)

    # iter_packets, RSS sampled in process after each batch
    if (why := probe_reader()) is not None:
        record("iter_packets", "unavailable", why)
    else:
        run = run_once([PYTHON, "-c", ITER_SNIPPET, str(path), str(args.batch_size)], capture_stdout=True)
        if run.rc:
            record("iter_packets", "failed", (run.stderr.strip().splitlines() or ["?"])[-1])
        else:
            data = json.loads(run.stdout.strip().splitlines()[-1])
            samples = [(rows, mb) for rows, mb, _t in data["samples"]]
            note = "" if data["rows"] == frames else f"{data['rows']} rows for {frames} frames"
            record("iter_packets", "ok", note, samples, frames, run)

    # the analyze CLI, RSS sampled from outside against how far it has read the file
    why, help_text = probe_cli()
    if why is not None:
        record("analyze CLI", "unavailable", why)
    else:
        outdir = Path(tempfile.mkdtemp(prefix="bench-mem-"))
        argv = [CLI, "analyze", str(path), "-o", str(outdir)]
        if "--batch-size" in help_text:
            argv += ["--batch-size", str(args.batch_size)]
        run, samples = sample_external(argv, path)
        acc = accuracy(outdir, path) if run.rc == 0 else None
        shutil.rmtree(outdir, ignore_errors=True)
        if run.rc:
            record("analyze CLI", "failed", (run.stderr.strip().splitlines() or ["?"])[-1], samples, 1.0, run)
        else:
            note = " ".join(argv[1:]).replace(str(path), "FILE").replace(str(outdir), "DIR")
            record("analyze CLI", "ok", note, samples, 1.0, run)
            out["modes"][-1]["accuracy"] = acc
            print_accuracy(acc)
    return out


# ----------------------------------------------------------------------------------------------


def host_info() -> dict:
    versions = {}
    for tool, flag in (("tshark", "--version"), ("tcpdump", "--version"), ("tcptrace", "-v")):
        if shutil.which(tool):
            r = subprocess.run([tool, flag], capture_output=True, text=True)
            versions[tool] = ((r.stdout or r.stderr).strip().splitlines() or [""])[0][:80]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "loadavg": load, "tools": versions}


def save(report: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    p = RESULTS / f"{report['kind']}-{stamp}.json"
    p.write_text(json.dumps(report, indent=2))
    (RESULTS / f"{report['kind']}-latest.json").write_text(json.dumps(report, indent=2))
    if report["kind"] == "speed":
        res = [Result(d["name"], d["command"], status=d["status"], note=d["note"]) for d in report["results"]]
        for r, d in zip(res, report["results"]):
            r.runs = [Run(x["seconds"], x["rss_mb"], 0) for x in d["runs"]]
        (RESULTS / "speed-latest.md").write_text(speed_table(res, report["capture"]["frames"]) + "\n")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--frames", type=int, default=1_000_000, help="frames in the speed capture (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="runs per tool; the median is reported (default 3)")
    ap.add_argument("--skip", default="", help="comma list of: reader, analyze, tcpdump, tshark, "
                    "tshark-fields, tcptrace ('tshark' skips both tshark runs)")
    ap.add_argument("--memory", action="store_true", help="also run the batched memory benchmark")
    ap.add_argument("--memory-only", action="store_true", help="run only the memory benchmark")
    ap.add_argument("--memory-frames", type=int, default=None, help="frames in the memory capture (default 5x --frames)")
    ap.add_argument("--batch-size", type=int, default=262_144, help="frames per batch in memory mode")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    failed = False
    if not args.memory_only:
        rep = speed(args)
        print(f"\nwrote {save(rep).relative_to(ROOT)}")
        failed |= any(c["verdict"] == "FAIL" for c in rep["targets"])
    if args.memory or args.memory_only:
        print()
        rep = memory(args)
        print(f"\nwrote {save(rep).relative_to(ROOT)}")
        failed |= any(m.get("flat") is False for m in rep["modes"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
