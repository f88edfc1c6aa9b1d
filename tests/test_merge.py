"""One trace from many files (``analyze --merge``) and a capture from a pipe (``analyze -``).

The differential tests cut real captures into parts with editcap and check that the merged parts give
the tables of the whole file, byte for byte but for the capture columns; the order rule is checked
against a plain k-way merge written here and against mergecap itself.
"""
from __future__ import annotations

import ctypes.util
import gzip
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

import analyzer
from analyzer import schema
from analyzer.commands.cli import main
from analyzer.report import read_table
from analyzer.sources.merge import FrameMap, natural_key
from tests import capwrite as cw

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "captures" / "real"
TABLES = ("connections", "handshakes", "retransmissions", "packets")
MACS = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # explicit: scapy would look them up on the network
T0 = 1_700_000_000_000_000_000


def real_captures() -> list[Path]:
    if not REAL.is_dir():
        pytest.skip(f"real captures not found at {REAL} (they live outside the repository, in "
                    "../shared/captures/real); skipping the differential merge tests")
    return sorted(p for p in REAL.iterdir() if p.suffix in (".pcap", ".pcapng"))


def need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian package {'tcpdump' if tool == 'tcpdump' else 'wireshark-common'})")


def frame(sport: int, seq: int, flags: str = "PA", payload: bytes = b"x" * 10) -> bytes:
    return bytes(Ether(**MACS) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=80, seq=seq, flags=flags)
                 / payload)


def analyze_cli(args: list[str], out: Path) -> int:
    return main(["analyze", *map(str, args), "-o", str(out), "-q", "--packets"])


