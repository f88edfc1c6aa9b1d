"""How often ``kind`` is the true cause, per cause, on a capture whose causes are known (issue 12).

The benchmark generator (``benchmarks/gen.py``) simulates two TCP stacks per flow with losses,
reordering and delay spikes before and after the capture point, capture copies, and writes the true
cause of every out-of-sequence frame. Here a 150,000-frame file (a seed the rules were not developed on)
is analyzed and every cause checked against a floor a few points under what the engine reaches
(figures in the closing note of issue 12 and benchmarks/README.md), beside Wireshark's own label
(``wireshark_kind``, which equals tshark's), which is right on under half of these frames.

Two kinds of truth rows are left out of the per-cause floors because the file holds nothing that tells
them: spurious retransmissions with no evidence (no D-SACK, no Eifel echo, no ACK before them: the
generator marks them ``evidence=none``), and needed resends whose original was lost before the capture
point when nothing shows it was sent (IPv6 or no IP ID step, in order). They still count in the overall
figure.
"""
from __future__ import annotations

import csv

import pytest

from tests.test_benchmark_generator import gen

import analyzer

FRAMES = 150_000
SEED = 3
NEEDED = ("retransmission", "fast_retransmission")


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """(truth rows by frame, our rows by frame) for the generated file."""
    path = tmp_path_factory.mktemp("accuracy") / "gen.pcap"
    gen.generate(str(path), FRAMES, seed=SEED)
    with open(str(path) + ".truth.csv", newline="") as fh:
        truth = {int(r["frame"]): r for r in csv.DictReader(fh)}
    rx = analyzer.analyze(str(path)).retransmissions
    ours = {int(f): (k, w, oc) for f, k, w, oc in zip(rx.frame, rx.kind, rx.wireshark_kind, rx.original_captured)}
    return truth, ours


def _share(rows, ours, label=0) -> float:
    rows = list(rows)
    assert rows, "no truth rows of this kind in the generated file"
    return sum(ours.get(f, ("", "", None))[label] == r["kind"] for f, r in rows) / len(rows)


def test_each_cause_is_told_from_the_evidence(judged):
    truth, ours = judged
    by = lambda *kinds, **kw: [(f, r) for f, r in truth.items() if r["kind"] in kinds  # noqa: E731
                               and all(r[k] == v for k, v in kw.items())]
    assert _share(by(*NEEDED, original_captured="true"), ours) >= 0.97
    assert _share(by("spurious_retransmission"), ours) >= 0.80  # with the undecidable ones
    with_evidence = [(f, r) for f, r in by("spurious_retransmission") if r["evidence"] != "none"]
    assert _share(with_evidence, ours) >= 0.98
    assert _share(by("syn_retransmission"), ours) >= 0.99
    assert _share(by("duplicate"), ours) >= 0.98
    assert _share(by("out_of_order"), ours) >= 0.96
    assert _share(by(*NEEDED, original_captured="false"), ours) >= 0.75


def test_overall_far_above_wiresharks_label(judged):
    truth, ours = judged
    ws_right = {"retransmission": ("retransmission",), "fast_retransmission": ("fast_retransmission",),
                "spurious_retransmission": ("spurious_retransmission",), "out_of_order": ("out_of_order",),
                "syn_retransmission": ("retransmission",), "duplicate": ()}
    ours_right = sum(ours.get(f, ("",))[0] == r["kind"] for f, r in truth.items()) / len(truth)
    ws = sum(ours.get(f, ("", ""))[1] in ws_right[r["kind"]] for f, r in truth.items()) / len(truth)
    assert ours_right >= 0.90
    assert ws <= 0.6 and ours_right - ws >= 0.3


def test_trigger_and_precision(judged):
    truth, ours = judged
    needed = [(f, r) for f, r in truth.items() if r["kind"] in NEEDED and ours.get(f, ("",))[0] in NEEDED]
    assert sum(ours[f][0] == r["kind"] for f, r in needed) / len(needed) >= 0.97  # timeout vs fast
    flagged = [f for f, (k, _, _) in ours.items() if k]
    assert sum(f in truth for f in flagged) / len(flagged) >= 0.99  # what we call out of sequence is


def test_original_captured_agrees(judged):
    truth, ours = judged
    resends = [(f, r) for f, r in truth.items() if r["kind"] in NEEDED and ours.get(f, ("",))[0] in NEEDED]
    assert sum(bool(ours[f][2]) == (r["original_captured"] == "true") for f, r in resends) / len(resends) >= 0.95
