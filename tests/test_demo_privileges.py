"""Without a privilege, every command falls back or says so in one line (exit 1), never a traceback.

The commands run as root in a subprocess from which ``setpriv`` took capabilities away (from the
inheritable and bounding sets, so the exec'd interpreter has none of them): without CAP_NET_RAW
root cannot open a packet socket, without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH it cannot write into
a folder whose mode says no. This works wherever the checkout lives (root owns it)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAN_DROP = os.geteuid() == 0 and shutil.which("setpriv") is not None
pytestmark = pytest.mark.skipif(not CAN_DROP, reason="needs root and setpriv (util-linux) to take capabilities away")
NO_RAW = ["net_raw"]
NO_DAC = ["dac_override", "dac_read_search"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without(caps: list[str], *argv: str) -> subprocess.CompletedProcess:
    """Run ``python argv...`` as root without the capabilities ``caps``."""
    drop = ",".join(f"-{c}" for c in caps)
    return subprocess.run(["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}", sys.executable, *argv],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("tcp-analyzer: "), proc.stderr
    return lines[0]


def test_can_capture_looks_at_the_capability_not_at_the_user():
    code = "from analyzer.sources.live import can_capture; print(can_capture())"
    assert without(NO_RAW, "-c", code).stdout.strip() == "False"
    assert without(NO_DAC, "-c", code).stdout.strip() == "True"


def test_demo_as_root_without_cap_net_raw_shows_the_bundled_capture(tmp_path):
    proc = without(NO_RAW, "-m", "analyzer", "demo", "--port", str(free_port()), "-o", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "needs root (CAP_NET_RAW)" in proc.stderr and "bundled capture" in proc.stderr
    assert "established" in proc.stdout and (tmp_path / "out" / "handshakes.csv").exists()


def test_live_as_root_without_cap_net_raw_says_how_to_fix(tmp_path):
    line = one_line(without(NO_RAW, "-m", "analyzer", "live", "--count", "1", "-w", str(tmp_path / "x.pcap"),
                            "-o", str(tmp_path / "out")))
    assert "CAP_NET_RAW" in line and "sudo" in line and "venv --copies" in line
    assert "which python3" not in line  # never the capability on the system interpreter


# command (with {ro}: a folder root may not write into, {rw}: one it may), capabilities taken away
UNWRITABLE = {
    "demo (live)": (["demo", "--port", "{port}", "-o", "{ro}/out"], NO_DAC),
    "demo -w (live)": (["demo", "--port", "{port}", "-o", "{rw}/out", "-w", "{ro}/d.pcap"], NO_DAC),
    "demo (bundled)": (["demo", "-o", "{ro}/out"], NO_DAC + NO_RAW),
    "certs": (["certs", "{ro}/certs"], NO_DAC),
    "live -w": (["live", "--duration", "1", "-w", "{ro}/x.pcap", "-o", "{rw}/out"], NO_DAC),
    "live -o": (["live", "--duration", "1", "-w", "{rw}/x.pcap", "-o", "{ro}/out"], NO_DAC),
}


@pytest.mark.parametrize("case", list(UNWRITABLE))
def test_an_unwritable_output_folder_is_one_line(tmp_path, case):
    args, caps = UNWRITABLE[case]
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir(mode=0o555)
    rw.mkdir()
    argv = [a.format(ro=ro, rw=rw, port=free_port()) for a in args]
    line = one_line(without(caps, "-m", "analyzer", *argv))
    assert str(ro) in line and "Permission denied" in line
    if case == "live -o":
        assert not (rw / "x.pcap").exists()  # refused before the capture (and its pcap) started