def without_capture_columns(path: Path) -> bytes:
    """A written CSV table without its last two columns (capture, capture_frame), as bytes."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(df.columns[-2:]) == ["capture", "capture_frame"]
    lines = path.read_bytes().splitlines(keepends=True)
    return b"".join(ln.rsplit(b",", 2)[0] + b"\n" for ln in lines)


def cut(capture: Path, parts: int, folder: Path, fmt: str | None = None) -> list[Path]:
    """``capture`` cut into ``parts`` files of equal frame counts by ``editcap -c``, in order."""
    frames = analyzer.read_packets(capture).attrs["stats"]["frames"]
    folder.mkdir()
    args = ["editcap", "-c", str(math.ceil(frames / parts))] + (["-F", fmt] if fmt else [])
    subprocess.run([*args, str(capture), str(folder / f"part{capture.suffix}")], check=True, capture_output=True)
    return sorted(folder.iterdir(), key=lambda p: natural_key(p.name))


# -- a capture cut into parts, merged again, is the whole capture --------------------------------------------
def _cases() -> list:
    if not REAL.is_dir():
        return [pytest.param(None, None, id="no-real-captures")]
    caps = sorted(p.name for p in REAL.iterdir() if p.suffix in (".pcap", ".pcapng"))
    # every capture in its own format, and the pcap ones again as pcapng parts
    return [pytest.param(n, None, id=n) for n in caps] + \
        [pytest.param(n, "pcapng", id=f"{n}-as-pcapng") for n in caps if n.endswith(".pcap")][:6]


@pytest.mark.parametrize("name,fmt", _cases())
def test_parts_cut_by_editcap_merge_to_the_whole_capture(tmp_path, name, fmt):
    need("editcap")
    real_captures()
    capture = REAL / name
    parts = cut(capture, 5, tmp_path / "parts", fmt)
    assert analyze_cli(["--merge", *parts], tmp_path / "merged") == analyze_cli([capture], tmp_path / "whole") == 0
    for table in TABLES:
        whole = (tmp_path / "whole" / f"{table}.csv").read_bytes()
        assert without_capture_columns(tmp_path / "merged" / f"{table}.csv") == whole, table
    # each row names the part holding its frame, and its number there (the parts follow one another)
    packets = read_table(tmp_path / "merged" / "packets.csv", "packets")
    sizes = [analyzer.read_packets(p).attrs["stats"]["frames"] for p in parts]
    first = dict(zip(map(str, parts), np.cumsum([0] + sizes[:-1]).tolist()))
    assert (packets["capture"].astype(str).map(first) + packets["capture_frame"] == packets["frame"]).all()


def test_a_folder_is_its_capture_files_in_natural_order(tmp_path):
    """A rotated set as tcpdump -C names it (t, t1, t2 ... t10: not alphabetical), with a file that is not a
    capture and a gzip part: the folder merges to the whole trace, and the mapping is one run per part."""
    frames = [(T0 + k * 1_000_000, frame(1000 + k % 3, k)) for k in range(24)]
    ring = tmp_path / "ring"
    ring.mkdir()
    names = ["t"] + [f"t{k}" for k in range(1, 12)]
    for k, name in enumerate(names):
        data = cw.pcap(frames[2 * k:2 * k + 2], nanos=True)
        (ring / name).write_bytes(gzip.compress(data) if k == 5 else data)
    (ring / "README.txt").write_text("not a capture\n")
    (ring / "sub").mkdir()
    reader = analyzer.iter_packets(ring, merge=True)
    df = pd.concat(list(reader))
    assert reader.captures == [str(ring / n) for n in names]
    assert df["ts_ns"].tolist() == [t for t, _ in frames] and df["frame"].tolist() == list(range(1, 25))
    assert df["capture_frame"].tolist() == [1, 2] * 12
    assert len(reader.frame_map) == 12


def test_a_rotated_set_is_read_a_file_or_two_at_a_time(tmp_path):
    """1,100 parts (more than the common limit of 1,024 open files): each is opened when the merge reaches
    it and closed at its end, so memory and open files do not grow with the number of parts."""
    ring = tmp_path / "ring"
    ring.mkdir()
    for k in range(1100):
        (ring / f"t{k}").write_bytes(cw.pcap([(T0 + (3 * k + j) * 1000, frame(1000, 3 * k + j)) for j in range(3)]))
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = fds()
    most, frames = 0, 0
    for df in analyzer.iter_packets(ring, batch_size=50, merge=True):
        most = max(most, fds() - before)
        frames += len(df)
        assert (df["frame"] == df["capture_frame"] + 3 * df["capture"].astype(str).str.rsplit("t", n=1).str[1]
                .astype(int)).all()
    assert frames == 3300 and most <= 2


def kway(times: list[list[int]]) -> list[tuple[int, int]]:
    """The oracle: repeatedly take the file whose next frame is earliest, the first file on a tie."""
    at = [0] * len(times)
    out = []
    while True:
        heads = [(ts[at[i]], i) for i, ts in enumerate(times) if at[i] < len(ts)]
        if not heads:
            return out
        _, i = min(heads)
        at[i] += 1
        out.append((i, at[i]))


@pytest.mark.parametrize("batch_size", [1, 2, 7, 1000])
def test_order_is_the_k_way_merge_ties_to_the_first_file(tmp_path, batch_size):
    """Interleaved files, equal times across files and times going back inside a file: the order is the
    k-way merge's, whatever the batch size; frame numbers continue across files."""
    rng = np.random.default_rng(5)
    times = [sorted(rng.integers(0, 40, 30).tolist()), rng.integers(0, 40, 25).tolist(),
             sorted(rng.integers(10, 20, 10).tolist())]
    paths = []
    for k, ts in enumerate(times):
        p = tmp_path / f"f{k}.pcap"
        p.write_bytes(cw.pcap([(T0 + t * 1000, frame(2000 + k, j)) for j, t in enumerate(ts)], nanos=True))
        paths.append(p)
    df = pd.concat(list(analyzer.iter_packets(paths, batch_size=batch_size, merge=True)))
    want = kway(times)
    assert list(zip(df["capture"].map({str(p): k for k, p in enumerate(paths)}), df["capture_frame"])) == want
    assert df["frame"].tolist() == list(range(1, len(want) + 1))
    assert (df["sport"] - 2000).tolist() == [i for i, _ in want]


def test_order_equals_mergecap(tmp_path):
    """Two real captures moved into the same minute (editcap -t), one with times going back: our merged
    packet table is the one of mergecap's output, frame by frame (no equal times across the two files)."""
    need("mergecap")
    need("editcap")
    real_captures()
    a, b = REAL / "zeek_ipv6-http-atomic-frag.pcap", REAL / "ndpi_google_ssl.pcap"
    ta, tb = (analyzer.read_packets(p)["ts_ns"] for p in (a, b))
    shifted = tmp_path / "b.pcap"
    shift = (int(ta.iloc[0]) - int(tb.iloc[0])) / 1e9 + 0.0123457
    subprocess.run(["editcap", "-t", f"{shift:.6f}", str(b), str(shifted)], check=True, capture_output=True)
    merged = tmp_path / "mergecap.pcapng"
    subprocess.run(["mergecap", "-w", str(merged), str(a), str(shifted)], check=True, capture_output=True)
    ours = analyzer.read_packets([a, shifted], merge=True)
    theirs = analyzer.read_packets(merged)
    assert not set(analyzer.read_packets(a)["ts_ns"]) & set(analyzer.read_packets(shifted)["ts_ns"])
    assert (ours["capture"] != ours["capture"].shift()).sum() > 4  # interleaved, not one file after the other
    assert not ours["ts_ns"].is_monotonic_increasing  # times going back in the first file: kept in its order
    cols = [c for c in schema.PACKET_COLUMN_NAMES if c != "interface"]  # mergecap numbers its interfaces anew
    pd.testing.assert_frame_equal(ours[cols].astype({"src": str, "dst": str}),
                                  theirs[cols].astype({"src": str, "dst": str}))


