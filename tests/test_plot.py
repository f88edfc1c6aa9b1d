"""``plot``: time-sequence graphs and the RTT distribution, through the CLI (in process) and the API.

The marked segments are read back two ways: from the Figure's artists (``marked_frames``, the line
data) and from the SVG file the CLI wrote (each marked segment is an element whose id is
``<kind>:<frame>``). Both must name exactly the report's retransmission rows of that stream and direction.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from analyzer.commands.cli import main
from analyzer.report.plot import COLOURS, SEGMENT_MARKS, marked_frames, plot_rtt, plot_stream
from analyzer.report import analyze

from .synthetic_tcp import lossy_upload

REAL = Path(__file__).resolve().parents[2] / "shared" / "captures" / "real"
DIRECTIONS = ["client->server", "server->client"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lossy(tmp_path_factory) -> Path:
    """Two connections, each with a timeout retransmission, an out-of-order segment and a duplicate."""
    path = tmp_path_factory.mktemp("plot") / "lossy.pcap"
    lossy_upload(path, captured_twice=True, streams=2)
    return path




def expected_rows(report, stream: int, direction: str):
    rx = report.retransmissions
    return rx[(rx["stream"] == stream) & (rx["direction"] == direction)]


def by_kind(rows) -> dict[str, list[int]]:
    return {k: sorted(int(f) for f in g["frame"]) for k, g in sorted(rows.groupby("kind"))}


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("which", ["synthetic", "real"])
def test_plot_stream_marks_exactly_the_retransmitted_frames(lossy, tmp_path, capsys, which, direction):
    path, stream = (lossy, 1) if which == "synthetic" else (REAL / "ndpi_google_ssl.pcap", 0)
    if not path.exists():
        pytest.skip(f"real capture {path} not found (it lives outside the repository)")
    out = tmp_path / "stream.svg"
    args = ["plot", str(path), "--stream", str(stream), "-o", str(out)]
    assert main(args + (["--reverse"] if direction == "server->client" else [])) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    report = analyze(path, packets=True)
    want = by_kind(expected_rows(report, stream, direction))
    # from the file: one element per marked segment, id "<kind>:<frame>"
    ids = re.findall(r'id="([a-z_]+):(\d+)"', out.read_text())
    from_file: dict[str, list[int]] = {}
    for kind, frame in ids:
        if kind in SEGMENT_MARKS:  # (the findings are marked too: tests/test_health.py)
            from_file.setdefault(kind, []).append(int(frame))
    assert {k: sorted(v) for k, v in from_file.items()} == want
    # from the figure: the same frames, each bar drawn at its time from seq to seq + len
    fig = plot_stream(report, stream, direction=direction)
    assert marked_frames(fig) == want
    rows = expected_rows(report, stream, direction).set_index("frame")
    t0 = report.connections.set_index("stream").loc[stream, "first_ts"]
    for line in fig.axes[0].get_lines():
        kind, _, frame = (line.get_gid() or "").partition(":")
        if kind not in SEGMENT_MARKS or not frame.isdigit():
            continue
        row = rows.loc[int(frame)]
        assert row["kind"] == kind
        (x0, x1), (y0, y1) = line.get_xdata(), line.get_ydata()
        assert x0 == x1 == pytest.approx(row["ts"] - t0, abs=1e-6)
        assert y0 == row["seq"]
        assert y1 - y0 == row["len"] + (1 if kind == "syn_retransmission" else 0)
        assert line.get_color() == COLOURS[kind]


def test_plot_stream_draws_data_acks_and_sack(lossy):
    report = analyze(lossy, packets=True)
    fig = plot_stream(report, 0)
    ax = fig.axes[0]
    gids = {a.get_gid() for a in ax.get_children() if a.get_gid()}
    assert {"data", "ack", "window", "sack"} <= gids
    assert marked_frames(fig) == {"duplicate": [5], "out_of_order": [13], "retransmission": [10]}
    data = next(c for c in ax.collections if c.get_gid() == "data")
    assert sorted(data.frames) == [1, 4, 6, 7, 12, 15]  # SYN, the data not marked, FIN
    sack = next(c for c in ax.collections if c.get_gid() == "sack")
    [seg] = sack.get_segments()
    assert list(seg[:, 1]) == [201, 301]  # relative sequence numbers of the SACK block 201-301
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"retransmission", "out of order", "duplicate", "ACK", "SACK block"} <= set(legend)


def test_plot_stream_time_range_draws_only_what_falls_inside(lossy, tmp_path, capsys):
    """--start/--end: only segments sent in the window are drawn; sequence numbers stay connection-relative."""
    out = tmp_path / "zoom.svg"
    assert main(["plot", str(lossy), "-s", "0", "--start", "0.65", "--end", "0.75", "-o", str(out)]) == 0
    ids = re.findall(r'id="([a-z_]+):(\d+)"', out.read_text())
    # the retransmission (0.6 s) and duplicate (0.2 s) fall outside; the segment after the gap inside
    assert ids == [("out_of_order", "13"), ("lost_segment", "12")]
    fig = plot_stream(analyze(lossy, packets=True), 0, time_range=(0.65, None))
    [line] = [ln for ln in fig.axes[0].get_lines() if (ln.get_gid() or "").startswith("out_of_order")]
    assert list(line.get_ydata()) == [301, 401]


def test_plot_notes_the_direction_with_more_data(lossy, tmp_path, capsys):
    assert main(["plot", str(lossy), "-s", "0", "--reverse", "-o", str(tmp_path / "r.png")]) == 0
    assert "carries more data client->server" in capsys.readouterr().err


@pytest.mark.parametrize("suffix, magic", [(".png", PNG_MAGIC), (".svg", b"<?xml")])
def test_plot_writes_the_image_type_of_the_suffix(lossy, tmp_path, suffix, magic):
    out = tmp_path / f"s0{suffix}"
    assert main(["plot", str(lossy), "-s", "0", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


def test_plot_rtt(lossy, tmp_path, capsys):
    out = tmp_path / "rtt.png"
    assert main(["plot", str(lossy), "--rtt", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(PNG_MAGIC)
    report = analyze(lossy)
    fig = plot_rtt([report])
    [ecdf] = [ln for ax in fig.axes for ln in ax.get_lines() if (ln.get_gid() or "").startswith("rtt_ecdf")]
    est = report.handshakes[report.handshakes["outcome"] == "established"]
    assert np.allclose(ecdf.get_xdata(), np.sort(est["handshake_rtt"].to_numpy(float)) * 1e3)
    assert ecdf.get_ydata()[-1] == 1.0


def test_plot_rtt_without_established_connections_still_draws(tmp_path):
    import pandas as pd

    fig = plot_rtt(pd.DataFrame({"outcome": ["no_reply"], "handshake_rtt": [None]}), tmp_path / "e.png")
    assert (tmp_path / "e.png").exists()
    assert "no established" in " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


@pytest.mark.parametrize("args, code, message", [
    (["--stream", "7"], 1, "no stream 7"),
    ([], 2, "exactly one of --stream N or --rtt"),
    (["--stream", "0", "--rtt"], 2, "exactly one of --stream N or --rtt"),
    (["--stream", "0", "-o", "graph.jpeg"], 2, "use a .png, .svg or .pdf"),
    (["--stream", "0", "--start", "5", "--end", "1"], 2, "--start 5 is after --end 1"),
])
def test_plot_bad_arguments(lossy, tmp_path, capsys, args, code, message):
    if "-o" not in args:
        args = args + ["-o", str(tmp_path / "x.png")]
    assert main(["plot", str(lossy), *args]) == code
    assert message in capsys.readouterr().err


def test_plot_help_has_examples(capsys):
    assert main(["plot", "--help"]) == 0
    out = capsys.readouterr().out
    assert "tcp-analyzer plot trace.pcap --stream 3 -o stream3.png" in out
    assert "tcp-analyzer plot trace.pcap --rtt -o rtt.png" in out


@pytest.mark.parametrize("raw, base, want", [
    ([2**32 - 10, 5, 100], 2**32 - 11, [1, 16, 111]),         # wraps past 2**32 after the ISN
    ([1000, 900, 1100], 999, [1, -99, 101]),                   # a segment before the first one seen
    ([0, 2**31 - 1, 2**32 - 2, 3], 2**32 - 1, [1, 2**31, 2**32 - 1, 2**32 + 4]),  # a whole lap, in steps
])
def test_sequence_numbers_are_unwrapped_relative_to_the_isn(raw, base, want):
    from analyzer.report.plot import _unwrapped

    assert list(_unwrapped(np.array(raw, dtype=np.int64), base)) == want


def test_plot_rtt_leaves_out_retried_handshakes_as_the_summary_does(tmp_path):
    """Karn: a SYN-ACK retried 1 s later makes a 1 s "RTT" that is a timeout, not the path; the plot
    shows the clean handshake only, counts the retried one in its title, and agrees with the summary."""
    from analyzer.report import summarise

    from .tcpbuild import MS, Capture

    cap = Capture()
    cap.flow(cport=40001).handshake()                                  # SYN, SYN-ACK +10 ms, ACK +2 ms
    f = cap.flow(cport=40002)
    f.c("S", dt=MS)
    f.s("SA", dt=10 * MS)
    f.s("SA", dt=1.0)                                                  # the SYN-ACK again, 1 s later
    f.c("A", dt=2 * MS)
    report = analyze(cap.write(tmp_path / "retry.pcap"))
    assert report.handshakes["synack_retries"].tolist() == [0, 1]
    fig = plot_rtt(report)
    [ecdf] = [ln for ax in fig.axes for ln in ax.get_lines() if (ln.get_gid() or "").startswith("rtt_ecdf")]
    assert np.allclose(ecdf.get_xdata(), [12.0])
    assert fig._suptitle.get_text() == ("Handshake RTT over 1 established connections without retries "
                                        "(1 with a retried SYN or SYN-ACK left out)")
    assert summarise(report)["handshake_rtt_seconds"]["n"] == 1
