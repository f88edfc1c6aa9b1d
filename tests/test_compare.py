"""``compare``: our labels against tshark's, frame by frame, through the CLI (in process) and the API.

Needs tshark (``make test`` installs it when root); without it these tests skip and say so, except the
one checking the error users get without tshark. Real captures come from ../shared/captures/real and
are skipped with the reason when absent; the synthetic ones are built here with scapy.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analyzer.commands.cli import main
from analyzer.report.compare import compare

from .synthetic_tcp import lossy_upload, simultaneous_open

REAL = Path(__file__).resolve().parents[2] / "shared" / "captures" / "real"
HAVE_TSHARK = shutil.which("tshark") is not None
needs_tshark = pytest.mark.skipif(not HAVE_TSHARK, reason="tshark not installed (Debian: apt-get install tshark; "
                                                          "`make test` installs it when run as root)")


def real(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"real capture {path} not found (the real captures live outside the repository, in "
                    "../shared/captures/real)")
    return path


@pytest.mark.tshark
@needs_tshark
@pytest.mark.parametrize("name, flagged, documented", [
    ("ndpi_google_ssl.pcap", 5, 0),       # 2 retransmissions whose originals were not captured, 3 spurious
    ("zeek_206_example_b.pcap", 108, 0),  # 56 retransmissions, 52 out of order
    ("tcpdump_pptp.pcap", 4, 4),          # frames captured twice: tshark says retransmission, we say duplicate
])
def test_compare_real_capture_agrees(capsys, name, flagged, documented):
    path = real(name)
    assert main(["compare", str(path)]) == 0
    out = capsys.readouterr().out
    assert "verdict: agree" in out
    result = compare(path)
    assert result.agree
    assert result.counts["tshark_flagged"] == flagged
    assert result.counts["documented"] == documented
    assert result.counts["tp"] == flagged - documented
    assert result.counts["f1"] == 1.0 and result.counts["class_agreement"] == 1.0
    assert (result.disagreements["difference"] == "duplicate").sum() == documented


@pytest.mark.tshark
@needs_tshark
@pytest.mark.parametrize("captured_twice", [False, True], ids=["lossy", "lossy_captured_twice"])
def test_compare_synthetic_retransmission(tmp_path, capsys, captured_twice):
    path = tmp_path / "lossy.pcap"
    expected = lossy_upload(path, captured_twice=captured_twice, streams=2)
    assert main(["compare", str(path)]) == 0
    assert "verdict: agree" in capsys.readouterr().out
    result = compare(path)
    labels = result.labels.set_index("frame")
    assert dict(labels["ours"]) == expected
    for frame, kind in expected.items():
        want = "retransmission" if kind == "duplicate" else kind  # tshark calls a duplicate a retransmission
        assert labels.loc[frame, "tshark"] == want, frame
    dups = [f for f, k in expected.items() if k == "duplicate"]
    assert sorted(result.disagreements["frame"]) == dups
    assert result.disagreements["documented"].all()
    assert result.counts["tp"] == len(expected) - len(dups)
    assert result.counts["fp"] == result.counts["fn"] == 0


@pytest.mark.tshark
@needs_tshark
def test_compare_simultaneous_open_is_not_a_disagreement(tmp_path):
    """tshark flags both SYN-ACKs of a simultaneous open as retransmissions: we either agree or the
    difference is the documented one."""
    path = tmp_path / "simultaneous.pcap"
    simultaneous_open(path)
    result = compare(path)
    assert result.agree
    labels = result.labels.set_index("frame")
    assert list(labels.index) == [3, 4] and set(labels["tshark"]) == {"retransmission"}
    assert set(labels["difference"]) <= {"", "simultaneous_open"}


@pytest.mark.tshark
@needs_tshark
def test_compare_exits_1_and_lists_each_disagreement(tmp_path, capsys, monkeypatch):
    """An engine that forgets the out-of-order rows: each missed frame is listed, exit status 1."""
    import analyzer.report.pipeline as report_mod

    path = tmp_path / "lossy.pcap"
    lossy_upload(path)
    real_analyze = report_mod.analyze

    def forgetful(*args, **kwargs):
        rep = real_analyze(*args, **kwargs)
        rx = rep.retransmissions
        rep.retransmissions = rx[rx["kind"] != "out_of_order"].reset_index(drop=True)
        return rep

    monkeypatch.setattr(report_mod, "analyze", forgetful)
    assert main(["compare", str(path)]) == 1
    out = capsys.readouterr().out
    assert "disagree on 1 frames" in out and "missed" in out
    assert main(["compare", "--json", str(path)]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert not summary["agree"] and summary["fn"] == 1 and summary["recall"] == 0.5
    [row] = summary["disagreements"]
    assert (row["frame"], row["stream"], row["tshark"], row["ours"], row["difference"]) == \
        (12, 0, "out_of_order", "", "missed")
    assert row["wireshark_filter"] == "tcp.stream eq 0 && frame.number == 12"


@pytest.mark.tshark
@needs_tshark
def test_compare_json_reports_counts(tmp_path, capsys):
    path = tmp_path / "lossy.pcap"
    lossy_upload(path)
    assert main(["compare", "--json", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["agree"] and summary["tp"] == 2 and summary["disagreements"] == []
    assert {r["class"]: r["tp"] for r in summary["per_class"]} == {"retransmission": 1, "out_of_order": 1}


def test_compare_without_tshark_says_so_in_one_line_and_exits_3(tmp_path, capsys, monkeypatch):
    """3, not 1: a script can tell "tshark is missing" from "the labels differ"."""
    path = tmp_path / "lossy.pcap"
    lossy_upload(path)
    monkeypatch.setenv("TSHARK", str(tmp_path / "no-such-tshark"))
    assert main(["compare", str(path)]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("tcp-analyzer: tshark not found") and "\n" not in err


def test_compare_exit_codes_are_in_its_help_and_the_readme(capsys):
    assert main(["compare", "--help"]) == 0
    assert "3 tshark is not installed" in " ".join(capsys.readouterr().out.split())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`compare`: 0 they agree, 1 they differ, 3 tshark is missing" in readme


@needs_tshark
def test_compare_folder_as_capture_is_one_line_exit_1(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tcp-analyzer: {tmp_path}") and "\n" not in err


@needs_tshark
def test_compare_unreadable_capture_is_one_line(tmp_path, capsys):
    path = tmp_path / "not-a-capture.pcap"
    path.write_bytes(b"hello, this is not a capture file at all\n" * 4)
    assert main(["compare", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tcp-analyzer:") and str(path) in err and "\n" not in err


def test_compare_help_has_an_example(capsys):
    assert main(["compare", "--help"]) == 0
    out = capsys.readouterr().out
    assert "tcp-analyzer compare trace.pcapng" in out and "Exit status" in out


@pytest.mark.parametrize("tshark, ours, flags, outcome, difference", [
    ("retransmission", "retransmission", 0x18, "established", ""),
    ("fast_retransmission", "fast_retransmission", 0x18, "established", ""),
    ("spurious_retransmission", "spurious_retransmission", 0x18, "established", ""),
    ("retransmission", "syn_retransmission", 0x02, "no_reply", ""),
    ("out_of_order", "out_of_order", 0x18, "established", ""),
    ("retransmission", "", 0x18, "established", "missed"),
    ("", "fast_retransmission", 0x18, "established", "extra"),
    ("out_of_order", "retransmission", 0x18, "established", "class"),
    ("retransmission", "duplicate", 0x18, "established", "duplicate"),
    ("out_of_order", "duplicate", 0x18, "established", "missed"),     # only tshark's retransmission is documented
    ("", "duplicate", 0x18, "established", ""),
    ("retransmission", "", 0x12, "simultaneous_open", "simultaneous_open"),
    ("retransmission", "", 0x12, "established", "missed"),
])
def test_label_mapping(tshark, ours, flags, outcome, difference):
    """The design.md mapping, one frame at a time, without tshark."""
    import pandas as pd

    from analyzer.report.compare import DOCUMENTED, join_labels

    cls = "out_of_order" if tshark == "out_of_order" else "retransmission" if tshark else ""
    theirs = pd.DataFrame({"frame": [7], "stream": [0], "flags": [flags], "tshark": [tshark], "tshark_class": [cls]})
    rx = pd.DataFrame({"frame": [7] if ours else [], "stream": [0] if ours else [], "kind": [ours] if ours else [],
                       "reason": ["because"] if ours else [],
                       "wireshark_filter": ["tcp.stream eq 0 && frame.number == 7"] if ours else []})
    hs = pd.DataFrame({"stream": [0], "outcome": [outcome]})
    labels = join_labels(theirs, rx, hs)
    if not tshark and not ours:
        assert labels.empty
        return
    [row] = labels.to_dict(orient="records")
    assert row["difference"] == difference
    assert row["wireshark_filter"] == "tcp.stream eq 0 && frame.number == 7"
    assert (difference in DOCUMENTED) == (difference in ("duplicate", "simultaneous_open"))
