"""Connection health (issue 13): the events table, the per-direction health columns, capture loss, the
packets table's stream and direction, and the health marks of the plots.

Differential checks against tshark 4.0.17: its per-frame truth for the 28 shared real captures
(``../shared/captures/real/truth``), and tshark run here on captures built packet by packet for the
findings those captures never show (window full, zero-window probes and their ACKs).
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analyzer
from analyzer.tcp import analyze_batches
from analyzer.tcp.sequence import _p2
from tests.tcpbuild import MS, Capture
from tests.test_benchmark_generator import gen
from tests.test_engine_scenarios import SCENARIOS

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "captures" / "real"
TRUTH = REAL / "truth"
# our event -> tshark's flag field
TSHARK_FLAGS = {"duplicate_ack": "tcp.analysis.duplicate_ack", "zero_window": "tcp.analysis.zero_window",
                "zero_window_probe": "tcp.analysis.zero_window_probe",
                "zero_window_probe_ack": "tcp.analysis.zero_window_probe_ack",
                "window_update": "tcp.analysis.window_update", "window_full": "tcp.analysis.window_full",
                "keep_alive": "tcp.analysis.keep_alive", "keep_alive_ack": "tcp.analysis.keep_alive_ack",
                "lost_segment": "tcp.analysis.lost_segment", "ack_lost_segment": "tcp.analysis.ack_lost_segment"}
needs_real = pytest.mark.skipif(not TRUTH.is_dir(), reason=f"the shared real captures are not at {REAL}")
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


# ---- against tshark's truth on the shared real captures ---------------------------------------------
@pytest.fixture(scope="module")
def real():
    """(name, tshark truth, our tables) for every shared capture that has a truth file."""
    out = []
    for truth in sorted(TRUTH.glob("*.csv")):
        name = truth.name[: -len(".csv")]
        tr = pd.read_csv(truth, low_memory=False)
        tr["src"] = tr["ip.src"].astype(object).where(tr["ip.src"].notna(), tr["ipv6.src"]).astype(str)
        out.append((name, tr, analyze_batches([analyzer.read_packets(str(REAL / name))])))
    return out


@needs_real
def test_every_finding_is_on_the_frames_tshark_flags(real):
    """Per kind, the frames of the events table are exactly those tshark flags (precision and recall 1.0)
    on the 28 captures; the counts of the kinds these captures hold are checked too, so an empty table
    could not pass."""
    seen = dict.fromkeys(TSHARK_FLAGS, 0)
    for name, tr, t in real:
        for event, field in TSHARK_FLAGS.items():
            if field not in tr:  # (the truth files have no zero_window_probe_ack column: checked below)
                continue
            ours = set(t.events.frame[t.events.event == event].tolist())
            assert ours == set(tr["frame.number"][tr[field] == 1].tolist()), (name, event)
            seen[event] += len(ours)
    assert seen["duplicate_ack"] == 363 and seen["zero_window"] == 62 and seen["keep_alive"] == 167
    assert seen["lost_segment"] == 112 and seen["ack_lost_segment"] == 70 and seen["window_update"] == 92


@needs_real
def test_data_rtt_and_bytes_in_flight_equal_tsharks(real):
    """client_/server_data_rtt_n, _min, _max are the count, minimum and maximum of tshark's ack_rtt over the
    ACKs of the other side, per stream, within 1 us; _max_in_flight is the largest bytes_in_flight."""
    streams = samples = 0
    for name, tr, t in real:
        conns = t.connections.set_index("stream")
        for stream, rows in tr.groupby("tcp.stream"):
            c = conns.loc[stream]
            from_client = ((rows["src"] == str(c.client)) & (rows["tcp.srcport"] == c.client_port)).to_numpy()
            for side, acks_by, sent_by in (("client", ~from_client, from_client), ("server", from_client, ~from_client)):
                rtt = rows["tcp.analysis.ack_rtt"][acks_by].dropna().astype(float)
                assert c[f"{side}_data_rtt_n"] == len(rtt), (name, stream, side)
                if len(rtt):
                    assert abs(c[f"{side}_data_rtt_min"] - rtt.min()) < 1e-6, (name, stream, side)
                    assert abs(c[f"{side}_data_rtt_max"] - rtt.max()) < 1e-6, (name, stream, side)
                else:
                    assert pd.isna(c[f"{side}_data_rtt_min"]) and pd.isna(c[f"{side}_data_rtt_median"])
                bif = rows["tcp.analysis.bytes_in_flight"][sent_by].dropna()
                assert (pd.isna(c[f"{side}_max_in_flight"]) if bif.empty
                        else c[f"{side}_max_in_flight"] == bif.max()), (name, stream, side)
                samples += len(rtt)
            streams += 1
    assert streams > 100 and samples > 1000


@needs_real
def test_zero_windows_of_zeek_206_example_b(real):
    """The capture the issue names: tshark's expert info shows 57 zero-window adverts, all from the client."""
    t = next(t for name, _, t in real if name == "zeek_206_example_b.pcap")
    assert int(t.connections.client_zero_windows.sum()) == 57 and int(t.connections.server_zero_windows.sum()) == 0
    assert t.stats["events"]["zero_window"] == 57


