"""`analyze --jobs N` and `--scheduler`: a capture's connections over processes or a Dask cluster, every
table byte-identical to one process's (the events table, the packet table's stream and direction, the
stats); --merge and - with --jobs; several captures at once; one Parquet dataset for several
captures; a damaged capture or a dying worker said in one line."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import analyzer
from analyzer import schema
from analyzer.commands.cli import main
from analyzer.decode import ConnectionGroup, PacketReader, rows_by_group, to_frame
from analyzer.errors import CaptureError
from analyzer.report import FORMATS
from analyzer.report.merge import (GroupSides, MergeError, first_frames, merge, merge_counts, packet_streams,
                                   renumber, stream_maps)
from analyzer.table import Masked, Table

from .test_benchmark_generator import _load_gen

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "captures" / "real"
# real captures with many connections, pcapng, IPv6 fragments, VLANs, duplicates, resends, a cut header
REAL_CAPTURES = ["ndpi_synscan.pcap", "zeek_206_example_b.pcap", "cs_http_espn.pcapng", "ndpi_dnp3.pcap",
                 "zeek_ipv6-http-atomic-frag.pcap", "ndpi_mongodb.pcap", "cs_tcp_retransmissions.pcapng",
                 "zeek_truncated-header.pcap"]
DEADLINE_S = 60  # for the test cluster to come up; each Dask test also has a pytest timeout
TABLES = ("connections", "handshakes", "retransmissions", "events")




@pytest.fixture(scope="module")
def reused(tmp_path_factory) -> Path:
    """A generated capture (30,000 frames, about 200 connections) whose IPv4 connections share 8 4-tuples:
    each is reused many times, one after another and overlapping."""
    gen = _load_gen()
    built = gen.build(30_000, seed=5)
    f = built.f
    v4 = np.flatnonzero(~f.v6)
    first = v4[np.arange(len(v4)) % 8]
    for name in ("cli_ip", "srv_ip", "cport", "sport"):
        getattr(f, name)[v4] = getattr(f, name)[first]
    path = tmp_path_factory.mktemp("gen") / "reused.pcap"
    gen.write_pcap(str(path), built.p, f, built.cap)
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main(["analyze", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- byte-identical tables --------------------------------------------------------------------------
def test_reused_ports_stay_in_one_group(reused):
    """Each connection group decodes exactly the segments whose 4-tuple hashes to it: the groups share no
    frame, together hold every one, and both directions of every 4-tuple (all its reuses) are in one."""
    everything = PacketReader(reused).read_all()
    groups = [PacketReader(reused, group=ConnectionGroup(k, 3)).read_all() for k in range(3)]
    frames = np.concatenate([g["frame"].to_numpy() for g in groups])
    assert sorted(frames.tolist()) == everything["frame"].tolist()
    owner = {}
    for k, g in enumerate(groups):
        assert 0 < len(g) < len(everything)
        for s, sp, d, dp in zip(g["src"].astype(str), g["sport"], g["dst"].astype(str), g["dport"]):
            assert owner.setdefault(frozenset([(s, sp), (d, dp)]), k) == k
    assert analyzer.analyze(reused).connections["reused_ports"].sum() > 20  # really reused
    stores = list(PacketReader(reused).stores())
    kernel = [PacketReader(reused, group=ConnectionGroup(k, 3)).read_all()["frame"].to_numpy() for k in range(3)]
    split = [rows_by_group(s, 3) for s in stores]
    for k in range(3):  # a worker's rows of a whole batch are those the kernel's group check keeps
        taken = np.concatenate([s.column("frame")[rows[k]] for s, rows in zip(stores, split)])
        assert np.array_equal(taken, kernel[k])


@pytest.mark.parametrize("fmt", FORMATS)
def test_jobs_give_the_tables_of_one_process(reused, tmp_path, capsys, fmt):
    """A generated capture with many connections and reused 4-tuples: --jobs 2 and 3 write the same bytes
    as --jobs 1 (the packet table too), and print the same summary (--json too)."""
    runs = {}
    for jobs in (1, 2, 3):
        out = tmp_path / str(jobs)
        code, printed, err = _run(capsys, reused, "-o", out, "--format", fmt, "--packets", "--jobs", jobs)
        assert code == 0 and err == ""
        code, as_json, _ = _run(capsys, reused, "-o", tmp_path / "j", "--format", fmt, "--json", "--jobs", jobs)
        assert code == 0
        runs[jobs] = (_files(out), printed.replace(str(out), "OUT"), as_json.replace(str(tmp_path / "j"), "J"))
    assert set(runs[1][0]) == {f"{t}.{'jsonl' if fmt == 'json' else fmt}" for t in (*TABLES, "packets")}
    summary = json.loads(runs[1][2])[0]
    assert summary["connections"] > 150 and sum(summary["events"].values()) > 100
    assert summary["capture_loss"]["bytes"] > 0
    assert runs[2] == runs[1] and runs[3] == runs[1]


def test_jobs_events_packet_streams_and_stats(reused):
    """The API: the events table (its Wireshark filters name the renumbered streams), the packet table's
    stream and direction columns, and every stat (events, capture_loss, late_packets, key order too) equal
    one process's; the streams of the packet table are those of the connections table."""
    one = analyzer.analyze(reused, packets=True)
    assert len(one.events) > 100 and one.events["wireshark_filter"].str.contains("tcp.stream eq").any()
    assert one.packets["stream"].nunique() == len(one.connections)
    for jobs in (2, 3):
        split = analyzer.analyze(reused, packets=True, jobs=jobs)
        for name in (*TABLES, "packets"):
            assert getattr(split, name).equals(getattr(one, name)), name
        assert split.stats == one.stats
        assert json.dumps(split.stats, default=str) == json.dumps(one.stats, default=str)  # the same key order
        assert json.dumps(split.summary()) == json.dumps(one.summary())


