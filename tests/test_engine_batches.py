"""Batch independence, IP versions and VLANs, and the scenarios checked frame by frame against tshark."""
from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest

import analyzer
from analyzer.tcp import Engine
from analyzer.tcp import engine as engine_module
from analyzer.tcp.sequence import compact_records
from analyzer.tcp.state import RECORD_KEEP_OVER, RECORD_WALK
from tests.tcpbuild import MS, Capture, rows
from tests.test_engine_scenarios import RX, SCENARIOS


def all_scenarios() -> Capture:
    """Every scenario's packets in one capture, each on its own client port, one after another."""
    cap = Capture()
    for k, build in enumerate(SCENARIOS.values()):
        part = build()
        shift = k * 100_000_000_000  # 100 s apart
        port = (40000 + k).to_bytes(2, "big")
        for ns, raw, orig in part.frames:
            # rewrite the client port in place (both directions) so connections stay apart; the
            # checksum goes stale, which the engine does not look at
            raw = bytearray(raw)
            l3 = 18 if raw[12:14] == b"\x81\x00" else 14
            ihl = (raw[l3] & 0x0F) * 4 if raw[l3] >> 4 == 4 else 40
            t = l3 + ihl
            if raw[t:t + 2] == b"\x9c\x40":
                raw[t:t + 2] = port
            if raw[t + 2:t + 4] == b"\x9c\x40":
                raw[t + 2:t + 4] = port
            cap.frames.append((ns + shift, bytes(raw), orig))
    return cap


def tables_equal(a, b) -> None:
    for name in ("connections", "handshakes", "retransmissions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)
    assert a.stats == b.stats


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_batched_run_equals_whole_run(tmp_path, batch_size):
    cap = all_scenarios()
    whole = cap.analyze(tmp_path)
    assert len(whole.connections) == len(SCENARIOS) + 1  # scenario 08 has two connections
    tables_equal(cap.analyze(tmp_path, batch_size=batch_size), whole)


def test_feed_reports_what_each_batch_decided(tmp_path):
    df = SCENARIOS["s02_rto"]().packets(tmp_path)
    engine = Engine()
    first = engine.feed(df.iloc[:3])
    assert list(first.handshakes.outcome) == ["established"] and first.retransmissions.empty
    assert list(first.streams) == [0, 0, 0]
    second = engine.feed(df.iloc[3:])
    assert second.handshakes.empty and list(second.retransmissions.frame) == [5]


@pytest.mark.parametrize("variant", [dict(v6=True), dict(vlan=42), dict(v6=True, vlan=7), dict(timestamps=False)])
def test_ipv6_and_vlan_give_the_same_rows(tmp_path, variant):
    cap = Capture(); f = cap.flow(**variant)
    f.handshake(); f.c("PA", 1000, dt=MS); f.c("PA", 1000, dt=0.3, seq=1, advance=False); f.s("A", dt=MS)
    f.close()
    t = cap.analyze(tmp_path)
    assert rows(t.retransmissions, *RX) == [(5, "retransmission", 4, 1000)]
    c = t.connections.iloc[0]
    assert c.client == ("2001:db8::1" if variant.get("v6") else "10.0.0.1")
    assert (None if pd.isna(c.vlan) else c.vlan) == variant.get("vlan")
    assert t.handshakes.outcome[0] == "established"


def test_vlan_is_not_part_of_the_connection_key(tmp_path):
    """Wireshark 4.0 ignores VLANs in tcp.stream; the same 4-tuple on two VLANs is one connection."""
    cap = Capture()
    a, b = cap.flow(vlan=10), cap.flow(vlan=20)
    a.handshake()
    b.ends = a.ends  # the same connection, seen on a second VLAN
    b.c("PA", 100, dt=MS)
    t = cap.analyze(tmp_path)
    assert len(t.connections) == 1 and t.connections.vlan[0] == 10


TSHARK_LABELS = ("spurious_retransmission", "fast_retransmission", "retransmission", "out_of_order")  # finest first


def tshark_labels(path) -> dict[int, str]:
    """frame -> tshark 4.0's finest retransmission label (spurious > fast > retransmission > out-of-order)."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number"]
    for label in TSHARK_LABELS:
        cmd += ["-e", f"tcp.analysis.{label}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    labels = {}
    for line in out.splitlines():
        frame, *flags = (line.split("\t") + [""] * 4)[:5]
        for label, flag in zip(TSHARK_LABELS, flags):
            if flag:
                labels[int(frame)] = label
                break
    return labels


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt-get install tshark)")
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_wireshark_kind_is_tsharks_label(tmp_path, name):
    """``wireshark_kind`` says exactly what tshark 4.0 says, frame by frame, on every scenario (captured twice,
    simultaneous open and all)."""
    cap = SCENARIOS[name]()
    path = cap.write(tmp_path / f"{name}.pcap")
    t = cap.analyze(tmp_path)
    ours = {int(f): k for f, k in zip(t.retransmissions.frame, t.retransmissions.wireshark_kind) if k}
    assert ours == tshark_labels(path)


def _generated_packets(tmp_path) -> pd.DataFrame:
    """A small benchmark capture (benchmarks/gen.py): many interleaved connections, most closed with FINs."""
    from tests.test_benchmark_generator import gen

    path = tmp_path / "gen.pcap"
    gen.generate(str(path), 20_000, seed=5)
    return analyzer.read_packets(str(path))


@pytest.mark.parametrize("source", ["scenarios", "generated"])
def test_compacting_the_record_pool_changes_nothing(tmp_path, monkeypatch, source):
    """The sent-segment record pool compacted after nearly every batch gives the same tables as a run that
    never compacts it; connections that are over keep only a few records."""
    df = all_scenarios().packets(tmp_path) if source == "scenarios" else _generated_packets(tmp_path)

    def run(batch_size):
        engine = Engine()
        for i in range(0, len(df), batch_size):
            engine.feed(df.iloc[i:i + batch_size])
        return engine, engine.finish()

    monkeypatch.setattr(engine_module, "COMPACT_RECORDS_AT", 10 ** 12)
    _, whole = run(len(df))
    calls = []

    def spy(*args):
        before = int(args[5][0]["records"])  # the counters' records in use
        kept = compact_records(*args)
        calls.append((before, kept))
        return kept

    monkeypatch.setattr(engine_module, "COMPACT_RECORDS_AT", 2)
    monkeypatch.setattr(engine_module, "compact_records", spy)
    engine, compacted = run(7 if source == "scenarios" else 50)
    tables_equal(compacted, whole)
    assert len(calls) >= 4 and any(kept < before for before, kept in calls)

    engine._compact()  # every connection's record chain after a last compaction
    st = engine._state
    conns = whole.connections
    for c in range(st.conversations):
        for row in (2 * c, 2 * c + 1):
            n, r = 0, st.dirs[row]["rec_head"]
            while r >= 0:
                n, r = n + 1, st.records[r]["prev"]
            assert n <= RECORD_WALK
            if conns.conn_state[c] in ("SF", "RSTO", "RSTR", "RSTOS0", "RSTRH") and source == "generated":
                assert n <= RECORD_KEEP_OVER, (c, conns.conn_state[c], n)