# ---- against tshark on captures built here -------------------------------------------------------------
def _window_full() -> Capture:
    """No window scaling: the server advertises 2000 bytes; the client's second 1000-byte segment fills
    them; the server then shuts its window, the client probes, and the server's window opens again."""
    cap = Capture(); f = cap.flow()
    f.c("S", options=[("MSS", 1460)]); f.s("SA", dt=10 * MS, options=[("MSS", 1460)], win=2000)
    f.c("A", dt=2 * MS)
    f.c("PA", 1000, dt=MS); f.c("PA", 1000, dt=0.01 * MS)   # 4, 5: window full
    f.s("A", dt=10 * MS, win=0)                              # 6: zero window
    f.c("PA", 1, dt=0.2, advance=False)                      # 7: zero-window probe
    f.s("A", dt=10 * MS, win=0)                              # 8: its ACK, still 0
    f.s("A", dt=0.1, win=3000)                               # 9: window update
    f.c("PA", 1000, dt=MS); f.s("A", dt=10 * MS, win=3000)
    f.c("A", dt=1.0, seq=3000, advance=False)                # keep-alive at next - 1
    f.s("A", dt=MS, win=3000)                                # its ACK
    return cap


def _tshark_flags(path: Path) -> dict[str, set[int]]:
    fields = list(TSHARK_FLAGS.values())
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-o", "tcp.analyze_sequence_numbers:TRUE",
                          "-o", "tcp.desegment_tcp_streams:FALSE", "-T", "fields", "-E", "separator=,", "-E", "occurrence=f",
                          "-e", "frame.number", *[a for f in fields for a in ("-e", f)]],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    flagged = {event: set() for event in TSHARK_FLAGS}
    for line in out.splitlines():
        cells = line.split(",")
        for event, value in zip(TSHARK_FLAGS, cells[1:]):
            if value not in ("", "0"):
                flagged[event].add(int(cells[0]))
    return flagged


@needs_tshark
@pytest.mark.parametrize("name", ["window_full", "s09_keepalive", "s10_zero_window", "s03_fast", "s36_duplicate_ack_train_v6"])
def test_findings_equal_tsharks_on_built_captures(tmp_path, name):
    cap = _window_full() if name == "window_full" else SCENARIOS[name]()
    path = cap.write(tmp_path / f"{name}.pcap")
    t = cap.analyze(tmp_path)
    want = _tshark_flags(path)
    for event in TSHARK_FLAGS:
        assert set(t.events.frame[t.events.event == event].tolist()) == want[event], event
    if name == "window_full":
        assert {e: sorted(want[e]) for e in ("window_full", "zero_window", "zero_window_probe",
                                             "zero_window_probe_ack", "keep_alive", "keep_alive_ack")} == {
            "window_full": [5], "zero_window": [6, 8], "zero_window_probe": [7], "zero_window_probe_ack": [8],
            "keep_alive": [12], "keep_alive_ack": [13]}
        c = t.connections.iloc[0]
        assert (c.client_window_full, c.server_zero_windows, c.client_zero_windows) == (1, 2, 0)


@needs_real
def test_duplicate_ack_detail_names_tsharks_number_and_frame(real):
    checked = 0
    for name, tr, t in real:
        dup = tr[tr["tcp.analysis.duplicate_ack"] == 1]
        want = {int(f): f"#{int(n)}, repeating frame {int(d)}" for f, n, d in
                zip(dup["frame.number"], dup["tcp.analysis.duplicate_ack_num"], dup["tcp.analysis.duplicate_ack_frame"])}
        ev = t.events[t.events.event == "duplicate_ack"]
        assert dict(zip(ev.frame.astype(int), ev.detail)) == want, name
        checked += len(want)
    assert checked == 363


# ---- RTT medians, throughput -----------------------------------------------------------------------------
def test_p_square_median_is_exact_up_to_5_samples_and_close_after():
    rng = np.random.default_rng(3)
    for values in (rng.lognormal(-4, 0.6, 20_000), rng.uniform(1, 2, 20_000), np.r_[np.full(500, 5.0), np.arange(10.)]):
        q, qn = np.zeros(5), np.zeros(5)
        for n, x in enumerate(values, 1):
            _p2(q, qn, n, float(x))
            if n <= 5:
                assert sorted(q[:n]) == sorted(values[:n].tolist())
        assert q[2] == pytest.approx(np.median(values), rel=0.02)