def test_link_types_resolutions_and_formats_mix(tmp_path):
    """pcap (µs, Ethernet), pcap (ns, big-endian, raw IP), pcapng (two interfaces: Linux SLL and Ethernet,
    ms and ns clocks) and a gzip of one: each frame decodes as in its own file, in time order."""
    def ip(k):
        return bytes(IP(src="10.9.0.1", dst="10.9.0.2") / TCP(sport=3000 + k, dport=22, seq=k) / b"abc")
    sll = lambda k: b"\x00\x00\x00\x01\x00\x06" + b"\x02" * 6 + b"\x00\x00\x08\x00" + ip(k)  # noqa: E731
    files = {
        "a.pcap": cw.pcap([(T0 + 1_000 * k, bytes(Ether(**MACS) / IP(ip(k)))) for k in range(0, 12, 3)]),
        "b.pcap": cw.pcap([(T0 + 1_000 * k + 1, ip(k)) for k in range(1, 12, 3)], linktype=101, big=True,
                          nanos=True),
        "c.pcapng.gz": gzip.compress(cw.shb() + cw.idb(113, tsresol=6) + cw.idb(1, tsresol=9)
                                     + cw.epb(sll(2), T0 // 1000 + 2) + cw.epb(bytes(Ether(**MACS) / IP(ip(5))),
                                                                              T0 + 5_000 + 2, iface=1)),
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    merged = analyzer.read_packets(paths, merge=True)
    alone = pd.concat([analyzer.read_packets(p).assign(capture=str(p), capture_frame=lambda d: d["frame"])
                       for p in paths], ignore_index=True)
    alone = alone.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    assert merged["sport"].tolist() == [3000 + k for k in (0, 1, 2, 3, 4, 5, 6, 7, 9, 10)]
    assert merged["frame"].tolist() == list(range(1, 11))
    cols = [c for c in merged.columns if c != "frame"]
    pd.testing.assert_frame_equal(merged[cols].astype({"src": str, "dst": str, "capture": str}),
                                  alone[cols].astype({"src": str, "dst": str, "capture": str}))


@pytest.mark.skipif(ctypes.util.find_library("pcap") is None,
                    reason="libpcap not found (Debian: apt-get install libpcap0.8)")
def test_filter_on_a_merge_of_both_byte_orders(tmp_path):
    """BSD loopback headers are in the capturing host's byte order: a filter on a merge of a little- and a
    big-endian file keeps the same frames as on each file; frame numbers are the merged trace's."""
    def null(big: bool, k: int, port: int) -> bytes:
        af = (2).to_bytes(4, "big" if big else "little")  # AF_INET
        return af + bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=7000 + k, dport=port, seq=k))
    paths = []
    for b, big in enumerate((False, True)):
        p = tmp_path / f"{'be' if big else 'le'}.pcap"
        p.write_bytes(cw.pcap([(T0 + (2 * k + b) * 1000, null(big, 2 * k + b, 80 + k % 2)) for k in range(6)],
                              linktype=0, big=big))
        paths.append(p)
    merged = analyzer.read_packets(paths, merge=True, bpf="tcp dst port 80")
    assert merged["sport"].tolist() == [7000, 7001, 7004, 7005, 7008, 7009]
    assert merged["frame"].tolist() == [1, 2, 5, 6, 9, 10]
    assert merged["capture_frame"].tolist() == [1, 1, 3, 3, 5, 5]