def test_late_packets_are_summed(tmp_path):
    """A straggler after the close delay (late_packets), counted in its group, adds up to one process's
    count; the tables are one process's, whatever the number of groups."""
    from tests.test_engine_expiry import _late_fin_capture

    path = _late_fin_capture(gap=8.0).write(tmp_path / "late.pcap")
    one = analyzer.analyze(path, packets=True)
    assert one.stats["late_packets"] == 2
    for jobs in (2, 3, 5):
        split = analyzer.analyze(path, packets=True, jobs=jobs)
        assert split.stats == one.stats
        for name in (*TABLES, "packets"):
            assert getattr(split, name).equals(getattr(one, name)), name


def test_merged_counts_are_the_engines():
    """Label counts come back in the engine's order (most frequent first, ties by label), numbers are
    summed, the capture loss percent is recomputed from the summed bytes."""
    a = {"packets": 10, "handshakes": {"established": 3, "midstream": 1}, "events": {"window_update": 2},
         "capture_loss": {"lost_segments": 1, "missed_bytes": 10, "bytes": 100, "percent": 10.0},
         "late_packets": 1}
    b = {"packets": 5, "handshakes": {"midstream": 4}, "events": {"duplicate_ack": 2, "zero_window": 1},
         "capture_loss": {"lost_segments": 0, "missed_bytes": 0, "bytes": 900, "percent": 0.0},
         "late_packets": 2}
    got = merge_counts([a, b])
    assert got["packets"] == 15 and got["late_packets"] == 3
    assert list(got["handshakes"].items()) == [("midstream", 5), ("established", 3)]
    assert list(got["events"].items()) == [("duplicate_ack", 2), ("window_update", 2), ("zero_window", 1)]
    assert got["capture_loss"] == {"lost_segments": 1, "missed_bytes": 10, "bytes": 1000, "percent": 1.0}


def test_packet_streams_put_each_groups_rows_in_place():
    groups = [GroupSides(np.array([0, 1, 0]), np.array([0, 0, 1], dtype=np.int8), np.array([0, 1])),
              GroupSides(np.array([0]), np.array([1], dtype=np.int8), np.array([1]))]
    stream, direction = packet_streams(4, [[np.array([0, 2]), np.array([3])], np.array([1])], groups,
                                       [np.array([0, 2]), np.array([1])])
    assert stream.tolist() == [0, 1, 2, 0]
    assert direction.tolist() == ["client->server", "client->server", "server->client", "server->client"]
    with pytest.raises(MergeError):
        packet_streams(4, [[np.array([0])], np.array([1])], groups, [np.array([0, 2]), np.array([1])])


