"""Connections end (``sequence.ended``): their rows are written as they end and their state freed, so memory
follows the connections open at once. Exact whatever the batches; the end is decided by capture time only.

A connection ends when it has been over (both FINs acknowledged, or reset) and silent for the close
delay, or silent for the idle timeout (Zeek's tcp_close_delay and tcp_inactivity_timeout). A later packet
of one that was over is counted, not analyzed; after an idle end it opens a new connection.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analyzer
from analyzer.tcp import Engine
from analyzer.tcp import engine as engine_module
from analyzer.tcp.engine import PAGE
from analyzer.tcp.state import CONVERSATION, FlowState
from tests.tcpbuild import MS, Capture
from tests.test_engine_batches import all_scenarios, tables_equal

REAL = Path(__file__).resolve().parents[2] / "shared" / "captures" / "real"


def _run(df, batch_size: int, **kw):
    engine = Engine(**kw)
    for i in range(0, len(df), batch_size):
        engine.feed(df.iloc[i:i + batch_size])
    return engine, engine.finish()


def closed_connection(cap: Capture, cport: int = 41000):
    """A connection on client port ``cport``: handshake, 500 bytes acknowledged, FIN both ways."""
    a = cap.flow(cport=cport)
    a.handshake()
    a.c("PA", 500, dt=MS)
    a.s("A", dt=MS)
    a.close()
    return a


def _late_fin_capture(gap: float) -> Capture:
    """Connection A closes; three others come and go; ``gap`` seconds after A's last packet its FIN comes
    again and its peer answers; then a new SYN reuses A's 4-tuple."""
    cap = Capture()
    a = closed_connection(cap)
    for k in range(3):
        f = cap.flow(cport=42000 + k)
        f.handshake(dt=10 * MS)
        f.c("PA", 100, dt=MS)
        f.s("A", dt=MS)
        f.close()
    a.c("FA", dt=gap, seq=501, advance=False)  # the FIN again
    a.s("A", dt=MS, ack=502)
    b = cap.flow(cport=41000, isn_c=900_000)  # same 4-tuple, new ISN: a new connection
    b.handshake(dt=100 * MS)
    b.close()
    return cap


def test_a_straggler_within_the_close_delay_is_analyzed(tmp_path):
    df = _late_fin_capture(gap=1.0).packets(tmp_path)
    _, whole = _run(df, len(df))
    assert len(whole.connections) == 5 and whole.stats["late_packets"] == 0
    assert whole.retransmissions.kind.tolist() == ["spurious_retransmission"]  # the FIN, already acknowledged
    for size in (1, 2, 5):
        tables_equal(_run(df, size)[1], whole)


def test_a_straggler_after_the_close_delay_is_counted_not_analyzed(tmp_path):
    df = _late_fin_capture(gap=8.0).packets(tmp_path)  # over the 5 s close delay
    _, whole = _run(df, len(df))
    assert len(whole.connections) == 5  # the new SYN on A's 4-tuple is still a connection of its own
    assert whole.stats["late_packets"] == 2 and whole.retransmissions.empty
    a = whole.connections.iloc[0]
    assert (a.client_pkts, a.server_pkts) == (5, 3)  # the late FIN and its ACK are not counted in
    for size in (1, 2, 5):
        tables_equal(_run(df, size)[1], whole)
    _, longer = _run(df, 3, close_delay=10.0)  # a longer delay: analyzed as the straggler above
    assert longer.stats["late_packets"] == 0 and longer.retransmissions.kind.tolist() == ["spurious_retransmission"]
    assert tuple(longer.connections.iloc[0][["client_pkts", "server_pkts"]]) == (6, 4)


def test_an_idle_connection_ends_and_its_next_packet_starts_a_new_one(tmp_path):
    cap = Capture()
    f = cap.flow()
    f.handshake()
    f.c("PA", 100, dt=MS); f.s("A", dt=MS)
    f.c("PA", 100, dt=400.0); f.s("A", dt=MS)  # 400 s later: over the 300 s idle timeout
    df = cap.packets(tmp_path)
    _, t = _run(df, 2)
    assert t.connections.stream.tolist() == [0, 1] and t.stats["late_packets"] == 0
    assert t.handshakes.outcome.tolist() == ["established", "midstream"]
    _, kept = _run(df, 2, idle_timeout=3600.0)
    assert kept.connections.stream.tolist() == [0]