def _rtt_flow() -> Capture:
    """Client data answered after 10, 20 and 30 ms; a fourth segment resent after a timeout, its ACK 1 ms
    after the resend (Wireshark measures it from the first copy, 301 ms: a sample Karn's rule leaves out)."""
    cap = Capture(); f = cap.flow()
    f.handshake()
    for wait in (10, 20, 30):
        f.c("PA", 1000, dt=MS); f.s("A", dt=wait * MS)
    f.c("PA", 1000, dt=MS)                                      # 10: seq 3001
    f.c("PA", 1000, dt=0.3, seq=3001, advance=False)            # 11: resent
    f.s("A", dt=MS)                                             # 12: ACK 4001
    return cap


def _tshark_rtts(path: Path) -> pd.DataFrame:
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-o", "tcp.analyze_sequence_numbers:TRUE", "-T", "fields",
                          "-E", "separator=,", "-E", "occurrence=f", "-e", "frame.number", "-e", "tcp.srcport",
                          "-e", "tcp.analysis.ack_rtt", "-e", "tcp.analysis.acks_frame", "-Y", "tcp.analysis.ack_rtt"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [line.split(",") for line in out.splitlines()]
    return pd.DataFrame({"frame": [int(r[0]) for r in rows], "sport": [int(r[1]) for r in rows],
                         "rtt": [float(r[2]) for r in rows], "acks": [int(r[3]) for r in rows]})


@needs_tshark
def test_data_rtt_median_karn_and_na(tmp_path):
    """Count, minimum, maximum and median of the client's data RTT are those of tshark's ack_rtt samples
    on the server's ACKs (the median exact up to 5 samples); the Karn median leaves out the sample of the
    resent segment (ACKs of frames 10 and 11)."""
    cap = _rtt_flow()
    path = cap.write(tmp_path / "rtt.pcap")
    c = cap.analyze(tmp_path).connections.iloc[0]
    ts = _tshark_rtts(path)
    server_acks = ts[ts.sport == 15001]
    assert c.client_data_rtt_n == len(server_acks) == 5  # the SYN's sample too
    assert c.client_data_rtt_min == pytest.approx(server_acks.rtt.min(), abs=1e-6)
    assert c.client_data_rtt_max == pytest.approx(server_acks.rtt.max(), abs=1e-6) == pytest.approx(0.301)
    assert c.client_data_rtt_median == pytest.approx(server_acks.rtt.median(), abs=1e-6)
    karn = server_acks[~server_acks.acks.isin([10, 11])]
    assert c.client_data_rtt_karn_median == pytest.approx(karn.rtt.median(), abs=1e-6)
    assert c.server_data_rtt_n == (ts.sport == 40000).sum() == 1  # the SYN-ACK, answered by the client's ACK
    nothing = SCENARIOS["s20_no_reply"]().analyze(tmp_path).connections.iloc[0]
    assert nothing.client_data_rtt_n == 0 and pd.isna(nothing.client_data_rtt_min)
    assert pd.isna(nothing.client_data_rtt_median) and pd.isna(nothing.client_throughput)


def test_throughput_and_goodput(tmp_path):
    t = _rtt_flow().analyze(tmp_path)
    c = t.connections.iloc[0]
    first, last = 4, 11  # the client's first and last data frames
    packets = analyzer.read_packets(str(_rtt_flow().write(tmp_path / "r.pcap")))
    span = packets.ts_ns[packets.frame == last].iloc[0] - packets.ts_ns[packets.frame == first].iloc[0]
    assert c.client_bytes == 5000 and c.retransmitted_bytes == 1000
    assert c.client_throughput == pytest.approx(5000 * 8 / (span / 1e9))
    assert c.client_goodput == pytest.approx(4000 * 8 / (span / 1e9))
    assert pd.isna(c.server_throughput)  # the server sent no data


