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
@pytest.mark.parametrize("name, flagged, overruled", [
    ("ndpi_google_ssl.pcap", 5, 2),       # 2 late originals (their IP IDs are the missing ones): out_of_order
    ("zeek_206_example_b.pcap", 108, None),
    ("tcpdump_pptp.pcap", 4, 8),          # 4 data and 4 pure ACKs captured twice: kind says duplicate
    ("zeek_reassembly.pcap", 20, None),   # tshark's fast retransmissions of a FIN, and more
])
def test_compare_real_capture_agrees(capsys, name, flagged, overruled):
    """wireshark_kind is tshark's label on every frame, to the finest kind; where kind says another cause,
    the frame is listed apart with the evidence, and the verdict stays agree."""
    path = real(name)
    assert main(["compare", str(path)]) == 0
    assert "verdict: agree" in capsys.readouterr().out
    result = compare(path)
    assert result.agree and result.disagreements.empty
    c = result.counts
    assert c["tshark_flagged"] == c["ours_flagged"] == c["tp"] == flagged
    assert c["f1"] == c["class_agreement"] == c["exact_kind"] == 1.0
    assert c["overruled"] == len(result.overruled) and (overruled is None or c["overruled"] == overruled)
    assert (result.overruled["kind"] != result.overruled["tshark"]).all()
    assert (result.overruled["reason"] != "").all()


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
    assert dict(labels["kind"]) == expected
    for frame, kind in expected.items():
        want = "retransmission" if kind == "duplicate" else kind  # tshark calls a duplicate a retransmission
        assert labels.loc[frame, "tshark"] == labels.loc[frame, "wireshark_kind"] == want, frame
    assert result.disagreements.empty
    assert sorted(result.overruled["frame"]) == [f for f, k in expected.items() if k == "duplicate"]
    assert result.counts["tp"] == len(expected) and result.counts["fp"] == result.counts["fn"] == 0


@pytest.mark.tshark
@needs_tshark
def test_compare_simultaneous_open_agrees(tmp_path):
    """tshark flags both SYN-ACKs of a simultaneous open as retransmissions: so does wireshark_kind, while
    kind says they are no retransmission."""
    path = tmp_path / "simultaneous.pcap"
    simultaneous_open(path)
    result = compare(path)
    assert result.agree
    labels = result.labels.set_index("frame")
    assert list(labels.index) == [3, 4] and set(labels["tshark"]) == set(labels["wireshark_kind"]) == {"retransmission"}
    assert set(labels["kind"]) == {""} and list(result.overruled["frame"]) == [3, 4]


@pytest.mark.tshark
@needs_tshark
def test_compare_exits_1_and_lists_each_disagreement(tmp_path, capsys, monkeypatch):
    """An engine that forgets Wireshark's out-of-order label: each missed frame is listed, exit status 1."""
    import analyzer.report.pipeline as report_mod

    path = tmp_path / "lossy.pcap"
    lossy_upload(path)
    real_analyze = report_mod.analyze

    def forgetful(*args, **kwargs):
        rep = real_analyze(*args, **kwargs)
        rx = rep.retransmissions
        rep.retransmissions = rx[rx["wireshark_kind"] != "out_of_order"].reset_index(drop=True)
        return rep

    monkeypatch.setattr(report_mod, "analyze", forgetful)
    assert main(["compare", str(path)]) == 1
    out = capsys.readouterr().out
    assert "disagree on 1 frames" in out and "missed" in out
    assert main(["compare", "--json", str(path)]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert not summary["agree"] and summary["fn"] == 1 and summary["recall"] == 0.5
    [row] = summary["disagreements"]
    assert (row["frame"], row["stream"], row["tshark"], row["wireshark_kind"], row["difference"]) == \
        (12, 0, "out_of_order", "", "missed")
    assert row["wireshark_filter"] == "tcp.stream eq 0 && frame.number == 12"


@pytest.mark.tshark
@needs_tshark
def test_compare_json_reports_counts(tmp_path, capsys):
    path = tmp_path / "lossy.pcap"
    lossy_upload(path)
    assert main(["compare", "--json", str(path)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["agree"] and summary["tp"] == 2 and summary["disagreements"] == [] and summary["overruled"] == []
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


@pytest.mark.parametrize("tshark, ws, kind, difference", [
    ("retransmission", "retransmission", "retransmission", ""),
    ("fast_retransmission", "fast_retransmission", "retransmission", ""),
    ("spurious_retransmission", "spurious_retransmission", "spurious_retransmission", ""),
    ("retransmission", "retransmission", "syn_retransmission", ""),
    ("out_of_order", "out_of_order", "fast_retransmission", ""),
    ("retransmission", "retransmission", "duplicate", ""),
    ("retransmission", "", "", "missed"),
    ("", "fast_retransmission", "fast_retransmission", "extra"),
    ("", "", "duplicate", ""),
    ("out_of_order", "retransmission", "retransmission", "kind"),
    ("fast_retransmission", "retransmission", "retransmission", "kind"),
])
def test_label_mapping(tshark, ws, kind, difference):
    """One frame at a time, without tshark: the difference is between tshark's label and wireshark_kind;
    kind only decides whether the frame is overruled."""
    import pandas as pd

    from analyzer.report.compare import _overruled, join_labels

    theirs = pd.DataFrame({"frame": [7], "stream": [0], "flags": [0x18], "tshark": [tshark]})
    mine = bool(ws or kind)
    rx = pd.DataFrame({"frame": [7] if mine else [], "stream": [0] if mine else [],
                       "wireshark_kind": [ws] if mine else [], "kind": [kind] if mine else [],
                       "reason": ["because"] if mine else [],
                       "wireshark_filter": ["tcp.stream eq 0 && frame.number == 7"] if mine else []})
    labels = join_labels(theirs, rx)
    if not tshark and not mine:
        assert labels.empty
        return
    [row] = labels.to_dict(orient="records")
    assert row["difference"] == difference
    assert row["wireshark_filter"] == "tcp.stream eq 0 && frame.number == 7"
    assert len(_overruled(labels)) == (kind != tshark)
