"""The benchmark capture generator (benchmarks/gen.py): deterministic, labelled as tshark labels it.

The benchmark and the retransmission tests trust ``FILE.truth.csv``; these tests keep it honest on a
small file: same seed, same bytes; every labelled frame is one tshark 4.0 flags as a retransmission
(fast ones as fast), and tshark flags nothing else; IPv6 and 802.1Q frames are in the mix.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import shutil
import struct
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 5000


def _load_gen():
    spec = importlib.util.spec_from_file_location("bench_gen", ROOT / "benchmarks" / "gen.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load_gen()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gen") / "small.pcap"
    gen.generate(str(path), FRAMES, seed=11)
    return path


def _frames(path: Path):
    """(ethertype after any VLAN tag, vlan id or None, ip payload) per frame, parsed independently."""
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data, 0)
    assert magic == 0xA1B2C3D4 and linktype == 1
    off = 24
    while off < len(data):
        _, _, incl, orig = struct.unpack_from("<IIII", data, off)
        frame = data[off + 16 : off + 16 + incl]
        assert incl == orig == len(frame)
        etype = struct.unpack_from(">H", frame, 12)[0]
        vlan, l3 = None, 14
        if etype == 0x8100:
            vlan = struct.unpack_from(">H", frame, 14)[0] & 0x0FFF
            etype = struct.unpack_from(">H", frame, 16)[0]
            l3 = 18
        yield etype, vlan, frame[l3:]
        off += 16 + incl


def test_same_seed_same_bytes(tmp_path, capture):
    again = tmp_path / "again.pcap"
    gen.generate(str(again), FRAMES, seed=11)
    assert _digest(again) == _digest(capture)
    assert Path(str(again) + ".truth.csv").read_text() == Path(str(capture) + ".truth.csv").read_text()


def test_other_seed_other_bytes(tmp_path, capture):
    other = tmp_path / "other.pcap"
    gen.generate(str(other), FRAMES, seed=12)
    assert _digest(other) != _digest(capture)


def test_exact_frame_count_all_tcp_with_ipv6_and_vlan(capture):
    kinds = Counter()
    n = 0
    for etype, vlan, ip in _frames(capture):
        n += 1
        if etype == 0x0800:
            total_len = struct.unpack_from(">H", ip, 2)[0]
            assert total_len == len(ip) and ip[9] == 6
        else:
            assert etype == 0x86DD
            assert struct.unpack_from(">H", ip, 4)[0] == len(ip) - 40 and ip[6] == 6
        kinds["ipv6" if etype == 0x86DD else "ipv4"] += 1
        kinds["vlan"] += vlan is not None
    assert n == FRAMES
    assert kinds["ipv6"] > 0 and kinds["ipv4"] > 0 and kinds["vlan"] > 0


def test_truth_file_lists_both_kinds_with_reasons(capture):
    with open(str(capture) + ".truth.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == gen.TRUTH_COLUMNS
    kinds = Counter(r["kind"] for r in rows)
    assert kinds[gen.LABEL_FAST] > 0 and kinds[gen.LABEL_RTO] > 0
    for r in rows:
        assert int(r["original_frame"]) < int(r["frame"]) <= FRAMES
        assert r["reason"]
        if r["kind"] == gen.LABEL_RTO:
            assert float(r["since_original"]) >= 0.2
        if r["kind"] == gen.LABEL_FAST:
            assert int(r["dup_acks"]) == 3


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (Debian package tshark)")
def test_truth_matches_tshark_exactly(capture):
    res = gen.compare_with_tshark(str(capture))
    assert res["truth_frames"] > 0
    assert res["missing"] == [] and res["extra"] == [], res
    assert res["fast_mismatch"] == [] and res["stream_mismatch"] == [], res
    for flag in ("spurious_retransmission", "out_of_order", "lost_segment", "ack_lost_segment", "keep_alive",
                 "window_update", "window_full", "zero_window", "reused_ports"):
        assert res[flag] == 0, (flag, res)
    assert res["exact"]
