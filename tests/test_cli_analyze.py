"""`tcp-analyzer analyze` in process: every option and format, files read back equal the API's tables."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

import analyzer
from analyzer import schema
from analyzer.commands.cli import main
from analyzer.report import read_table
from analyzer.report.writers import table_columns

C, S = "10.1.0.1", "10.1.0.2"


def _capture(path):
    """A handshake, one data segment resent 300 ms later, and a refused second connection."""
    def pkt(src, dst, sport, dport, t, **kw):
        p = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, **kw)
        p.time = t
        return p
    frames = [
        pkt(C, S, 5555, 80, 1.000, flags="S", seq=100),
        pkt(S, C, 80, 5555, 1.010, flags="SA", seq=900, ack=101),
        pkt(C, S, 5555, 80, 1.012, flags="A", seq=101, ack=901),
        pkt(C, S, 5555, 80, 1.020, flags="PA", seq=101, ack=901) / (b"a" * 100),
        pkt(C, S, 5555, 80, 1.320, flags="PA", seq=101, ack=901) / (b"a" * 100),
        pkt(S, C, 80, 5555, 1.330, flags="A", seq=901, ack=201),
        pkt(C, S, 5556, 81, 2.000, flags="S", seq=7),
        pkt(S, C, 81, 5556, 2.001, flags="RA", seq=0, ack=8),
    ]
    wrpcap(str(path), frames)
    return path


@pytest.fixture(scope="module")
def cap(tmp_path_factory):
    return _capture(tmp_path_factory.mktemp("cli") / "two.pcap")


@pytest.mark.parametrize("fmt,suffix", [("csv", "csv"), ("parquet", "parquet"), ("json", "jsonl")])
def test_written_tables_equal_the_api(cap, tmp_path, fmt, suffix, capsys):
    assert main(["analyze", str(cap), "-o", str(tmp_path), "--format", fmt, "--packets"]) == 0
    report = analyzer.analyze(cap, packets=True)
    for name in ("connections", "handshakes", "retransmissions", "events", "packets"):
        got = read_table(tmp_path / f"{name}.{suffix}", name)
        want = schema.conform(getattr(report, name), table_columns(name))
        assert list(got.columns) == [c.name for c in table_columns(name)]
        pd.testing.assert_frame_equal(got.astype({c: str for c in ("src", "dst") if c in got and name == "packets"}),
                                      want.astype({c: str for c in ("src", "dst") if c in want and name == "packets"}),
                                      check_dtype=False, check_categorical=False, check_exact=False, rtol=1e-12)
    out = capsys.readouterr().out
    assert "Handshakes" in out and "established" in out and "refused" in out


def test_report_content_is_what_the_capture_holds(cap):
    r = analyzer.analyze(cap)
    hs = r.handshakes.set_index("stream")
    assert hs.loc[0, "outcome"] == "established" and hs.loc[1, "outcome"] == "refused"
    assert hs.loc[0, "handshake_rtt"] == pytest.approx(0.012, abs=1e-9)
    (row,) = r.retransmissions.itertuples(index=False)
    assert (row.frame, row.kind, row.original_frame, row.overlap_bytes) == (5, "retransmission", 4, 100)
    assert row.wireshark_filter == "tcp.stream eq 0 && frame.number == 5"
    assert row.since_original == pytest.approx(0.3, abs=1e-9)


def test_json_summary(cap, tmp_path, capsys):
    assert main(["analyze", str(cap), "-o", str(tmp_path), "--json"]) == 0
    (s,) = json.loads(capsys.readouterr().out)
    assert s["connections"] == 2 and s["handshakes"] == {"established": 1, "refused": 1}
    assert s["retransmissions"] == {"retransmission": 1}
    assert s["handshake_rtt_seconds"]["p50"] == pytest.approx(0.012, abs=1e-9)
    assert s["top_retransmitting_connections"][0]["retransmitted_bytes"] == 100


def test_quiet_prints_nothing(cap, tmp_path, capsys):
    assert main(["analyze", str(cap), "-o", str(tmp_path), "-q"]) == 0
    assert capsys.readouterr().out == ""
    assert (tmp_path / "handshakes.csv").exists()


def test_several_captures_one_folder_each(cap, tmp_path, capsys):
    other = _capture(tmp_path / "other.pcap")
    assert main(["analyze", str(cap), str(other), "-o", str(tmp_path / "out"), "-q"]) == 0
    for name in ("two.pcap", "other.pcap"):
        assert (tmp_path / "out" / name / "retransmissions.csv").exists()


@pytest.mark.tshark
def test_pyshark_engine_gives_the_same_report(cap, tmp_path):
    import shutil
    if not shutil.which("tshark"):
        pytest.skip("tshark is not installed (apt-get install tshark)")
    assert main(["analyze", str(cap), "-o", str(tmp_path / "n"), "-q"]) == 0
    assert main(["analyze", str(cap), "-o", str(tmp_path / "p"), "-q", "--engine", "pyshark"]) == 0
    for name in ("connections", "handshakes", "retransmissions"):
        a = read_table(tmp_path / "n" / f"{name}.csv", name)
        b = read_table(tmp_path / "p" / f"{name}.csv", name)
        pd.testing.assert_frame_equal(a, b)


def test_usage_errors_exit_2(capsys):
    assert main(["analyze"]) == 2
    assert main(["analyze", "x.pcap", "--format", "xml"]) == 2
    assert main(["no-such-command"]) == 2


def test_help_has_an_example(capsys):
    assert main(["analyze", "--help"]) == 0
    assert "tcp-analyzer analyze trace.pcap" in capsys.readouterr().out


# -- errors: one line and exit 1, never a traceback; no table left that is not this run's ----------------
TABLES = ("connections", "handshakes", "retransmissions")


def _tables_in(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("make", ["folder", "missing"])
def test_a_folder_or_missing_capture_is_one_line_exit_1(tmp_path, capsys, make):
    path = tmp_path / "in"
    if make == "folder":
        path.mkdir()
    assert main(["analyze", str(path), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tcp-analyzer: {path}: cannot open: ") and err.count("\n") == 1


def test_output_folder_that_cannot_be_made_fails_before_the_analysis(cap, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("a file where the folder would go")
    monkeypatch.setattr("analyzer.commands.cli.analyze", lambda *a, **k: pytest.fail("analysis ran"))
    assert main(["analyze", str(cap), "-o", str(tmp_path / "file" / "out")]) == 1
    err = capsys.readouterr().err
    assert err == f"tcp-analyzer: {tmp_path}/file/out: cannot write tables there: Not a directory\n"


def test_a_full_disk_leaves_no_table_looking_complete(cap, tmp_path, capsys, monkeypatch):
    """The disk fills while the handshakes table is written: exit 1 with one line; neither a half-written
    table nor the earlier run's tables stay (none of them is this run's)."""
    import errno

    from analyzer.report import writers

    out = tmp_path / "out"
    assert main(["analyze", str(cap), "-o", str(out), "-q"]) == 0
    real = writers._write_csv

    def fill_up(table, path):
        if ".handshakes." in path.name:
            path.write_bytes(b"stream,client,cli")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(table, path)

    monkeypatch.setattr(writers, "_write_csv", fill_up)
    assert main(["analyze", str(cap), "-o", str(out), "-q"]) == 1
    assert capsys.readouterr().err == f"tcp-analyzer: {out}: cannot write the tables: No space left on device\n"
    assert _tables_in(out) == []


@pytest.mark.parametrize("failing", ["connections", "handshakes", "retransmissions", "events", "packets"])
def test_a_full_disk_in_either_writing_process_is_one_line(cap, tmp_path, capsys, monkeypatch, failing):
    """The tables are written by two processes (this one and a forked copy): whichever writes the table
    that meets the full disk, the run ends with the same one line and no table left."""
    import errno

    from analyzer.report import writers

    monkeypatch.setattr(writers, "FORK_WORK", 0)  # (tables this small are written by one process)
    out = tmp_path / "out"
    assert main(["analyze", str(cap), "-o", str(out), "-q", "--packets"]) == 0
    real = writers.write_table

    def fill_up(table, path, format):
        if f".{failing}." in path.name:
            path.write_bytes(b"frame,ts")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(table, path, format)

    monkeypatch.setattr(writers, "write_table", fill_up)
    assert main(["analyze", str(cap), "-o", str(out), "-q", "--packets"]) == 1
    assert capsys.readouterr().err == f"tcp-analyzer: {out}: cannot write the tables: No space left on device\n"
    assert _tables_in(out) == []


def test_a_killed_writing_process_is_one_line(cap, tmp_path, capsys, monkeypatch):
    """The forked copy that writes half of the tables is killed: one line saying so, no table left."""
    import os
    import signal

    from analyzer.report import writers

    monkeypatch.setattr(writers, "FORK_WORK", 0)
    parent = os.getpid()
    real = writers.write_table

    def die_in_the_copy(table, path, format):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        real(table, path, format)

    monkeypatch.setattr(writers, "write_table", die_in_the_copy)
    out = tmp_path / "out"
    assert main(["analyze", str(cap), "-o", str(out), "-q", "--packets"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tcp-analyzer: {out}: table writer was killed by signal SIGKILL") and err.count("\n") == 1
    assert _tables_in(out) == []


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_tables_written_by_two_processes_equal_those_written_by_one(cap, tmp_path, monkeypatch, fmt):
    """Every table byte for byte the same whether a forked copy writes half of them or this process all."""
    from analyzer.report import writers

    monkeypatch.setattr(writers, "FORK_WORK", 0)
    report = analyzer.analyze(cap, packets=True)
    report.write(tmp_path / "two", format=fmt)
    monkeypatch.setattr(writers, "_can_fork", lambda: False)
    report.write(tmp_path / "one", format=fmt)
    names = _tables_in(tmp_path / "one")
    assert len(names) == 5 and _tables_in(tmp_path / "two") == names
    for name in names:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name


def test_small_tables_are_written_without_a_fork(cap, tmp_path, monkeypatch):
    """A fork costs milliseconds: not worth it for a small capture's tables (many captures in one run)."""
    from analyzer.report import writers

    def no_fork(*args):
        raise AssertionError("forked for a small capture")

    monkeypatch.setattr(writers, "_in_two_processes", no_fork)
    assert main(["analyze", str(cap), "-o", str(tmp_path), "-q", "--packets"]) == 0
    assert len(_tables_in(tmp_path)) == 5


