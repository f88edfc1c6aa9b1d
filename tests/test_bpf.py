"""``analyze -f BPF`` and ``--start/--end``: the frames kept are tcpdump's, and keep their frame numbers.

The oracles: tcpdump itself (``tcpdump -r FILE -w - FILTER``) on the real captures, for filters of every
kind; libpcap's own interpreter (``pcap_offline_filter``) for hand-written programs that use the
instructions libpcap's compiler rarely emits (scratch memory, ``ja``, ``txa``, ``ret a/x``, division by
a zero X, shifts past 31, out-of-bounds indexed loads).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.l2 import Ether

import analyzer
from analyzer.commands.cli import main
from analyzer.decode import TimeBound
from analyzer.errors import AnalyzerError
from analyzer.sources.bpf import BPF_MEMWORDS, BpfFilter, run_bpf
from analyzer.sources.files import FrameSource
from analyzer.sources.frames import FrameBatch

from .tcpbuild import MS, Capture

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "captures" / "real"
DEMO = ROOT / "captures" / "demo.pcap"
TCPDUMP = shutil.which("tcpdump")
# filters are compiled by libpcap (as tcpdump -r does): installed by `make` as root
needs_libpcap = pytest.mark.skipif(ctypes.util.find_library("pcap") is None,
                                   reason="libpcap not found (Debian: apt-get install libpcap0.8)")

FILTERS = [
    "tcp", "ip6", "vlan", "vlan and tcp", "host {host}", "src host {host} and tcp", "port {port}",
    "tcp dst port {port}", "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0 and not src port {port}",
    "net 10.0.0.0/8 or net 192.168.0.0/16 or net 172.16.0.0/12", "less 100", "greater 1000",
    "ip[2:2] - ((ip[0]&0xf)<<2) - ((tcp[12]&0xf0)>>2) > 0",    # TCP payload: scratch memory, indexed loads
    "tcp[(tcp[12] >> 4) * 4] = 0x16",                           # a TLS record: loads past short frames
    "len % 7 = 3 or len / 3 > 400", "(len * 3) ^ 0x55 > 2000", "len - 60 < 20 and len >> 2 > 10",
    "(-len) & 0xff < 128", "ip[8] > 60 and ip[8] < 128", "icmp or udp", "ip6 and tcp[13] & 0x12 = 0x12",
    "ip[6:2] & 0x1fff != 0 or ip[6] & 0x20 != 0", "ether[0] & 1 = 0",
]


def real_captures() -> list:
    if not REAL.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"real captures not found in {REAL}"))]
    return sorted(REAL.glob("*.pcap*"))


def frames_of(source, expr: str | None = None) -> list[tuple[int, bytes]]:
    """(ts_ns, bytes) of every frame of a capture (a path or bytes), or of those ``expr`` keeps."""
    src = FrameSource(io.BytesIO(source) if isinstance(source, bytes) else source)
    bpf = BpfFilter(expr) if expr else None
    out = []
    for batch in src.batches(1000):
        big = src.pcap_header.big_endian if src.format == "pcap" else src.big
        keep = bpf.match(batch, big) if bpf else np.ones(len(batch), dtype=bool)
        for i in np.flatnonzero(keep).tolist():
            o = int(batch.offsets[i])
            out.append((int(batch.ts_ns[i]), bytes(batch.data[o:o + int(batch.caplens[i])])))
    return out


@needs_libpcap
@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed (Debian: apt-get install tcpdump)")
@pytest.mark.parametrize("path", real_captures(), ids=lambda p: p.name if p else "none")
def test_kept_frames_are_tcpdumps(path):
    first = analyzer.read_packets(path).iloc[0]
    for template in FILTERS:
        expr = template.format(host=first["src"], port=first["dport"])
        res = subprocess.run([TCPDUMP, "-r", str(path), "--time-stamp-precision=nano", "-w", "-", expr],
                             capture_output=True, timeout=60)
        if res.returncode:  # libpcap cannot express it for this link type, or proved it rejects all: an error
            with pytest.raises(AnalyzerError, match="bad BPF filter"):
                frames_of(path, expr)
            continue
        theirs = frames_of(res.stdout)
        ours = frames_of(path, expr)
        assert ours == theirs, f"{expr}: we keep {len(ours)} frames, tcpdump {len(theirs)}"


# -- the interpreter against libpcap's own, instruction by instruction ---------------------------------
LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_W_LEN, LD_IMM, LD_MEM, LD_B_IND = 0x20, 0x28, 0x30, 0x80, 0x00, 0x60, 0x50
LDX_IMM, LDX_MEM, LDX_LEN, LDX_MSH, ST, STX = 0x01, 0x61, 0x81, 0xB1, 0x02, 0x03
ALU = {"add": 0x04, "sub": 0x14, "mul": 0x24, "div": 0x34, "or": 0x44, "and": 0x54, "lsh": 0x64, "rsh": 0x74,
       "neg": 0x84, "mod": 0x94, "xor": 0xA4}
X = 0x08
JA, JEQ, JGT, JGE, JSET = 0x05, 0x15, 0x25, 0x35, 0x45
RET_K, RET_A, RET_X, TAX, TXA = 0x06, 0x16, 0x0E, 0x07, 0x87

PROGRAMS = {
    "scratch memory, txa, ret a": [(LD_W_LEN, 0, 0, 0), (ST, 0, 0, 3), (LDX_MEM, 0, 0, 3), (TXA, 0, 0, 0),
                                   (ALU["sub"], 0, 0, 71), (RET_A, 0, 0, 0)],
    "stx, ld mem, tax": [(LDX_LEN, 0, 0, 0), (STX, 0, 0, 15), (LD_MEM, 0, 0, 15), (TAX, 0, 0, 0),
                         (ALU["and"], 0, 0, 1), (JEQ, 0, 2, 1), (TXA, 0, 0, 0), (RET_A, 0, 0, 0), (RET_K, 0, 0, 0)],
    "ja": [(JA, 0, 0, 1), (RET_K, 0, 0, 0), (LD_B_ABS, 0, 0, 0), (JSET, 0, 1, 0x80), (RET_K, 0, 0, 1),
           (RET_K, 0, 0, 0)],
    "div by a zero x": [(LDX_IMM, 0, 0, 0), (LD_W_LEN, 0, 0, 0), (ALU["div"] | X, 0, 0, 0), (RET_K, 0, 0, 1)],
    "mod by a zero x": [(LDX_IMM, 0, 0, 0), (LD_W_LEN, 0, 0, 0), (ALU["mod"] | X, 0, 0, 0), (RET_K, 0, 0, 1)],
    "div and mod": [(LD_W_LEN, 0, 0, 0), (ALU["div"], 0, 0, 3), (ALU["mod"], 0, 0, 7), (JGE, 0, 1, 4),
                    (RET_K, 0, 0, 1), (RET_K, 0, 0, 0)],
    "shifts past 31": [(LDX_IMM, 0, 0, 40), (LD_IMM, 0, 0, 1), (ALU["lsh"] | X, 0, 0, 0), (RET_A, 0, 0, 0)],
    "right shift by x": [(LDX_IMM, 0, 0, 3), (LD_W_LEN, 0, 0, 0), (ALU["rsh"] | X, 0, 0, 0), (JGT, 0, 1, 8),
                         (RET_K, 0, 0, 1), (RET_K, 0, 0, 0)],
    "neg and wrap-around": [(LD_IMM, 0, 0, 1), (ALU["neg"], 0, 0, 0), (JEQ, 0, 3, 0xFFFFFFFF),
                            (LD_IMM, 0, 0, 0x10000), (ALU["mul"], 0, 0, 0x10000), (JEQ, 1, 0, 0), (RET_K, 0, 0, 0),
                            (RET_K, 0, 0, 1)],
    "indexed load out of bounds": [(LDX_IMM, 0, 0, 60), (LD_B_IND, 0, 0, 0), (RET_K, 0, 0, 1)],
    "word and half-word loads at the end": [(LD_W_ABS, 0, 0, 60), (ALU["xor"], 0, 0, 0xFF), (LD_H_ABS, 0, 0, 62),
                                            (ALU["or"], 0, 0, 1), (RET_A, 0, 0, 0)],
    "msh, compare with x": [(LDX_MSH, 0, 0, 14), (TXA, 0, 0, 0), (ALU["add"] | X, 0, 0, 0),
                            (ALU["mul"] | X, 0, 0, 0), (TAX, 0, 0, 0), (LD_IMM, 0, 0, 1600), (JGT | X, 0, 1, 0),
                            (RET_K, 0, 0, 1), (JSET | X, 0, 1, 0), (RET_K, 0, 0, 2), (RET_K, 0, 0, 0)],
}


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn))]


class _Header(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long), ("caplen", ctypes.c_uint32),
                ("len", ctypes.c_uint32)]


def libpcap_keeps(prog: list[tuple[int, int, int, int]], frame: bytes, wirelen: int) -> bool:
    lib = ctypes.CDLL(ctypes.util.find_library("pcap"))
    lib.pcap_offline_filter.restype = ctypes.c_int
    insns = (_Insn * len(prog))(*[_Insn(*i) for i in prog])
    header = _Header(0, 0, len(frame), wirelen)
    buf = ctypes.create_string_buffer(frame, len(frame))
    return bool(lib.pcap_offline_filter(ctypes.byref(_Program(len(prog), insns)), ctypes.byref(header), buf))


@pytest.fixture(scope="module")
def random_frames() -> FrameBatch:
    rng = np.random.default_rng(11)
    frames = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (0, 1, 14, 15, 40, 61, 63, 64, 65, 200, 1500)]
    return FrameBatch.from_frames(frames, [0] * len(frames), wirelens=[len(f) + 7 * (i % 3) for i, f in enumerate(frames)])


@needs_libpcap
@pytest.mark.parametrize("name", PROGRAMS)
def test_interpreter_matches_libpcaps(name, random_frames):
    prog = np.array(PROGRAMS[name], dtype=np.int64)
    b = random_frames
    keep = np.zeros(len(b), dtype=bool)
    run_bpf(prog, b.data, b.offsets, b.caplens, b.wirelens, np.arange(len(b)), np.empty(BPF_MEMWORDS, np.int64), keep)
    want = [libpcap_keeps(PROGRAMS[name], bytes(b.data[o:o + c]), int(w))
            for o, c, w in zip(b.offsets.tolist(), b.caplens.tolist(), b.wirelens.tolist())]
    assert keep.tolist() == want
    assert 0 < sum(want) < len(want) or name in ("div by a zero x", "mod by a zero x", "shifts past 31",
                                                 "neg and wrap-around")


@pytest.mark.parametrize("prog", [
    [(JA, 0, 0, 5), (RET_K, 0, 0, 1)],           # a jump past the end
    [(LD_MEM, 0, 0, 16), (RET_K, 0, 0, 1)],      # scratch word 16 does not exist
    [(0xFF, 0, 0, 0), (RET_K, 0, 0, 1)],         # no such instruction
    [(LD_IMM, 0, 0, 1)],                         # falls off the end without ret
    [(LDX_LEN, 0, 0, 0), (RET_X, 0, 0, 0)],      # "ret x": not classic BPF (libpcap aborts, Linux refuses it)
])
def test_invalid_programs_reject_every_frame(prog, random_frames):
    b = random_frames
    keep = np.ones(len(b), dtype=bool)
    run_bpf(np.array(prog, dtype=np.int64), b.data, b.offsets, b.caplens, b.wirelens, np.arange(len(b)),
            np.empty(BPF_MEMWORDS, np.int64), keep)
    assert not keep.any()


# -- through the reader and the command line: frame numbers stay the file's -----------------------------
@needs_libpcap
def test_filtered_rows_keep_the_files_frame_numbers():
    full = analyzer.read_packets(DEMO)
    syn = analyzer.read_packets(DEMO, bpf="tcp[tcpflags] & tcp-syn != 0")
    want = full[(full["flags"] & 0x02) != 0].reset_index(drop=True)
    assert syn["frame"].tolist() == want["frame"].tolist() and len(syn) == 10
    assert syn.drop(columns=["src", "dst"]).equals(want.drop(columns=["src", "dst"]))
    assert syn.attrs["stats"]["filtered_out"] == len(full) - 10
    batched = [df for df in analyzer.iter_packets(DEMO, batch_size=7, bpf="tcp[tcpflags] & tcp-syn != 0")]
    assert sum((b["frame"].tolist() for b in batched), []) == want["frame"].tolist()


def test_time_window_relative_and_absolute():
    full = analyzer.read_packets(DEMO)
    first = int(full["ts_ns"].iloc[0])
    rel = analyzer.read_packets(DEMO, start="+0.5", end="+1.25")
    ns = full["ts_ns"]
    assert rel["frame"].tolist() == full[(ns >= first + 500_000_000) & (ns < first + 1_250_000_000)]["frame"].tolist()
    at = int(ns.iloc[40])
    absolute = analyzer.read_packets(DEMO, start=f"{at // 10**9}.{at % 10**9:09d}")
    assert absolute["frame"].tolist() == full[ns >= at]["frame"].tolist() and len(absolute) < len(full)
    assert TimeBound.parse("+5") == TimeBound(5_000_000_000, True)
    assert TimeBound.parse("1700000000.000000001") == TimeBound(1_700_000_000_000_000_001, False)


@needs_libpcap
def test_reassembled_fragments_keep_their_frame_number(tmp_path):
    """A UDP frame the filter drops comes first: the reassembled segment is still frame 3, its last fragment."""
    from scapy.utils import wrpcap

    udp = Ether() / IP(src="10.0.0.9", dst="10.0.0.8") / UDP(sport=53, dport=53)
    seg = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", id=7) / TCP(sport=1000, dport=80, flags="PA") / (b"x" * 300)
    frags = [Ether() / f for f in fragment(seg[IP], fragsize=200)]
    wrpcap(str(tmp_path / "frag.pcap"), [udp, *frags])
    df = analyzer.read_packets(tmp_path / "frag.pcap", bpf="not udp")
    assert df["frame"].tolist() == [3] and bool(df["fragmented"].iloc[0])


@needs_libpcap
def test_analyze_cli_filter_and_window(tmp_path, capsys):
    cap = Capture()
    for port in (40001, 40002, 40003):
        cap.flow(cport=port).handshake(dt=MS)
        cap.add(Ether() / IP(src="10.0.0.9", dst="10.0.0.8") / UDP(), dt=1.0)
    cap.write(tmp_path / "three.pcap")
    # frames: 1-3 stream 40001, 4 UDP (+1.012 s after frame 1), 5-7 stream 40002, 8 UDP, 9-11 stream 40003, 12 UDP
    assert main(["analyze", str(tmp_path / "three.pcap"), "-o", str(tmp_path / "out"), "-f", "not port 40001",
                 "--start", "+1.0125", "--json"]) == 0
    import json

    [summary] = json.loads(capsys.readouterr().out)
    assert summary["handshakes"] == {"established": 2} and summary["filtered_out_frames"] == 4
    hs = analyzer.report.read_table(tmp_path / "out" / "handshakes.csv", "handshakes")
    assert hs["syn_frame"].tolist() == [5, 9]  # the file's frame numbers


@pytest.mark.parametrize("args, message", [
    (["--start", "soon"], "'soon' is not a time"),
    (["--start", "+5", "--end", "+1"], "--start is after --end"),
    (["-f", "tcp", "--engine", "pyshark"], "-f, --start and --end work with the native engine"),
])
def test_analyze_bad_window_is_a_usage_error(tmp_path, capsys, args, message):
    assert main(["analyze", str(DEMO), "-o", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


@needs_libpcap
def test_analyze_bad_filter_is_one_line(tmp_path, capsys):
    assert main(["analyze", str(DEMO), "-o", str(tmp_path), "-f", "tcp[tcpflags"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tcp-analyzer: bad BPF filter 'tcp[tcpflags' for link type 1: ") and err.count("\n") == 1


def test_analyze_help_documents_filter_and_window(capsys):
    assert main(["analyze", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "tcpdump's syntax" in out and "+S for S seconds after the capture's first frame" in out


@needs_libpcap
@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump not installed (Debian: apt-get install tcpdump)")
def test_pcapng_mixing_link_types_is_filtered_per_link_type(tmp_path):
    """tcpdump cannot read a pcapng whose interfaces differ; the oracle is tcpdump on each link type's
    frames written as their own pcap, and our frames of each interface must be exactly those."""
    from . import capwrite as cw

    def v4(sport, dport, flags="A"):
        return bytes(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=dport, flags=flags))

    ips = [v4(1000, 80, "S"), v4(80, 1000, "SA"), v4(2000, 443), bytes(IP(src="10.0.0.3", dst="10.0.0.4") / UDP())]
    eth = [bytes(Ether() / IP(raw)) for raw in ips]
    ts = [1_700_000_000_000_000_000 + i * 1000 for i in range(len(ips))]
    blocks = cw.shb() + cw.idb(linktype=1, tsresol=9) + cw.idb(linktype=101, tsresol=9)
    for i in range(len(ips)):
        blocks += cw.epb(eth[i], ts[i], iface=0) + cw.epb(ips[i], ts[i] + 1, iface=1)
    (tmp_path / "mixed.pcapng").write_bytes(blocks)
    for expr in ("tcp port 80", "tcp[tcpflags] & tcp-syn != 0", "udp or port 443"):
        want = []
        for linktype, frames, delta in ((1, eth, 0), (101, ips, 1)):
            (tmp_path / "one.pcap").write_bytes(cw.pcap([(t + delta, f) for t, f in zip(ts, frames)], linktype=linktype,
                                                        nanos=True))
            res = subprocess.run([TCPDUMP, "-r", str(tmp_path / "one.pcap"), "--time-stamp-precision=nano", "-w", "-",
                                  expr], capture_output=True, timeout=60, check=True)
            want += frames_of(res.stdout)
        assert sorted(frames_of(tmp_path / "mixed.pcapng", expr)) == sorted(want), expr
        assert len(want) >= 2, expr
