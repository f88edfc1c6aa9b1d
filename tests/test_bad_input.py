"""Bad input: one clear line naming file, offset and problem; frames before the damage are kept;
never a traceback, a hang or unbounded memory."""
from __future__ import annotations

import errno
import gzip
import io
import os
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import analyzer
from analyzer.errors import CaptureError
from tests import capwrite as cw

MACS = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # explicit: scapy would look them up on the network
REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "captures" / "real"
FRAME = bytes(Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, seq=5) / (b"d" * 20))
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


def _mutation_bases() -> list[bytes]:
    """pcap, pcapng (odd clocks, interleaved interfaces), fragments, the link types beyond Ethernet, gzip."""
    from tests.test_link_layers import DECODED
    odd_clocks = cw.shb() + b"".join(cw.idb(1, tsresol=r, tsoffset=1 << 40) + cw.epb(FRAME, 1 << 63 | k, k)
                                     for k, r in enumerate([0, 28, 0x80 | 70]))
    link_types = [cw.pcap([(k, frame)], linktype=lt) for k, (lt, frame, _, _) in enumerate(DECODED.values())]
    plain = [GOOD, GOOD_NG, odd_clocks, _frag_capture(), *link_types[::4]]
    return plain + [gzip.compress(b, mtime=0) for b in plain[:3]]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_captures_never_crash(data):
    """Property: random byte flips and cuts of a capture give rows or a one-line error, nothing else.
    (tests/test_fuzz_inputs.py runs hundreds more through the whole pipeline.)"""
    base = bytearray(data.draw(st.sampled_from(MUTATION_BASES)))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(base) - 1))
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    _check_never_crashes(bytes(base[:cut]))


def _frag_capture() -> bytes:
    from scapy.layers.inet import fragment
    whole = IP(src="10.0.0.1", dst="10.0.0.2", id=1) / TCP() / (b"z" * 600)
    return cw.pcap([(k, bytes(Ether(**MACS) / f)) for k, f in enumerate(fragment(whole, 200))])


MUTATION_BASES = _mutation_bases()


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/captures/real is absent (it ships with the dev workspace)")
@pytest.mark.parametrize("name", sorted(n for n in os.listdir(REAL) if n.endswith((".pcap", ".pcapng")))
                         if REAL.is_dir() else [])
def test_mutation_of_real_captures(name):
    """Deterministic mutations of each real capture: cuts and overwritten header fields."""
    raw = (REAL / name).read_bytes()
    rng = random.Random(name)
    for _ in range(25):
        b = bytearray(raw)
        for _ in range(rng.randint(1, 20)):
            p = rng.randrange(len(b))
            b[p] = rng.randrange(256)
        _check_never_crashes(bytes(b[:rng.randint(0, len(b))]))


# -- gzip damage: every whole record zlib can give is kept, the damage is one line ---------------------
def _frames(n: int) -> bytes:
    """n FRAMEs whose last 20 bytes are random (seeded), so that the file does not compress to nothing."""
    rng = random.Random(n)
    return cw.pcap([(k * 1000, FRAME[:-20] + rng.randbytes(20)) for k in range(n)])


def _whole_records(data: bytes) -> int:
    """Records of a pcap (of FRAMEs) wholly inside ``data``."""
    return max(0, (len(data) - 24) // (16 + len(FRAME)))


def _inflate_prefix(gz: bytes) -> bytes:
    """What zlib decodes of ``gz`` before it stops (end of data or an error), fed byte by byte."""
    z, out = zlib.decompressobj(31), []
    for k in range(len(gz)):
        try:
            out.append(z.decompress(gz[k:k + 1]))
        except zlib.error:
            break
    return b"".join(out)


def test_gzip_missing_its_trailer_keeps_every_frame():
    """The last read used to be thrown away: 150,692 of 160,000 frames were kept."""
    data = _frames(20_000)
    df = analyzer.read_packets(io.BytesIO(gzip.compress(data)[:-8]))
    assert len(df) == 20_000
    (problem,) = df.attrs["stats"]["problems"]
    assert f"at offset {len(data)}: gzip data ends early" in problem


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.9])
def test_cut_gzip_keeps_what_zlib_gives(keep):
    """A short cut file used to be 'not a capture file'; now every whole record before the cut is read."""
    gz = gzip.compress(_frames(60))
    cut = gz[:int(len(gz) * keep)]
    df = analyzer.read_packets(io.BytesIO(cut))
    expect = _whole_records(_inflate_prefix(cut))
    assert expect > 0 and df["frame"].tolist() == list(range(1, expect + 1))
    (problem,) = df.attrs["stats"]["problems"]
    assert "gzip data ends early" in problem and "offset" in problem