def test_no_fork_while_another_thread_runs():
    """A forked copy of a process with other threads could wait forever on a lock one of them held: with a
    thread running (a notebook's, an application's), the tables are written without forking."""
    import threading

    from analyzer.report import writers

    assert writers._can_fork()  # pytest runs the tests in one thread
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert not writers._can_fork()
    finally:
        release.set()
        thread.join()


def test_a_real_full_disk(tmp_path, capsys):
    """The same on a 64 KiB tmpfs (root): the packet table of 2,000 segments does not fit."""
    import subprocess

    from .tcpbuild import Capture

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        big = Capture()
        f = big.flow()
        f.handshake()
        for _ in range(1000):
            f.c("PA", 10, dt=0.001)
            f.s("A", dt=0.001)
        big.write(tmp_path / "big.pcap")
        assert main(["analyze", str(tmp_path / "big.pcap"), "-o", str(disk / "out"), "--packets", "-q"]) == 1
        assert capsys.readouterr().err.endswith(": cannot write the tables: No space left on device\n")
        assert _tables_in(disk / "out") == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_same_file_names_get_their_own_folders(cap, tmp_path, capsys):
    """a/x.pcap and b/x.pcap: x.pcap/ and x.pcap-2/, each with its own capture's tables."""
    from .tcpbuild import Capture

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    (tmp_path / "a" / "x.pcap").write_bytes(cap.read_bytes())
    other = Capture()
    other.flow().handshake()
    other.write(tmp_path / "b" / "x.pcap")
    out = tmp_path / "out"
    assert main(["analyze", str(tmp_path / "a" / "x.pcap"), str(tmp_path / "b" / "x.pcap"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.pcap", "x.pcap-2"]
    assert len(read_table(out / "x.pcap" / "handshakes.csv", "handshakes")) == 2
    assert len(read_table(out / "x.pcap-2" / "handshakes.csv", "handshakes")) == 1
    assert f"Tables written to {out}/x.pcap-2/" in " ".join(capsys.readouterr().out.split())  # rich wraps lines


def test_a_run_replaces_the_folders_tables_as_a_whole(cap, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "notes.txt").parent.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    assert main(["analyze", str(cap), "-o", str(out), "--format", "parquet", "--packets", "-q"]) == 0
    assert main(["analyze", str(cap), "-o", str(out), "-q"]) == 0
    assert _tables_in(out) == ["connections.csv", "events.csv", "handshakes.csv", "notes.txt", "retransmissions.csv"]
    (tmp_path / "bad.pcap").write_bytes(b"not a capture at all, just text\n")
    assert main(["analyze", str(tmp_path / "bad.pcap"), "-o", str(out), "-q"]) == 1
    assert _tables_in(out) == ["notes.txt"]


def test_json_lists_every_capture_failed_ones_with_their_error(cap, tmp_path, capsys):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all, just text\n")
    out = tmp_path / "out"
    assert main(["analyze", str(cap), str(bad), "-o", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    ok, failed = json.loads(captured.out)
    assert ok["capture"] == str(cap) and ok["connections"] == 2 and ok["tables"] == str(out / "two.pcap")
    assert failed == {"capture": str(bad), "error": f"{bad} at offset 0: not a pcap or pcapng file (magic 6e6f7420)",
                      "tables": None}
    assert captured.err == f"tcp-analyzer: {failed['error']}\n"


def test_json_format_floats_round_trip_in_shortest_form(tmp_path):
    """Epoch seconds with nanoseconds need 17 digits; pandas' to_json kept 15. Each float is written as
    Python's repr (shortest round-trip), so json.loads gives back exactly the table's value."""
    from .tcpbuild import Capture

    c = Capture(t0=1_700_000_000.123456789)
    f = c.flow()
    f.handshake()
    f.c("PA", 100, dt=0.000_000_123)
    f.c("PA", 100, dt=0.3, seq=1, advance=False)
    c.write(tmp_path / "ns.pcap")
    assert main(["analyze", str(tmp_path / "ns.pcap"), "-o", str(tmp_path / "out"), "--format", "json", "-q"]) == 0
    report = analyzer.analyze(tmp_path / "ns.pcap")
    text = (tmp_path / "out" / "retransmissions.jsonl").read_text()
    (row,) = map(json.loads, text.splitlines())
    want = float(report.retransmissions["ts"].iloc[0])
    assert row["ts"] == want and f'"ts":{want!r},' in text and len(repr(want)) > 16


def test_an_unreadable_capture_is_one_line_exit_1_as_a_missing_one(cap, capsys):
    """As user nobody (root reads everything): a capture nobody may read is exit 1, one line, like a
    missing one; click's own readability check made it a usage error (exit 2)."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running as user nobody needs root and setpriv (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="tcp-analyzer-unreadable-"))
    try:
        base.chmod(0o1777)
        secret = base / "secret.pcap"
        secret.write_bytes(cap.read_bytes())
        secret.chmod(0o600)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base), "TMPDIR": str(base),
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                              "analyzer", "analyze", str(secret), "-o", str(base / "out")],
                             capture_output=True, text=True, env=env, cwd=base, timeout=300)
    finally:
        shutil.rmtree(base)
    assert res.returncode == 1, res.stderr
    assert res.stderr == f"tcp-analyzer: {secret}: cannot open: Permission denied\n"
