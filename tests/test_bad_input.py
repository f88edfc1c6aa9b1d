"""Bad input: one clear line naming file, offset and problem; frames before the damage are kept;
never a traceback, a hang or unbounded memory."""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import analyzer
from analyzer.errors import CaptureError
from tests import capwrite as cw

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "captures" / "real"
FRAME = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, seq=5) / (b"d" * 20))
GOOD = cw.pcap([(k * 1000, FRAME) for k in range(10)])
GOOD_NG = cw.shb() + cw.idb() + b"".join(cw.epb(FRAME, k) for k in range(10))


def test_not_a_capture(tmp_path):
    p = tmp_path / "notes.pcap"
    p.write_text("hello, this is not a capture file at all\n")
    with pytest.raises(CaptureError) as exc:
        analyzer.read_packets(p)
    msg = str(exc.value)
    assert "\n" not in msg and str(p) in msg and "offset 0" in msg and "not a pcap or pcapng file" in msg


@pytest.mark.parametrize("data,problem", [(b"", "empty"), (GOOD[:10], "truncated pcap file header")])
def test_empty_and_tiny_files(data, problem):
    with pytest.raises(CaptureError, match=problem):
        analyzer.read_packets(io.BytesIO(data))


def test_missing_file(tmp_path):
    with pytest.raises(CaptureError, match="cannot open"):
        analyzer.read_packets(tmp_path / "absent.pcap")


@pytest.mark.parametrize("data", [GOOD, GOOD_NG], ids=["pcap", "pcapng"])
def test_truncated_file_keeps_frames_before(data):
    cut = data[:-7]
    df = analyzer.read_packets(io.BytesIO(cut))
    assert df["frame"].tolist() == list(range(1, 10))
    (problem,) = df.attrs["stats"]["problems"]
    assert "truncated" in problem and "offset" in problem and "\n" not in problem


def test_impossible_record_length_pcap():
    rec = 24 + 3 * (16 + len(FRAME))  # start of the 4th record
    bad = bytearray(GOOD)
    bad[rec + 8:rec + 12] = (0x7FFFFFF0).to_bytes(4, "little")
    df = analyzer.read_packets(io.BytesIO(bytes(bad)))
    assert df["frame"].tolist() == [1, 2, 3]
    (problem,) = df.attrs["stats"]["problems"]
    assert f"offset {rec}" in problem and "impossible record length 2147483632" in problem


def test_impossible_block_length_pcapng():
    first = len(cw.shb() + cw.idb())
    blk = first + 2 * len(cw.epb(FRAME, 0))
    bad = bytearray(GOOD_NG)
    bad[blk + 4:blk + 8] = (13).to_bytes(4, "little")  # not a multiple of 4
    df = analyzer.read_packets(io.BytesIO(bytes(bad)))
    assert df["frame"].tolist() == [1, 2]
    (problem,) = df.attrs["stats"]["problems"]
    assert f"offset {blk}" in problem and "impossible block length" in problem


def test_cli_bad_input_exit_codes(tmp_path, capsys):
    from analyzer.commands.cli import main
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"\x00" * 100)
    assert main(["analyze", str(junk), "-o", str(tmp_path / "o1"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "junk.pcap" in err[0] and "not a pcap or pcapng file" in err[0]
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(GOOD[:-7])
    assert main(["analyze", str(cut), "-o", str(tmp_path / "o2"), "-q"]) == 1
    assert (tmp_path / "o2" / "connections.csv").exists()  # what could be read is reported
    assert main(["analyze", "--no-such-option"]) == 2


def _check_never_crashes(data: bytes) -> None:
    try:
        df = analyzer.read_packets(io.BytesIO(data))
    except CaptureError as exc:
        assert "\n" not in str(exc)
        return
    stats = df.attrs["stats"]
    assert len(df) <= stats["frames"]
    assert df["frame"].is_monotonic_increasing
    assert all("\n" not in p for p in stats["problems"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_captures_never_crash(data):
    """Property: random byte flips and cuts of a capture give rows or a one-line error, nothing else."""
    base = bytearray(data.draw(st.sampled_from([GOOD, GOOD_NG, _frag_capture()])))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    _check_never_crashes(bytes(base[:cut]))


def _frag_capture() -> bytes:
    from scapy.layers.inet import fragment
    whole = IP(src="10.0.0.1", dst="10.0.0.2", id=1) / TCP() / (b"z" * 600)
    return cw.pcap([(k, bytes(Ether() / f)) for k, f in enumerate(fragment(whole, 200))])


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/captures/real is absent (it ships with the dev workspace)")
@pytest.mark.parametrize("name", sorted(n for n in os.listdir(REAL) if n.endswith((".pcap", ".pcapng")))
                         if REAL.is_dir() else [])
def test_mutation_of_real_captures(name):
    """Deterministic mutations of each real capture: cuts and overwritten header fields."""
    raw = (REAL / name).read_bytes()
    import random
    rng = random.Random(name)
    for _ in range(25):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 20)):
            p = rng.randrange(len(b))
            b[p] = rng.randrange(256)
        _check_never_crashes(bytes(b[:rng.randint(0, len(b))]))
