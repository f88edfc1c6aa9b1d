"""Live capture on lo: the written pcap holds each packet once, exactly as tcpdump's; stop on
count/duration/stop(); one-line errors without root, for a bad filter or a missing interface."""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from analyzer.sources.frames import LINKTYPE_ETHERNET
from analyzer.report.live import analyze_live
from analyzer.sources.live import LiveCapture, PcapWriter
from analyzer.sources.files import frame_batches
from analyzer.errors import AnalyzerError, NeedsRoot

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0
NOBODY = 65534
needs_root = pytest.mark.skipif(not IS_ROOT, reason="live capture needs root (CAP_NET_RAW); run the tests as root")
needs_tcpdump = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed (apt-get install tcpdump)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_frames(path) -> list[tuple[int, int, bytes]]:
    """(ts_ns, wirelen, bytes) of every frame, with our own reader."""
    out = []
    for b in frame_batches(str(path)):
        for i in range(len(b)):
            o, n = int(b.offsets[i]), int(b.caplens[i])
            out.append((int(b.ts_ns[i]), int(b.wirelens[i]), bytes(b.data[o:o + n])))
    return out


def tcp_traffic(port: int, rounds: int = 3, size: int = 300_000) -> None:
    """Plain TCP on loopback: connect, send ``size`` bytes, read them back, close."""
    srv = socket.create_server(("127.0.0.1", port))

    def serve():
        for _ in range(rounds):
            conn, _ = srv.accept()
            with conn:
                got = 0
                while got < size:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    got += len(chunk)
                conn.sendall(b"x" * got)

    t = threading.Thread(target=serve)
    t.start()
    for _ in range(rounds):
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"y" * size)
            got = 0
            while got < size:
                got += len(c.recv(65536))
    t.join(10)
    srv.close()


class Capture(threading.Thread):
    """A live capture in a thread; with ``on_batch``, analyzed as it comes (``analyze_live``)."""

    def __init__(self, cap: LiveCapture, on_batch=None):
        super().__init__(daemon=True)
        self.cap, self.on_batch, self.result, self.report = cap.open(), on_batch, None, None

    def run(self):
        if self.on_batch is None:
            self.result = self.cap.run()
        else:
            run = analyze_live(self.cap, self.on_batch)
            self.result, self.report = run.capture, run.report


def test_pcap_writer_roundtrip_keeps_nanoseconds(tmp_path):
    path = tmp_path / "w.pcap"
    with open(path, "wb") as f:
        w = PcapWriter(f, LINKTYPE_ETHERNET)
        w.write(b"\x00" * 60, 1_700_000_000_123_456_789, 60)
        w.write(b"\x01" * 70, 1_700_000_001_000_000_001, 1500)
    assert read_frames(path) == [(1_700_000_000_123_456_789, 60, b"\x00" * 60),
                                 (1_700_000_001_000_000_001, 1500, b"\x01" * 70)]


def test_without_root_one_line_error_naming_the_fix(monkeypatch):
    def denied(*a, **k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(socket, "socket", denied)
    with pytest.raises(NeedsRoot) as err:
        LiveCapture("lo").open()
    msg = str(err.value)
    assert "\n" not in msg and "root" in msg and "sudo" in msg
    # the capability goes on a private interpreter copy, never on the system python3
    assert "venv --copies" in msg and "setcap cap_net_raw+ep DIR/bin/python3" in msg and "which python3" not in msg


@pytest.fixture
def nobody_home():
    """A private folder (0700, owned by nobody) holding a copy of the package and a numba cache, so
    nobody can import the package wherever the checkout lives (its parents may be 0700)."""
    home = Path(tempfile.mkdtemp(prefix="tcp-analyzer-nobody-"))
    try:
        shutil.copytree(ROOT / "analyzer", home / "analyzer", ignore=shutil.ignore_patterns("__pycache__"))
        (home / "numba-cache").mkdir()
        for path in [home, *home.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        (home / "numba-cache").chmod(0o700)
        yield home
    finally:
        shutil.rmtree(home)


def _as_nobody(home: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(home), "NUMBA_CACHE_DIR": str(home / "numba-cache"), "HOME": str(home)}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                           *argv], capture_output=True, text=True, timeout=120, cwd=home, env=env)


@pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None, reason="needs root and setpriv to switch to nobody")
def test_cli_live_as_nobody_says_how_to_fix(nobody_home):
    probe = _as_nobody(nobody_home, "-c", "import click, numba, numpy, scapy")
    if probe.returncode != 0:  # the interpreter's own packages: nothing a copy of ours can change
        pytest.skip(f"user nobody cannot use the packages of {sys.prefix}: {probe.stderr.strip().splitlines()[-1]}")
    proc = _as_nobody(nobody_home, "-m", "analyzer", "live", "--count", "1", "-w", str(nobody_home / "x.pcap"),
                      "-o", str(nobody_home / "out"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs root" in lines[0] and "sudo" in lines[0], proc.stderr


@needs_root
@pytest.mark.parametrize("where", ["missing folder", "folder is a file"])
def test_cli_live_pcap_that_cannot_be_written_is_one_line_before_capturing(tmp_path, where):
    from click.testing import CliRunner

    from analyzer.commands.live import live_cmd

    (tmp_path / "file").write_text("")
    pcap = tmp_path / ("missing" if where == "missing folder" else "file") / "x.pcap"
    started = time.monotonic()
    res = CliRunner().invoke(live_cmd, ["--duration", "30", "-w", str(pcap), "-o", str(tmp_path / "out")])
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and f"{pcap}: cannot write the capture" in lines[0]
    assert time.monotonic() - started < 25  # refused at once, not after the 30 s capture


@needs_root
def test_bad_filter_and_missing_interface():
    with pytest.raises(AnalyzerError, match="bad BPF filter"):
        LiveCapture("lo", "tcp portt 1").open()
    with pytest.raises(AnalyzerError, match="no network interface"):
        LiveCapture("nosuchif0").open()


@needs_root
@needs_tcpdump
def test_capture_equals_tcpdump_on_lo(tmp_path):
    port = free_port()
    td_path, our_path = tmp_path / "tcpdump.pcap", tmp_path / "live.pcap"
    td = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-B", "32768", "-w", str(td_path), f"tcp port {port}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in td.stderr.readline()
        cap = Capture(LiveCapture("lo", f"tcp port {port}", pcap_path=our_path, batch_interval=0.2))
        cap.start()
        tcp_traffic(port)
        time.sleep(0.3)
        cap.cap.stop()
        cap.join(10)
        time.sleep(0.5)  # tcpdump writes its last packets
    finally:
        td.terminate()
        td.wait(10)
        print("tcpdump:", td.stderr.read())
    ours, theirs = read_frames(our_path), read_frames(td_path)
    assert len(ours) == len(theirs) > 20
    assert sorted(f[1:] for f in ours) == sorted(f[1:] for f in theirs)  # the same packets, each once
    # in the same order, but for packets sent at the same moment from two CPUs, which two sockets may each
    # receive in either order (seen once in a full run): such a packet is a place or two from tcpdump's
    matched = []
    for i, f in enumerate(ours):
        near = [j for j in range(max(0, i - 2), min(len(theirs), i + 3)) if theirs[j][1:] == f[1:]]
        assert near, f"frame {i + 1} is not within two places of tcpdump's"
        matched.append(min(near, key=lambda j: abs(j - i)))
        if matched[-1] != i:
            partner = min(i + 1, len(ours) - 1) if matched[-1] > i else i - 1  # the packet it changed places with
            assert abs(f[0] - ours[partner][0]) < 1_000_000
    # kernel timestamps: each socket is stamped at its own delivery, so within microseconds of tcpdump's
    gap = np.abs(np.array([f[0] for f in ours]) - np.array([theirs[j][0] for j in matched]))
    assert np.median(gap) < 50_000 and gap.max() < 5_000_000
    assert cap.result.outgoing_copies_dropped == len(ours)  # lo shows every packet twice
    assert cap.result.kernel_drops == 0


@needs_root
def test_batches_reach_the_engine_with_file_frame_numbers(tmp_path):
    port = free_port()
    batches = []
    cap = Capture(LiveCapture("lo", f"tcp port {port}", pcap_path=tmp_path / "l.pcap", batch_interval=0.1),
                  on_batch=batches.append)
    cap.start()
    tcp_traffic(port, rounds=2, size=50_000)
    time.sleep(0.3)
    cap.cap.stop()
    cap.join(10)
    firsts = [b.first_frame for b in batches]
    assert firsts[0] == 1 and all(a.first_frame + a.frames == b.first_frame for a, b in zip(batches, batches[1:]))
    hs = [row for b in batches if b.handshakes is not None for row in b.handshakes.itertuples()]
    assert [h.outcome for h in hs] == ["established", "established"]
    report = cap.report
    assert len(report.handshakes) == 2
    # nothing is lost on loopback, but a loaded machine may fire a tail-loss probe (seen: the FIN resent
    # after 4 ms, a D-SACK next): whatever happened, the live report says what the written file says
    assert set(report.retransmissions["kind"]) <= {"spurious_retransmission"}
    import analyzer.report

    again = analyzer.report.analyze(str(tmp_path / "l.pcap"))
    assert again.handshakes["syn_frame"].tolist() == report.handshakes["syn_frame"].tolist()
    assert again.retransmissions["frame"].tolist() == report.retransmissions["frame"].tolist()


@needs_root
def test_stops_on_count(tmp_path):
    port = free_port()
    cap = Capture(LiveCapture("lo", f"tcp port {port}", pcap_path=tmp_path / "c.pcap", count=7))
    cap.start()
    tcp_traffic(port, rounds=1, size=200_000)
    cap.join(10)
    assert cap.result.stop_reason == "count" and cap.result.frames == 7
    assert len(read_frames(tmp_path / "c.pcap")) == 7


@needs_root
def test_stops_on_duration(tmp_path):
    started = time.monotonic()
    result = LiveCapture("lo", f"tcp port {free_port()}", pcap_path=tmp_path / "d.pcap", duration=0.5).run()
    assert result.stop_reason == "duration" and 0.5 <= time.monotonic() - started < 5
    assert read_frames(tmp_path / "d.pcap") == []


@needs_root
def test_ctrl_c_ends_cleanly_with_the_capture_written(tmp_path):
    port = free_port()
    script = (
        "import sys; from analyzer.sources.live import LiveCapture\n"
        f"c = LiveCapture('lo', 'tcp port {port}', pcap_path=sys.argv[1]).open()\n"
        "print('ready', flush=True)\n"
        "r = c.run(); print(r.stop_reason, r.frames, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "i.pcap")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    tcp_traffic(port, rounds=1, size=10_000)
    time.sleep(0.7)
    proc.send_signal(2)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    reason, frames = out.split()
    assert reason == "interrupted" and int(frames) == len(read_frames(tmp_path / "i.pcap")) > 5


@needs_root
def test_truncation_by_the_filter_does_not_happen(tmp_path):
    """Loopback frames reach 65549 bytes; a BPF program compiled with snaplen 65535 would cut them."""
    port = free_port()
    cap = Capture(LiveCapture("lo", f"tcp port {port}", pcap_path=tmp_path / "t.pcap"))
    cap.start()
    tcp_traffic(port, rounds=1, size=2_000_000)
    time.sleep(0.3)
    cap.cap.stop()
    cap.join(10)
    frames = read_frames(tmp_path / "t.pcap")
    assert all(len(f[2]) == f[1] for f in frames)
    assert struct.unpack("<I", (tmp_path / "t.pcap").read_bytes()[16:20])[0] == 262_144  # snaplen