# -- a merged trace, a pipe ---------------------------------------------------------------------------
def test_merge_with_jobs_gives_the_tables_of_one_process(reused, tmp_path, capsys):
    """--merge of several parts with --jobs 2: the same bytes (capture columns too) as --jobs 1."""
    data = reused.read_bytes()
    header, records = data[:24], data[24:]
    # cut the capture at record boundaries into three parts (little-endian pcap: length at offset 8)
    cuts, pos, k = [], 0, 0
    while pos < len(records):
        if k % 10_000 == 0:
            cuts.append(pos)
        pos += 16 + int.from_bytes(records[pos + 8:pos + 12], "little")
        k += 1
    parts = []
    for i, (a, b) in enumerate(zip(cuts, [*cuts[1:], len(records)])):
        part = tmp_path / f"part{i}.pcap"
        part.write_bytes(header + records[a:b])
        parts.append(part)
    assert len(parts) == 3
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"m{jobs}"
        code, printed, err = _run(capsys, "--merge", *parts, "-o", out, "--packets", "--jobs", jobs)
        assert code == 0 and err == ""
        code, as_json, _ = _run(capsys, "--merge", *parts, "-o", tmp_path / "j", "--json", "--jobs", jobs)
        runs[jobs] = (_files(out), printed.replace(str(out), "OUT"), as_json.replace(str(tmp_path / "j"), "J"))
    assert "capture_frame" in runs[1][0]["events.csv"].split(b"\n")[0].decode()
    assert runs[2] == runs[1]