# -- bad input --------------------------------------------------------------------------------------------------
def test_a_damaged_part_is_one_line_and_the_others_are_kept(tmp_path, capsys):
    """The middle part is cut inside a record: one line naming it and the offset, exit 1 as for one
    damaged file, and every frame of the other parts (and those before the damage) is analyzed."""
    parts = []
    for k in range(3):
        data = cw.pcap([(T0 + (10 * k + j) * 1_000_000, frame(4000 + k, j, "S" if j == 0 else "PA"))
                        for j in range(10)])
        if k == 1:
            data = data[:-20]
        parts.append(tmp_path / f"p{k}.pcap")
        parts[-1].write_bytes(data)
    one = main(["analyze", str(parts[1]), "-o", str(tmp_path / "alone"), "-q"])
    single = capsys.readouterr().err
    assert main(["analyze", "--merge", *map(str, parts), "-o", str(tmp_path / "out"), "-q", "--packets"]) == one == 1
    err = capsys.readouterr().err
    assert err == single and err.count("\n") == 1
    assert str(parts[1]) in err and "offset" in err and "truncated record" in err
    packets = read_table(tmp_path / "out" / "packets.csv", "packets")
    assert packets.groupby("capture")["capture_frame"].max().to_dict() == {str(parts[0]): 10, str(parts[1]): 9,
                                                                          str(parts[2]): 10}
    assert len(read_table(tmp_path / "out" / "connections.csv", "connections")) == 3


