"""Finished connections moved out of memory (``analyzer.tcp.spill``) and back: exact, whatever the batches.

With ``EVICT_AT = 1`` every connection that is over and had no packet in a batch is moved to the spill
file after that batch; a later packet of it puts it back mid-pass. The tables must be the ones of a run
that never moves anything, on every scenario and every shared real capture.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import analyzer
from analyzer.tcp import Engine
from analyzer.tcp import engine as engine_module
from analyzer.tcp.spill import PAGE
from analyzer.tcp.state import CONVERSATION, FlowState
from tests.tcpbuild import MS, Capture
from tests.test_engine_batches import all_scenarios, tables_equal

REAL = Path(__file__).resolve().parents[2] / "shared" / "captures" / "real"


def _run(df, batch_size: int, evict_at: int, monkeypatch, state: FlowState | None = None):
    monkeypatch.setattr(engine_module, "EVICT_AT", evict_at)
    engine = Engine()
    if state is not None:
        engine._state = state
    for i in range(0, len(df), batch_size):
        engine.feed(df.iloc[i:i + batch_size])
    spill = engine._spill
    return engine.finish(), spill


def _late_fin_capture() -> Capture:
    """Connection A closes; others come and go; then A's FIN comes again (a late copy) and its peer
    answers; then A's 4-tuple is reused by a new SYN."""
    cap = Capture()
    a = cap.flow(cport=41000)
    a.handshake()
    a.c("PA", 500, dt=MS)
    a.s("A", dt=MS)
    a.close()
    for k in range(3):
        f = cap.flow(cport=42000 + k)
        f.handshake(dt=10 * MS)
        f.c("PA", 100, dt=MS)
        f.s("A", dt=MS)
        f.close()
    a.c("FA", dt=50 * MS, seq=501, advance=False)  # the FIN again
    a.s("A", dt=MS, ack=502)
    b = cap.flow(cport=41000, isn_c=900_000)  # same 4-tuple, new ISN: a new connection
    b.handshake(dt=100 * MS)
    b.close()
    return cap


def test_a_late_packet_brings_an_evicted_connection_back(tmp_path, monkeypatch):
    df = _late_fin_capture().packets(tmp_path)
    whole, _ = _run(df, len(df), 10**9, monkeypatch)
    assert len(whole.connections) == 5
    assert whole.retransmissions.kind.tolist() == ["spurious_retransmission"]  # the late FIN, already acknowledged
    for size in (1, 2, 5):
        got, spill = _run(df, size, 1, monkeypatch)
        tables_equal(got, whole)
        assert spill.evictions >= 4 and spill.restores >= 1, (size, spill.evictions, spill.restores)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_every_scenario_with_eviction_equals_the_run_without(tmp_path, monkeypatch, batch_size):
    df = all_scenarios().packets(tmp_path)
    whole, _ = _run(df, len(df), 10**9, monkeypatch)
    got, spill = _run(df, batch_size, 1, monkeypatch)
    tables_equal(got, whole)
    assert spill.evictions > 10


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent: the shared real captures live outside the repo")
def test_real_captures_with_eviction_equal_the_run_without(monkeypatch):
    moved = restored = 0
    for path in sorted(REAL.glob("*.pcap*")):
        df = analyzer.read_packets(str(path))
        whole, _ = _run(df, len(df), 10**9, monkeypatch)
        got, spill = _run(df, 1 if len(df) < 800 else 13, 1, monkeypatch)
        tables_equal(got, whole)
        moved, restored = moved + spill.evictions, restored + spill.restores
    assert moved > 100 and restored > 0  # (both paths ran: out, and back in mid-pass)


def test_pages_of_evicted_connections_are_handed_back(tmp_path, monkeypatch):
    """With state arrays in mappings of their own, the pages holding only evicted connections read as
    zeros afterwards (the system took them back); the tables are still exact."""
    cap = Capture()
    for k in range(40):
        f = cap.flow(cport=43000 + k)
        f.handshake(dt=MS)
        f.close()
    keep = cap.flow(cport=44000)  # still open at the end: its page keeps its data
    keep.handshake(dt=MS)
    df = cap.packets(tmp_path)
    whole, _ = _run(df, len(df), 10**9, monkeypatch)
    state = FlowState(capacity=4096)  # conv: 4096 records of ~400 bytes, a mapping of its own
    monkeypatch.setattr(engine_module, "EVICT_AT", 1)
    engine = Engine()
    engine._state = state
    for i in range(0, len(df), 6):
        engine.feed(df.iloc[i:i + 6])
    rows_per_page = PAGE // CONVERSATION.itemsize
    evicted = np.flatnonzero(state.evicted[:state.conversations])
    assert len(evicted) >= 2 * rows_per_page + 1
    first_page = state.conv[:rows_per_page]  # connections 0.. on the first page, all evicted
    assert not np.frombuffer(first_page.tobytes(), np.uint8).any()
    assert np.frombuffer(state.conv[40:41].tobytes(), np.uint8).any()  # the open connection's record is intact
    tables_equal(engine.finish(), whole)
