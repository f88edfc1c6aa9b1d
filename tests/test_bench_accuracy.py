"""benchmarks/bench.py's accuracy report: our retransmissions.csv against the generator's truth, per cause."""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_under_test", ROOT / "benchmarks" / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bench = _load_bench()
gen = bench.gen

# frame, kind, original_captured, evidence
TRUTH = [
    (10, "retransmission", "true", ""),
    (11, "retransmission", "false", ""),
    (12, "fast_retransmission", "true", ""),
    (13, "fast_retransmission", "false", ""),
    (14, "spurious_retransmission", "true", "dsack"),
    (15, "spurious_retransmission", "true", "none"),
    (16, "syn_retransmission", "true", ""),
    (17, "out_of_order", "true", ""),
    (18, "duplicate", "true", ""),
    (19, "duplicate", "true", ""),
]
# what the engine says: frame -> (kind, original_captured)
OURS = {
    10: ("retransmission", "True"),
    11: ("out_of_order", "True"),  # a lost-before-capture resend read as reordering
    12: ("retransmission", "True"),  # wrong trigger
    13: ("fast_retransmission", "False"),
    14: ("spurious_retransmission", "True"),
    16: ("syn_retransmission", "True"),
    17: ("out_of_order", "True"),
    18: ("duplicate", "True"),
    99: ("retransmission", "True"),  # not out of sequence at all
}


def _write(tmp_path: Path, with_original_captured: bool) -> tuple[Path, Path]:
    cap = tmp_path / "x.pcap"
    with open(str(cap) + ".truth.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, gen.TRUTH_COLUMNS)
        w.writeheader()
        for frame, kind, oc, ev in TRUTH:
            w.writerow({"frame": frame, "stream": 0, "direction": "client_to_server", "seq": 1, "seq_raw": 1,
                        "len": 100, "kind": kind, "original_captured": oc, "original_frame": "",
                        "since_original": "", "trigger": "", "evidence": ev, "reason": "test"})
    out = tmp_path / "out"
    out.mkdir()
    cols = ["frame", "kind"] + (["original_captured"] if with_original_captured else [])
    with open(out / "retransmissions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for frame, (kind, oc) in OURS.items():
            w.writerow([frame, kind] + ([oc] if with_original_captured else []))
    return cap, out


def test_per_cause_accuracy_trigger_recall_and_precision(tmp_path, capsys):
    cap, out = _write(tmp_path, with_original_captured=False)
    a = bench.accuracy(out, cap)
    pc = a["per_cause"]
    assert (pc["retransmission"]["correct"], pc["retransmission"]["accuracy"]) == (1, 0.5)
    assert pc["retransmission"]["accuracy_original_not_captured"] == 0.0
    assert pc["fast_retransmission"]["accuracy"] == 0.5
    assert pc["fast_retransmission"]["accuracy_original_not_captured"] == 1.0
    assert pc["spurious_retransmission"]["ours"] == {"none": 1, "spurious_retransmission": 1}
    assert pc["duplicate"]["accuracy"] == 0.5 and pc["syn_retransmission"]["accuracy"] == 1.0
    assert a["overall_accuracy"] == 0.6  # 6 of 10
    assert a["trigger_accuracy_needed"] == round(2 / 3, 4)  # frames 10, 12, 13 called needed by both
    assert (a["recall"], a["precision"]) == (0.8, round(8 / 9, 4))
    assert a["spurious_by_evidence"] == {"with_evidence": {"truth": 1, "accuracy": 1.0},
                                         "no_evidence": {"truth": 1, "accuracy": 0.0}}
    assert all(v["original_captured_agreement"] == "n/a" for v in pc.values())  # the engine has no such column
    bench.print_accuracy(a)
    printed = capsys.readouterr().out
    assert "overall 0.6" in printed and "n/a" in printed


def test_original_captured_is_compared_when_reported(tmp_path):
    cap, out = _write(tmp_path, with_original_captured=True)
    pc = bench.accuracy(out, cap)["per_cause"]
    assert pc["retransmission"]["original_captured_agreement"] == 0.5  # frame 11 says True, truth says false
    assert pc["fast_retransmission"]["original_captured_agreement"] == 1.0
    assert pc["spurious_retransmission"]["original_captured_agreement"] == 0.5  # frame 15 not reported


def test_tshark_baseline_is_shown_when_gen_check_left_it(tmp_path, capsys):
    cap, out = _write(tmp_path, with_original_captured=False)
    Path(str(cap) + ".tshark.json").write_text(json.dumps(
        {"agreement": 0.3, "per_cause": {"retransmission": {"agreement": 0.5}}}))
    a = bench.accuracy(out, cap)
    assert a["tshark"]["agreement"] == 0.3
    bench.print_accuracy(a)
    assert "tshark overall 0.3" in capsys.readouterr().out


def test_no_output_is_an_error_entry(tmp_path):
    cap, out = _write(tmp_path, with_original_captured=False)
    (out / "retransmissions.csv").unlink()
    assert bench.accuracy(out, cap) == {"error": "no retransmissions.csv"}