def test_the_capture_clock_going_back_ends_the_same_in_any_batch_or_process(tmp_path):
    """Idle ends go by the capture's clock (the latest frame time so far), not a packet's own time, which may
    go back: A's packet stamped 299.999 s after A's last one comes after B's packets stamped over 300 s
    after it, so A has ended and that packet starts a new connection, whatever the batches (the decoder's
    clock column, or a DataFrame's running maximum) or the processes (``--jobs``). A boundary right after
    B's packets once ended A while the same packets in one batch did not."""
    cap = Capture()
    a = cap.flow(cport=41000)
    a.handshake()
    a.c("PA", 100, dt=MS); a.s("A", dt=MS)
    b = cap.flow(cport=42000)
    b.handshake(dt=300.0005)  # B's SYN 300.0005 s after A's last packet; its ACK 12 ms later
    a.c("PA", 100, dt=-0.0135)  # 299.999 s after A's last packet, the capture's clock at 300.0125 s
    a.s("A", dt=MS)
    path = cap.write(tmp_path / "back.pcap")
    whole = analyzer.analyze(str(path), batch_size=1 << 16)
    assert whole.connections.stream.tolist() == [0, 1, 2]
    assert whole.handshakes.outcome.tolist() == ["established", "established", "midstream"]
    cols = ["stream", "client_port", "first_frame", "last_frame", "client_pkts", "server_pkts"]
    for got in [analyzer.analyze(str(path), batch_size=k) for k in (1, 2, 3, 5, 8)] + [
            analyzer.analyze(str(path), jobs=2, batch_size=3)]:
        pd.testing.assert_frame_equal(got.connections[cols], whole.connections[cols])
        pd.testing.assert_frame_equal(got.handshakes, whole.handshakes)
    df = cap.packets(tmp_path)
    _, one = _run(df, len(df))
    assert one.connections.stream.tolist() == [0, 1, 2]
    for size in (1, 2, 3, 5, 8):
        tables_equal(_run(df, size)[1], one)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_every_scenario_equals_the_whole_run(tmp_path, batch_size):
    df = all_scenarios().packets(tmp_path)
    _, whole = _run(df, len(df))
    got_engine, got = _run(df, batch_size)
    tables_equal(got, whole)
    assert got_engine._ended_conns > 10 and len(got_engine._live) < len(got.connections)


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent: the shared real captures live outside the repo")
def test_real_captures_equal_the_whole_run():
    ended = 0
    for path in sorted(REAL.glob("*.pcap*")):
        df = analyzer.read_packets(str(path))
        _, whole = _run(df, len(df))
        engine, got = _run(df, 1 if len(df) < 800 else 13)
        tables_equal(got, whole)
        assert got.stats["late_packets"] == whole.stats["late_packets"]
        ended += engine._ended_conns
    assert ended > 100


def test_memory_follows_the_open_connections(tmp_path, monkeypatch):
    """2,000 short connections, a few open at a time: the engine's live set stays small, ended connections
    wait to be freed RETIRE_AT (50 here) at most, and the pages holding freed connections only read as
    zeros (the system took them back); the tables are exact."""
    monkeypatch.setattr(engine_module, "RETIRE_AT", 50)
    cap = Capture()
    for k in range(2000):
        f = cap.flow(cport=10000 + k)
        f.handshake(dt=2 * MS)
        f.c("PA", 100, dt=MS); f.s("A", dt=MS)
        f.close()
    keep = cap.flow(cport=9000)  # still open at the end
    keep.handshake(dt=MS)
    df = cap.packets(tmp_path)
    _, whole = _run(df, len(df), close_delay=10.0)
    engine = Engine(close_delay=0.05)
    engine._state = FlowState(capacity=4096)  # conv: 4096 records, a mapping of its own
    most = 0
    for i in range(0, len(df), 100):
        engine.feed(df.iloc[i:i + 100])
        most = max(most, len(engine._live))
        assert engine._ended_count < 50
    assert most < 100
    state = engine._state
    per_page = PAGE // CONVERSATION.itemsize
    assert not np.frombuffer(state.conv[:per_page].tobytes(), np.uint8).any()  # ended ones: handed back
    tables_equal(engine.finish(), whole)