def test_a_part_that_is_not_a_capture_or_missing_is_one_line_each(tmp_path, capsys):
    good = tmp_path / "good.pcap"
    good.write_bytes(cw.pcap([(T0, frame(1, 1, "S"))]))
    junk = tmp_path / "junk.pcap"
    junk.write_text("not a capture\n")
    assert main(["analyze", "--merge", str(good), str(junk), str(tmp_path / "gone.pcap"), "-o",
                 str(tmp_path / "out"), "-q"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"tcp-analyzer: {junk} at offset 0: not a pcap or pcapng file (magic 6e6f7420)",
                   f"tcp-analyzer: {tmp_path / 'gone.pcap'}: cannot open: No such file or directory"]
    assert len(read_table(tmp_path / "out" / "handshakes.csv", "handshakes")) == 1


@pytest.mark.parametrize("make", ["empty", "no-capture"])
def test_a_folder_without_captures_is_a_usage_error(tmp_path, capsys, make):
    folder = tmp_path / "ring"
    folder.mkdir()
    if make == "no-capture":
        (folder / "notes.txt").write_text("hello")
        (folder / "x.pcap").write_bytes(b"\x1f\x8b" + b"not really gzip")
    assert main(["analyze", "--merge", str(folder), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"Error: {folder}: no capture file in this folder (pcap, pcapng or gzip of either)"


def test_a_file_given_twice_or_another_engine_is_a_usage_error(tmp_path, capsys):
    p = tmp_path / "a.pcap"
    p.write_bytes(cw.pcap([(T0, frame(1, 1))]))
    assert main(["analyze", "--merge", str(p), "--engine", "pyshark", "-o", str(tmp_path / "o")]) == 2
    assert "--merge and - (standard input) work with the native engine" in capsys.readouterr().err
    (tmp_path / "b.pcap").symlink_to(p)
    assert main(["analyze", "--merge", str(p), str(tmp_path / "b.pcap"), "-o", str(tmp_path / "o")]) == 2
    assert f"{tmp_path / 'b.pcap'}: given twice (as {p})" in capsys.readouterr().err


# -- the API and the mapping ---------------------------------------------------------------------------------------
def test_api_merge_report_has_the_capture_columns_in_every_format(tmp_path):
    parts = [tmp_path / f"p{k}.pcap" for k in range(2)]
    for k, p in enumerate(parts):  # one connection whose handshake is in the first file, its resend in the second
        p.write_bytes(cw.pcap([(T0, frame(5000, 0, "S", b"")), (T0 + 10**7, frame(5000, 1))] if k == 0 else
                              [(T0 + 3 * 10**8, frame(5000, 1))]))
    report = analyzer.analyze(parts, merge=True, packets=True)
    assert report.captures == [str(p) for p in parts]
    (row,) = report.retransmissions.itertuples()
    assert (row.frame, row.capture, row.capture_frame) == (3, str(parts[1]), 1)
    assert report.connections[["capture", "capture_frame"]].values.tolist() == [[str(parts[0]), 1]]
    assert report.handshakes[["capture", "capture_frame"]].values.tolist() == [[str(parts[0]), 1]]
    assert report.summary()["captures"] == [str(p) for p in parts]
    for fmt, suffix in (("csv", "csv"), ("parquet", "parquet"), ("json", "jsonl")):
        report.write(tmp_path / fmt, format=fmt)
        for name in TABLES:
            got = read_table(tmp_path / fmt / f"{name}.{suffix}", name)
            assert list(got.columns[-2:]) == ["capture", "capture_frame"], (fmt, name)
            assert got["capture"].astype(str).tolist() == getattr(report, name)["capture"].astype(str).tolist()


def test_frame_map_runs_and_lookups():
    m = FrameMap()
    m.add(1, np.array([0, 0, 0, 1, 1]), np.array([1, 2, 3, 1, 2]))
    m.add(6, np.array([1, 1, 0]), np.array([3, 4, 4]))  # continues the last run, then a new one
    assert len(m) == 3
    files, frames = m.locate(np.array([8, 1, 3, 4, 6, 7]))
    assert files.tolist() == [0, 0, 0, 1, 1, 1] and frames.tolist() == [4, 1, 3, 1, 3, 4]


def test_frame_map_of_a_rotated_set_stays_small():
    """20 million frames in 100 parts: 100 runs, 18 bytes each, whatever the batches."""
    m = FrameMap()
    per_part, batch = 200_000, 65_536
    done = 0
    while done < 100 * per_part:
        n = min(batch, 100 * per_part - done)
        idx = np.arange(done, done + n)
        m.add(done + 1, idx // per_part, idx % per_part + 1)
        done += n
    assert len(m) == 100 and m._runs.nbytes < 64 * 1024
    assert [x.tolist() for x in m.locate(np.array([20_000_000, 200_001]))] == [[99, 1], [200_000, 1]]


# -- standard input --------------------------------------------------------------------------------------------------
def _shell(cmd: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


STDIN_CASES = [pytest.param(ROOT / "captures" / "demo.pcap", "--nano", id="demo.pcap-ns")] + (
    [pytest.param(REAL / n, "", id=n) for n in ("zeek_206_example_b.pcap", "ndpi_skype.pcap")] if REAL.is_dir() else [])


@pytest.mark.parametrize("capture,precision", STDIN_CASES)
def test_stdin_from_tcpdump_equals_the_file(tmp_path, capture, precision):
    """``tcpdump -r X -w - | tcp-analyzer analyze -``: the same tables, byte for byte, as ``analyze X``
    (``--nano`` for a nanosecond capture: tcpdump writes microseconds otherwise)."""
    need("tcpdump")
    py = sys.executable
    whole = _shell(f"{py} -m analyzer analyze {capture} -o whole -q --packets", tmp_path)
    piped = _shell(f"tcpdump {precision} -r {capture} -w - 2>/dev/null | {py} -m analyzer analyze - -o piped -q "
                   "--packets", tmp_path)
    assert whole.returncode == piped.returncode == 0, piped.stderr
    for table in TABLES:
        assert (tmp_path / "piped" / f"{table}.csv").read_bytes() == (tmp_path / "whole" / f"{table}.csv").read_bytes()


def test_stdin_gzip_stream_and_folder_name(tmp_path):
    """``zcat`` or the gzip bytes themselves on standard input; beside a file, its folder is ``stdin``."""
    capture = ROOT / "captures" / "demo.pcap"
    (tmp_path / "demo.pcap.gz").write_bytes(gzip.compress(capture.read_bytes()))
    py = sys.executable
    assert _shell(f"{py} -m analyzer analyze {capture} -o whole -q", tmp_path).returncode == 0
    res = _shell(f"zcat demo.pcap.gz | {py} -m analyzer analyze - -o z -q", tmp_path)
    assert res.returncode == 0, res.stderr
    res = _shell(f"{py} -m analyzer analyze {capture} - -o two -q < demo.pcap.gz", tmp_path)
    assert res.returncode == 0, res.stderr
    for table in ("connections", "handshakes", "retransmissions"):
        want = (tmp_path / "whole" / f"{table}.csv").read_bytes()
        assert (tmp_path / "z" / f"{table}.csv").read_bytes() == want
        assert (tmp_path / "two" / "stdin" / f"{table}.csv").read_bytes() == want
        assert (tmp_path / "two" / "demo.pcap" / f"{table}.csv").read_bytes() == want


def test_stdin_that_is_not_a_capture_is_one_line(tmp_path, capsys):
    res = _shell(f"echo hello | {sys.executable} -m analyzer analyze - -o out", tmp_path)
    assert res.returncode == 1
    assert res.stderr == "tcp-analyzer: stdin at offset 0: not a pcap or pcapng file (magic 68656c6c)\n"
    res = _shell(f"{sys.executable} -m analyzer analyze - -o out < /dev/null", tmp_path)
    assert res.returncode == 1
    assert res.stderr == "tcp-analyzer: stdin at offset 0: not a capture file (empty or shorter than a file header)\n"
    assert main(["analyze", "-", "-", "-o", str(tmp_path / "o")]) == 2
    assert "can be read once" in capsys.readouterr().err