def test_corrupt_deflate_data_keeps_frames_before_it():
    """A block with the reserved type (RFC 1951 BTYPE 11) after 700.5 records: zlib stops there."""
    data = _frames(2000)
    good = 24 + 700 * (16 + len(FRAME)) + 30
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    gz = z.compress(data[:good]) + z.flush(zlib.Z_FULL_FLUSH) + b"\x07" + z.compress(data[good:]) + z.flush()
    df = analyzer.read_packets(io.BytesIO(gz))
    assert df["frame"].tolist() == list(range(1, 701))
    (problem,) = df.attrs["stats"]["problems"]
    assert f"at offset {good}: gzip data damaged at compressed byte" in problem and "invalid block type" in problem


@pytest.mark.parametrize("where", [-8, -1], ids=["crc", "length"])
def test_gzip_failing_its_check_keeps_every_frame(where):
    gz = bytearray(gzip.compress(_frames(2000)))
    gz[where] ^= 0x55
    df = analyzer.read_packets(io.BytesIO(bytes(gz)))
    assert len(df) == 2000
    (problem,) = df.attrs["stats"]["problems"]
    assert "gzip data damaged at compressed byte" in problem and "check" in problem


def test_gzip_too_short_for_a_file_header_says_why():
    gz = gzip.compress(_frames(5))
    with pytest.raises(CaptureError, match="gzip data ends early") as exc:
        analyzer.read_packets(io.BytesIO(gz[:14]))
    assert "\n" not in str(exc.value)


def test_gzip_members_and_zero_padding_are_whole():
    data = _frames(30)
    df = analyzer.read_packets(io.BytesIO(gzip.compress(data[:1000]) + gzip.compress(data[1000:]) + b"\0" * 512))
    assert len(df) == 30 and df.attrs["stats"]["problems"] == []


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (Debian package tshark)")
def test_cut_gzip_frames_as_tshark(tmp_path):
    gz = gzip.compress(_frames(40))
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(gz[:len(gz) // 2])
    out = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True).stdout.split()
    assert analyzer.read_packets(path)["frame"].tolist() == [int(f) for f in out]


# -- unreadable files: one line, exit code 1, as a missing file ----------------------------------------
def test_directory_is_not_a_capture(tmp_path):
    with pytest.raises(CaptureError, match="cannot open: Is a directory") as exc:
        analyzer.read_packets(tmp_path)
    assert "\n" not in str(exc.value)


def test_unreadable_file(tmp_path, monkeypatch):
    """Permission denied (simulated: the tests run as root, who may read anything)."""
    from analyzer.sources import files

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files, "open", denied, raising=False)
    with pytest.raises(CaptureError, match="cannot open: Permission denied"):
        analyzer.read_packets(tmp_path / "secret.pcap")


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux /proc/self/mem (EIO at offset 0)")
def test_read_error_at_the_start_is_one_line(capsys, tmp_path):
    from analyzer.commands.cli import main
    with pytest.raises(CaptureError, match="/proc/self/mem at offset 0: cannot read: Input/output error"):
        analyzer.read_packets("/proc/self/mem")
    assert main(["analyze", "/proc/self/mem", "-o", str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Input/output error" in err[0]


class _FailingDisk(io.RawIOBase):
    """A file whose reads fail with EIO after ``good`` bytes."""

    def __init__(self, data: bytes, good: int):
        self.data, self.good, self.pos = data, good, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.pos >= self.good:
            raise OSError(errno.EIO, "Input/output error")
        n = min(len(b), self.good - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


@pytest.mark.parametrize("good", [10, 24 + 3 * (16 + len(FRAME)) + 5])
def test_read_error_keeps_frames_before_it(good):
    disk = _FailingDisk(GOOD, good)  # as a path is read: unbuffered
    if good < 24:
        with pytest.raises(CaptureError, match="at offset 10: read error: Input/output error"):
            analyzer.read_packets(disk)
        return
    df = analyzer.read_packets(disk)
    assert df["frame"].tolist() == [1, 2, 3]
    (problem,) = df.attrs["stats"]["problems"]  # the cut record is not reported again
    assert f"at offset {good}: read error: Input/output error" in problem
