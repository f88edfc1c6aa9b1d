"""nftables packet loss for the demo port: added, really dropping, removed on every exit path."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from analyzer.demo import loss
from analyzer.errors import NeedsRoot

CAN_NFT = os.geteuid() == 0 and shutil.which("nft") is not None
needs_nft = pytest.mark.skipif(not CAN_NFT, reason="needs root and nftables (apt-get install nftables) to add rules")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout


def test_ruleset_targets_only_the_port_on_lo():
    text = loss.ruleset(15001, 12.5)
    assert 'iifname "lo" tcp dport 15001 numgen random mod 10000 < 1250 jump lose' in text
    assert 'iifname "lo" tcp sport 15001' in text
    assert "table inet tcp_analyzer_loss_15001" in text


def test_without_root_clear_error(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NeedsRoot, match="--loss needs root.*sudo"):
        with loss.packet_loss(15001, 10):
            pass


@pytest.mark.parametrize("percent", [-1, 101])
def test_bad_percent(percent):
    with pytest.raises(ValueError):
        with loss.packet_loss(15001, percent):
            pass


@needs_nft
def test_rule_added_and_removed():
    port = free_port()
    with loss.packet_loss(port, 10) as name:
        assert name in loss.tables()
        assert f"tcp dport {port}" in ruleset()
    assert name not in loss.tables()
    assert "tcp_analyzer_loss" not in ruleset()


@needs_nft
def test_removed_after_an_exception():
    port = free_port()
    with pytest.raises(RuntimeError):
        with loss.packet_loss(port, 10):
            raise RuntimeError("boom")
    assert loss.table_name(port) not in loss.tables()


@needs_nft
def test_really_drops_packets_of_that_port_only():
    port, other = free_port(), free_port()
    servers = [socket.create_server(("127.0.0.1", p)) for p in (port, other)]
    try:
        with loss.packet_loss(port, 100):
            with pytest.raises(OSError):  # every SYN to the port is dropped
                socket.create_connection(("127.0.0.1", port), timeout=0.5)
            assert loss.dropped(port)[0] >= 1
            socket.create_connection(("127.0.0.1", other), timeout=2).close()  # other ports untouched
    finally:
        for s in servers:
            s.close()


@needs_nft
def test_counts_apart_the_dropped_packets_that_carry_data():
    port = free_port()
    server = socket.create_server(("127.0.0.1", port))
    client = socket.create_connection(("127.0.0.1", port), timeout=2)
    peer, _ = server.accept()
    try:
        with loss.packet_loss(port, 100):
            with pytest.raises(OSError):  # a SYN (60 bytes with its options): no data
                socket.create_connection(("127.0.0.1", port), timeout=0.5)
            total, data = loss.dropped(port)
            assert total >= 1 and data == 0
            client.sendall(b"x" * 100)  # 20 + 32 + 100 bytes: data, dropped
            deadline = time.monotonic() + 5
            while loss.dropped(port)[1] == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            total2, data2 = loss.dropped(port)
        assert data2 >= 1 and total2 >= total + data2
    finally:
        for s in (client, peer, server):
            s.close()


@needs_nft
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_removed_when_the_process_is_signalled(sig):
    port = free_port()
    script = ("import time; from analyzer.demo.loss import packet_loss\n"
              f"with packet_loss({port}, 5):\n    print('in', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "in"
    assert loss.table_name(port) in loss.tables()
    proc.send_signal(sig)
    proc.wait(20)
    assert loss.table_name(port) not in loss.tables()


@needs_nft
def test_remove_stale():
    port = free_port()
    subprocess.run(["nft", "-f", "-"], input=loss.ruleset(port, 1), text=True, check=True)
    assert loss.table_name(port) in loss.remove_stale()
    assert loss.table_name(port) not in loss.tables()