def test_stdin_with_jobs_gives_the_tables_of_the_file(reused, tmp_path):
    """``analyze - --jobs 2`` on a pipe: the tables of ``analyze FILE``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for args, out in (([str(reused)], "file"), (["-", "--jobs", "2"], "pipe")):
        with open(reused, "rb") as stdin:
            res = subprocess.run([sys.executable, "-m", "analyzer", "analyze", *args, "-o", str(tmp_path / out), "-q",
                                  "--packets"], stdin=stdin, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
    assert _files(tmp_path / "pipe") == _files(tmp_path / "file")


def test_merge_or_stdin_with_a_scheduler_is_a_usage_error(reused, tmp_path, capsys):
    """A cluster's workers read files: --merge and - with --scheduler are one line, exit 2 (no connection
    is tried)."""
    for args in (["--merge", reused, reused], ["-"]):
        code, out, err = _run(capsys, *args, "-o", tmp_path, "--scheduler", "tcp://127.0.0.1:1")
        assert code == 2 and out == ""
        assert "--merge and - (standard input) are read by this process: not with --scheduler" in err


@pytest.mark.parametrize("name", REAL_CAPTURES)
def test_real_captures_split_give_the_same_tables(tmp_path, name):
    """Real captures: the report of 2 and of 3 processes, written in every format, is byte for byte the
    report of one (and so are the reading stats and the summary)."""
    path = REAL / name
    if not path.exists():
        pytest.skip(f"{REAL} is missing (the shared real captures): {name} not checked")
    reports = {jobs: analyzer.analyze(path, packets=True, jobs=jobs) for jobs in (1, 2, 3)}
    written = {}
    for jobs, report in reports.items():
        for fmt in FORMATS:
            report.write(tmp_path / f"{jobs}-{fmt}", format=fmt)
        written[jobs] = {fmt: _files(tmp_path / f"{jobs}-{fmt}") for fmt in FORMATS}
    for jobs in (2, 3):
        assert written[jobs] == written[1]
        assert reports[jobs].stats == reports[1].stats
        assert reports[jobs].summary() == reports[1].summary()


def test_packet_categories_do_not_depend_on_how_far_the_reader_ran(reused):
    """A batch's packet table names the addresses known once that batch was decoded, even when later
    batches were decoded before it was made (the reader thread runs ahead): runs give the same bytes."""
    reader = PacketReader(reused, batch_size=2_000)
    stores = list(reader.stores())  # every batch decoded before any table is made
    first = to_frame(stores[0])
    alone = to_frame(next(iter(PacketReader(reused, batch_size=2_000).stores())))
    assert len(reader.addresses) > len(alone["src"].cat.categories)
    assert first["src"].cat.categories.tolist() == alone["src"].cat.categories.tolist()


# -- several captures -------------------------------------------------------------------------------
def test_several_captures_at_once_give_what_one_after_another_gives(reused, tmp_path, capsys):
    """Three captures (one not a capture at all) with --jobs 2: the same folders, the same printed
    summaries in the same order, the same one-line error and exit status as --jobs 1."""
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all, just text\n")
    demo = ROOT / "captures" / "demo.pcap"
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        code, printed, err = _run(capsys, reused, bad, demo, "-o", out, "--jobs", jobs)
        code_j, as_json, _ = _run(capsys, reused, bad, demo, "-o", tmp_path / "j", "--jobs", jobs, "--json")
        runs[jobs] = (code, code_j, _files(out), printed.replace(str(out), "OUT"), err,
                      as_json.replace(str(tmp_path / "j"), "J"))
    assert runs[1][0] == runs[1][1] == 1
    assert runs[1][4] == f"tcp-analyzer: {bad} at offset 0: not a pcap or pcapng file (magic 6e6f7420)\n"
    assert sorted({f.split("/")[0] for f in runs[1][2]}) == ["demo.pcap", "reused.pcap"]
    assert [s["capture"] for s in json.loads(runs[1][5])] == [str(reused), str(bad), str(demo)]
    assert runs[2] == runs[1]


def test_several_captures_in_parquet_are_one_partitioned_dataset(reused, tmp_path, capsys):
    """Several captures in Parquet: one dataset per table, partitioned by capture, read back whole by
    pyarrow.dataset with a ``capture`` column; the same bytes with --jobs 2; an earlier run's partitions
    are replaced."""
    import pyarrow.dataset as ds

    demo = ROOT / "captures" / "demo.pcap"
    out = tmp_path / "out"
    (out / "connections" / "capture=old.pcap").mkdir(parents=True)
    (out / "connections" / "capture=old.pcap" / "part-0.parquet").write_bytes(b"stale")
    assert _run(capsys, reused, demo, "-o", out, "--format", "parquet", "--jobs", 2)[0] == 0
    alone = {p.name: analyzer.analyze(p) for p in (reused, demo)}
    for table in TABLES:
        data = ds.dataset(out / table, format="parquet", partitioning="hive").to_table().to_pandas()
        assert sorted(data["capture"].astype(str).unique()) == ["demo.pcap", "reused.pcap"]
        for name, report in alone.items():
            assert (data["capture"] == name).sum() == len(getattr(report, table))
    assert not (out / "connections" / "capture=old.pcap").exists()
    assert _run(capsys, reused, demo, "-o", tmp_path / "one", "--format", "parquet")[0] == 0
    assert _files(tmp_path / "one") == _files(out)


# -- bad input and failures -------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["cut", "not a capture", "missing"])
def test_a_damaged_capture_says_the_same_line_with_jobs(reused, tmp_path, capsys, damage):
    """A capture cut inside a record, a file that is not a capture, a missing one: with --jobs 2 the same
    one line, the same exit status and the same tables (what could be read) as with --jobs 1."""
    path = tmp_path / "x.pcap"
    if damage == "cut":
        data = reused.read_bytes()
        path.write_bytes(data[:len(data) // 2 + 7])
    elif damage == "not a capture":
        path.write_bytes(b"\x00" * 100)
    runs = [(*_run(capsys, path, "-o", tmp_path / str(jobs), "-q", "--jobs", jobs),
             _files(tmp_path / str(jobs)) if (tmp_path / str(jobs)).exists() else {}) for jobs in (1, 2)]
    code, out, err, files = runs[0]
    assert code == 1 and out == "" and err.count("\n") == 1 and err.startswith(f"tcp-analyzer: {path}")
    assert (len(files) == len(TABLES)) == (damage == "cut")
    assert runs[1] == runs[0]


def _killed(conn, *_):
    os.kill(os.getpid(), signal.SIGKILL)


def _failed(conn, *_):
    raise RuntimeError("boom")


@pytest.mark.parametrize("how,said", [(_killed, "was killed by signal SIGKILL"),
                                      (_failed, "failed: RuntimeError: boom")])
def test_a_worker_that_dies_or_fails_is_one_line(reused, tmp_path, capsys, monkeypatch, how, said):
    """A worker killed (as by the out-of-memory killer) or failing: one line naming the capture and the
    worker, exit 1, no traceback, no tables, no process left behind."""
    monkeypatch.setattr("analyzer.report.parallel._group_engine", how)
    code, out, err = _run(capsys, reused, "-o", tmp_path / "out", "-q", "--jobs", 2)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"tcp-analyzer: {reused}: worker ") and said in err
    assert not list((tmp_path / "out").iterdir())
    import multiprocessing

    assert not multiprocessing.active_children()


def test_a_dying_worker_fails_only_its_capture(reused, tmp_path, capsys, monkeypatch):
    """Several captures at once: the one whose process is killed gets one line; the others are written."""
    import analyzer.commands.cli as cli

    real = cli._analyze_into

    def die_on_demo(path, *args, **kw):
        if Path(path).name == "demo.pcap":
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, *args, **kw)

    monkeypatch.setattr(cli, "_analyze_into", die_on_demo)
    code, _, err = _run(capsys, reused, ROOT / "captures" / "demo.pcap", "-o", tmp_path, "-q", "--jobs", 2)
    demo = ROOT / "captures" / "demo.pcap"
    assert code == 1 and err == f"tcp-analyzer: {demo}: worker was killed by signal SIGKILL\n"
    assert (tmp_path / "reused.pcap" / "connections.csv").exists()


def test_capture_errors_cross_processes_whole():
    exc = pickle.loads(pickle.dumps(CaptureError("x.pcap", 24, "truncated record")))
    assert (str(exc), exc.path, exc.offset, exc.problem) == ("x.pcap at offset 24: truncated record", "x.pcap", 24,
                                                             "truncated record")


# -- the merge, for any table with stream / frame columns -----------------------------------------
def _table(**columns) -> Table:
    def kind(v):
        v = v.values if isinstance(v, Masked) else np.asarray(v)
        return "str" if v.dtype == object else str(v.dtype)
    return Table(tuple(schema.Column(n, kind(v), n) for n, v in columns.items()),
                 {n: (v if isinstance(v, Masked) else np.asarray(v)) for n, v in columns.items()})


def _text(values):
    return np.asarray(values, dtype=object)


def test_merge_renumbers_streams_and_keeps_each_tables_order():
    """Two groups' tables, one of them made up (a future events table): stream ids become the rank of the
    first frame, in stream columns and in Wireshark filters (the row's own, and any other; the
    wireshark_filter column made again from the new ids), rows go in
    frame order where there is a frame column, else in stream order; nullable columns keep their gaps."""
    a = {"conns": _table(stream=[0, 1], first_frame=[1, 7]),
         "events": _table(frame=[2, 9], stream=[0, 1],
                          note=_text(["tcp.stream eq 0 && frame.number == 2",
                                      "after tcp.stream eq 0, tcp.stream eq 1"]),
                          gap=Masked(np.array([5, 0]), np.array([False, True])),
                          wireshark_filter=_text(["tcp.stream eq 0 && frame.number == 2",
                                                  "tcp.stream eq 1 && frame.number == 9"]))}
    b = {"conns": _table(stream=[0], first_frame=[3]),
         "events": _table(frame=[4], stream=[0], note=_text([None]), gap=Masked(np.array([6]), np.array([False])),
                          wireshark_filter=_text(["tcp.stream eq 0 && frame.number == 4"]))}
    maps = stream_maps([first_frames(a), first_frames(b)])
    assert [m.tolist() for m in maps] == [[0, 2], [1]]
    merged = merge([renumber(a, maps[0]), renumber(b, maps[1])])
    assert merged["conns"].values("stream").tolist() == [0, 1, 2]  # no frame column: in stream order
    assert merged["conns"].values("first_frame").tolist() == [1, 3, 7]
    ev = merged["events"]
    assert ev.values("frame").tolist() == [2, 4, 9] and ev.values("stream").tolist() == [0, 1, 2]
    assert ev.values("note").tolist() == ["tcp.stream eq 0 && frame.number == 2", None,
                                          "after tcp.stream eq 0, tcp.stream eq 2"]
    assert ev.values("wireshark_filter").tolist() == ["tcp.stream eq 0 && frame.number == 2",
                                                      "tcp.stream eq 1 && frame.number == 4",
                                                      "tcp.stream eq 2 && frame.number == 9"]
    assert ev.data["gap"].missing.tolist() == [False, False, True]


def test_merge_refuses_rows_out_of_their_order():
    a = {"conns": _table(stream=[0], first_frame=[1]), "events": _table(frame=[5, 2], stream=[0, 0])}
    b = {"conns": _table(stream=[0], first_frame=[3]), "events": _table(frame=[3], stream=[0])}
    with pytest.raises(MergeError, match="events table is not in frame order"):
        merge([a, b])


# -- a real Dask cluster on localhost ---------------------------------------------------------------
def _start(args: list[str], folder: Path, log: str) -> subprocess.Popen:
    with open(folder / log, "wb") as out:
        return subprocess.Popen([str(Path(sys.executable).with_name("dask")), *args], cwd=folder, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)), start_new_session=True)


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop the processes, the last started first (workers before their scheduler): asked, then killed."""
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A `dask scheduler` and two `dask worker` processes (one thread each) on 127.0.0.1, ephemeral ports,
    files in a private temporary folder, from this venv; stopped at the end whatever happens. The
    scheduler ends itself after 5 idle minutes and the workers without it, should this process die."""
    pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install -e '.[dev]')")
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    info = folder / "scheduler.json"
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--dashboard-address",
                     "127.0.0.1:0", "--scheduler-file", str(info), "--idle-timeout", "300"], folder, "scheduler.log")]
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (info.exists() and info.stat().st_size):
            assert procs[0].poll() is None, (folder / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start in time"
            time.sleep(0.1)
        procs += [_start(["worker", "--scheduler-file", str(info), "--nthreads", "1", "--no-nanny", "--host",
                          "127.0.0.1", "--no-dashboard", "--local-directory", str(folder / f"w{k}"),
                          "--death-timeout", "60"], folder, f"worker{k}.log") for k in range(2)]
        address = json.loads(info.read_text())["address"]
        with Client(address, timeout=DEADLINE_S, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=DEADLINE_S)
        yield address
    finally:
        _stop(procs)


@pytest.mark.timeout(240)
def test_dask_cluster_gives_the_tables_of_one_process(cluster, reused, tmp_path, capsys):
    """--scheduler on a real local cluster: the connection groups' tasks read the capture themselves; the
    tables (the packet table too, in every format) and the summary are those of one process; several
    captures make the same partitioned dataset as here; a missing capture is the same one line."""
    for fmt in FORMATS:
        one = _run(capsys, reused, "-o", tmp_path / f"one-{fmt}", "--format", fmt, "--packets")
        dask = _run(capsys, reused, "-o", tmp_path / f"dask-{fmt}", "--format", fmt, "--packets",
                    "--scheduler", cluster)
        assert dask[0] == one[0] == 0
        assert dask[1].replace("dask-", "one-") == one[1]
        assert _files(tmp_path / f"dask-{fmt}") == _files(tmp_path / f"one-{fmt}")
    demo = ROOT / "captures" / "demo.pcap"
    for where, extra in (("many-one", []), ("many-dask", ["--scheduler", cluster])):
        assert _run(capsys, reused, demo, "-o", tmp_path / where, "--format", "parquet", *extra)[0] == 0
    assert _files(tmp_path / "many-dask") == _files(tmp_path / "many-one")
    missing = tmp_path / "missing.pcap"
    assert _run(capsys, missing, "-o", tmp_path / "m", "--scheduler", cluster)[:3] == \
        (1, "", f"tcp-analyzer: {missing}: cannot open: No such file or directory\n")


@pytest.mark.timeout(60)
def test_an_unreachable_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    """Nothing listens there: one line after the connect deadline (shortened here), exit 1."""
    import socket

    from analyzer.report import cluster as dask_cluster

    monkeypatch.setattr(dask_cluster, "CONNECT_TIMEOUT_S", 2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing will listen: the socket is not listening
        code, out, err = _run(capsys, ROOT / "captures" / "demo.pcap", "-o", tmp_path, "--scheduler",
                              f"tcp://127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert err.startswith(f"tcp-analyzer: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}: ")
    assert err.count("\n") == 1