# ---- capture loss --------------------------------------------------------------------------------------
def test_capture_loss_is_told_apart_from_network_loss(tmp_path):
    """The generator drops 1% of the frames at the capture point (the network carried them): the capture-loss
    figure is within 10% of the dropped share, and the frames after each dropped one are findings
    (lost_segment, ack_lost_segment, capture_gap), not retransmissions, unless the truth says they are."""
    path = tmp_path / "lossy.pcap"
    gen.generate(str(path), 60_000, seed=2, rates=gen.Rates(capture_loss=0.01))
    with open(str(path) + ".capture_loss.csv", newline="") as fh:
        dropped = list(csv.DictReader(fh))
    with open(str(path) + ".truth.csv", newline="") as fh:
        truth = {int(r["frame"]): r["kind"] for r in csv.DictReader(fh)}
    report = analyzer.analyze(str(path))
    loss = report.stats["capture_loss"]
    dropped_bytes = sum(int(r["len"]) for r in dropped)
    assert loss["percent"] == pytest.approx(100 * dropped_bytes / loss["bytes"], rel=0.10)
    share = 100 * len(dropped) / (len(dropped) + report.stats["frames"])
    assert loss["percent"] == pytest.approx(share, rel=0.25) and loss["percent"] > 0.1
    rx = report.retransmissions.set_index("frame")
    after = {int(r["frame_after"]) for r in dropped if r["frame_after"]}
    wrong = [f for f in after if f in rx.index and rx.kind[f] != truth.get(f)]
    assert not wrong
    flagged = set(report.events.frame[report.events.event.isin(["lost_segment", "ack_lost_segment", "capture_gap"])])
    data = [r for r in dropped if int(r["len"]) > 0 and r["frame_after"]]
    assert sum(int(r["frame_after"]) in flagged for r in data) / len(data) > 0.5
    summary = report.summary()
    assert summary["capture_loss"]["percent"] == loss["percent"]


def test_summary_warns_of_capture_loss(tmp_path, capsys):
    from analyzer.commands.console import print_summary
    s = {"capture": "x.pcap", "frames": 1, "tcp_segments": 1, "connections": 1, "handshakes": {},
         "handshake_rtt_seconds": {}, "retransmissions": {}, "top_retransmitting_connections": [],
         "skipped_frames": {}, "problems": [], "events": {"lost_segment": 3},
         "capture_loss": {"lost_segments": 3, "ack_lost_segments": 2, "missed_bytes": 3000, "bytes": 100_000,
                          "percent": 3.0}}
    print_summary(s)
    out = capsys.readouterr().out
    assert "1 frame, 1 TCP segment, 1 connection" in out
    assert "Capture loss: 3% of data bytes acknowledged but never captured (3,000 of 100,000)" in out
    assert "the capture itself dropped packets" in out
    s["capture_loss"]["percent"] = 0.05
    print_summary(s)
    assert "the capture itself dropped packets" not in capsys.readouterr().out


# ---- packets table, plots -------------------------------------------------------------------------------
def test_packets_table_names_stream_and_direction(tmp_path):
    cap = SCENARIOS["s08_port_reuse"]()
    path = cap.write(tmp_path / "reuse.pcap")
    report = analyzer.analyze(str(path), packets=True)
    pk, conns = report.packets, report.connections
    assert len(conns) == 2 and pk.stream.is_monotonic_increasing  # the second SYN (new ISN) starts stream 1
    assert pk.groupby("stream").size().tolist() == (conns.client_pkts + conns.server_pkts).tolist()
    for _, p in pk.iterrows():
        c = conns[conns.stream == p.stream].iloc[0]
        client = str(p.src) == str(c.client) and p.sport == c.client_port
        assert p.direction == ("client->server" if client else "server->client")


def test_time_sequence_graph_marks_the_findings(tmp_path):
    from analyzer.report.plot import finding_marks, plot_stream

    cap = _window_full()
    path = cap.write(tmp_path / "wf.pcap")
    fig = plot_stream(str(path), 0, tmp_path / "wf.svg")
    assert finding_marks(fig) == {"duplicate_ack": [], "zero_window": [6, 8]} or finding_marks(fig) == {
        "zero_window": [6, 8]}
    lossy = plot_stream(str(SCENARIOS["s03_fast"]().write(tmp_path / "f.pcap")), 0)
    assert finding_marks(lossy) == {"duplicate_ack": [8, 9], "lost_segment": [5]}
    assert 'id="zero_window:6"' in (tmp_path / "wf.svg").read_text()


def test_rtt_samples_plot(tmp_path):
    from analyzer.commands.cli import main

    path = _rtt_flow().write(tmp_path / "rtt.pcap")
    assert main(["plot", str(path), "--stream", "0", "--rtt-samples", "-o", str(tmp_path / "rtt.png")]) == 0
    assert (tmp_path / "rtt.png").stat().st_size > 1000
    from analyzer.report.plot import plot_rtt_samples

    fig = plot_rtt_samples(str(path), 0)
    series = {line.get_gid(): list(line.frames) for line in fig.axes[0].get_lines()}
    assert series == {"rtt_samples:client->server:sent once": [2, 5, 7, 9],  # the SYN too
                      "rtt_samples:client->server:resent": [12], "rtt_samples:server->client:sent once": [3]}
    assert os.path.exists(tmp_path / "rtt.png")
