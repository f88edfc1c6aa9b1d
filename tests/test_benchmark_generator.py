"""The benchmark capture generator (benchmarks/gen.py): deterministic, and its truth is the truth.

The benchmark and the cause-accuracy checks trust ``FILE.truth.csv``; these tests keep it honest on a
small file. The file is parsed here independently (``struct``, from the header formats), and the
generator's own record of the network (which packet reached whom, and when) is replayed to check what
the receivers' ACKs, SACKs and D-SACKs say: the stacks' fields must follow from what really happened.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import shutil
import struct
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMES = 20000
SEED = 11


def _load_gen():
    spec = importlib.util.spec_from_file_location("bench_gen", ROOT / "benchmarks" / "gen.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


gen = _load_gen()


# ----------------------------------------------------------------------------------------------
# An independent reader for the generated file
# ----------------------------------------------------------------------------------------------


@dataclass
class Frame:
    number: int
    ts_us: int
    raw: bytes
    v6: bool
    vlan: int | None
    ipid: int | None
    src: tuple
    dst: tuple
    seq: int
    ack: int
    flags: int
    plen: int
    tsval: int | None = None
    tsecr: int | None = None
    sack: list[tuple[int, int]] = field(default_factory=list)
    stream: int = -1
    c2s: bool = True


def _tcp_options(opts: bytes, fr: Frame) -> None:
    i = 0
    while i < len(opts):
        kind = opts[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        size = opts[i + 1]
        body = opts[i + 2 : i + size]
        if kind == 8:
            fr.tsval, fr.tsecr = struct.unpack(">II", body)
        elif kind == 5:
            fr.sack = [struct.unpack_from(">II", body, 8 * k) for k in range(len(body) // 8)]
        i += size


def read_frames(path: Path) -> list[Frame]:
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data, 0)
    assert magic == 0xA1B2C3D4 and linktype == 1
    out, off, streams = [], 24, {}
    while off < len(data):
        sec, usec, incl, orig = struct.unpack_from("<IIII", data, off)
        raw = data[off + 16 : off + 16 + incl]
        assert incl == orig == len(raw)
        off += 16 + incl
        etype = struct.unpack_from(">H", raw, 12)[0]
        vlan, l3 = None, 14
        if etype == 0x8100:
            vlan = struct.unpack_from(">H", raw, 14)[0] & 0x0FFF
            etype = struct.unpack_from(">H", raw, 16)[0]
            l3 = 18
        if etype == 0x0800:
            ihl = (raw[l3] & 0x0F) * 4
            total, ipid = struct.unpack_from(">HH", raw, l3 + 2)
            assert total == len(raw) - l3 and raw[l3 + 9] == 6
            src, dst, l4, v6 = raw[l3 + 12 : l3 + 16], raw[l3 + 16 : l3 + 20], l3 + ihl, False
        else:
            assert etype == 0x86DD and raw[l3 + 6] == 6
            assert struct.unpack_from(">H", raw, l3 + 4)[0] == len(raw) - l3 - 40
            ipid, src, dst, l4, v6 = None, raw[l3 + 8 : l3 + 24], raw[l3 + 24 : l3 + 40], l3 + 40, True
        sport, dport, seq, ack, offx, flags = struct.unpack_from(">HHIIBB", raw, l4)
        hlen = (offx >> 4) * 4
        fr = Frame(len(out) + 1, sec * 1_000_000 + usec, raw, v6, vlan, ipid, (src, sport), (dst, dport), seq, ack,
                   flags, len(raw) - l4 - hlen)
        _tcp_options(raw[l4 + 20 : l4 + hlen], fr)
        key = frozenset((fr.src, fr.dst))
        if key not in streams:  # the first frame of every connection is the client's SYN
            streams[key] = (len(streams), fr.src)
        fr.stream, client = streams[key]
        fr.c2s = fr.src == client
        out.append(fr)
    return out


def _serial_after(a: int, b: int, bits: int) -> bool:
    return 0 < ((a - b) % (1 << bits)) < (1 << (bits - 1))


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built():
    return gen.build(FRAMES, SEED)


@pytest.fixture(scope="module")
def capture(tmp_path_factory, built) -> Path:
    path = tmp_path_factory.mktemp("gen") / "small.pcap"
    gen.write_files(str(path), built)
    return path


@pytest.fixture(scope="module")
def frames(capture) -> list[Frame]:
    return read_frames(capture)


@pytest.fixture(scope="module")
def truth(capture) -> list[dict]:
    with open(str(capture) + ".truth.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Determinism and shape
# ----------------------------------------------------------------------------------------------


def test_same_seed_same_bytes(tmp_path, capture):
    again = tmp_path / "again.pcap"
    gen.generate(str(again), FRAMES, seed=SEED)
    assert _digest(again) == _digest(capture)
    assert Path(str(again) + ".truth.csv").read_text() == Path(str(capture) + ".truth.csv").read_text()


def test_other_seed_other_bytes(tmp_path, capture):
    other = tmp_path / "other.pcap"
    gen.generate(str(other), 3000, seed=SEED + 1)
    assert _digest(other) != _digest(capture)


def test_exact_frame_count_all_tcp_with_ipv6_vlan_and_every_option_layout(frames, built):
    assert len(frames) == FRAMES
    assert any(fr.v6 for fr in frames) and any(not fr.v6 for fr in frames)
    assert any(fr.vlan is not None for fr in frames)
    assert {0, 1, 2, 3} <= {len(fr.sack) for fr in frames} <= {0, 1, 2, 3, 4}
    assert all(len(fr.sack) <= 3 for fr in frames if fr.tsval is not None)  # 40 option bytes (RFC 2018)
    flows = np.unique(built.p["flow"][built.cap.pkt])
    for attr in ("ts", "sack"):  # flows without timestamps, without SACK
        values = getattr(built.f, attr)[flows]
        assert values.any() and not values.all()
    assert set(built.f.tap[flows].tolist()) == {0, 1, 2}  # client host, server host, middle of the path


# ----------------------------------------------------------------------------------------------
# The truth file
# ----------------------------------------------------------------------------------------------


def test_every_cause_is_present_and_counted_in_meta(capture, truth):
    assert list(truth[0]) == gen.TRUTH_COLUMNS
    kinds = Counter(r["kind"] for r in truth)
    assert set(kinds) == set(gen.KINDS), kinds
    meta = __import__("json").loads(Path(str(capture) + ".meta.json").read_text())
    assert meta["causes"] == {k: kinds[k] for k in gen.KINDS}
    assert meta["version"] == gen.GEN_VERSION
    lost_before = {(r["kind"], r["direction"]) for r in truth if r["original_captured"] == "false"}
    assert {(gen.KIND_RTO, "client_to_server"), (gen.KIND_RTO, "server_to_client")} <= lost_before
    assert (gen.KIND_FAST, "server_to_client") in lost_before or (gen.KIND_FAST, "client_to_server") in lost_before
    evidence = Counter(e for r in truth if r["kind"] == gen.KIND_SPURIOUS for e in r["evidence"].split(";"))
    assert evidence["dsack"] and evidence["eifel"] and evidence["acked"]
    assert {r["trigger"] for r in truth if r["kind"] == gen.KIND_SPURIOUS} == {"timeout", "fast"}
    assert all(r["reason"] for r in truth)


def test_truth_rows_point_at_their_frames_and_originals(frames, truth):
    for r in truth:
        fr = frames[int(r["frame"]) - 1]
        assert (fr.stream, fr.c2s, fr.seq, fr.plen) == (
            int(r["stream"]), r["direction"] == "client_to_server", int(r["seq_raw"]), int(r["len"])), r
        if r["original_frame"]:
            o = frames[int(r["original_frame"]) - 1]
            assert (o.stream, o.c2s, o.seq, o.plen, o.flags & 0x03) == (fr.stream, fr.c2s, fr.seq, fr.plen,
                                                                      fr.flags & 0x03), r
            assert r["original_captured"] == "true"
        elif r["kind"] != gen.KIND_OOO:
            assert r["original_captured"] == "false"


def test_capture_duplicates_are_byte_identical_for_any_packet(frames, truth):
    dups = [r for r in truth if r["kind"] == gen.KIND_DUP]
    kinds = set()
    for r in dups:
        fr, first = frames[int(r["frame"]) - 1], frames[int(r["original_frame"]) - 1]
        assert fr.raw == first.raw
        assert 1 <= fr.ts_us - first.ts_us <= 20
        kinds.add("data" if fr.plen else "syn" if fr.flags & 0x02 else "fin" if fr.flags & 0x01 else "ack")
    assert {"data", "ack"} <= kinds


def test_syn_retransmissions_repeat_the_isn_after_the_timer(frames, truth):
    rows = [r for r in truth if r["kind"] == gen.KIND_SYN]
    assert rows
    for r in rows:
        fr, o = frames[int(r["frame"]) - 1], frames[int(r["original_frame"]) - 1]
        assert fr.flags & 0x02 and fr.seq == o.seq
        if "timer" in r["reason"]:
            assert float(r["since_original"]) >= 0.99


def test_out_of_order_frames_were_sent_before_a_frame_captured_earlier(frames, truth):
    """IPv4: an out-of-order segment carries an IP ID older than one already seen in its direction (it was
    sent before), and no data frame does that unless the truth calls it out-of-order."""
    ooo = {int(r["frame"]) for r in truth if r["kind"] == gen.KIND_OOO}
    dups = {int(r["frame"]) for r in truth if r["kind"] == gen.KIND_DUP}
    newest: dict[tuple, int] = {}
    seen_ooo = 0
    for fr in frames:
        if fr.v6 or fr.number in dups:
            continue
        key = (fr.stream, fr.c2s)
        older = key in newest and _serial_after(newest[key], fr.ipid, 16)
        if fr.plen or fr.flags & 0x01:
            assert older == (fr.number in ooo), fr.number
            seen_ooo += older
        if not older:
            newest[key] = fr.ipid
    assert seen_ooo > 0


def test_retransmissions_carry_a_new_ip_id_and_a_newer_tsval(frames, truth):
    resent = [r for r in truth if r["kind"] in (gen.KIND_RTO, gen.KIND_FAST, gen.KIND_SPURIOUS, gen.KIND_SYN)
              and r["original_frame"]]
    assert resent
    for r in resent:
        fr, o = frames[int(r["frame"]) - 1], frames[int(r["original_frame"]) - 1]
        if not fr.v6:
            assert _serial_after(fr.ipid, o.ipid, 16), r
        if fr.tsval is not None:
            assert fr.tsval == o.tsval or _serial_after(fr.tsval, o.tsval, 32), r


def test_spurious_evidence_is_in_the_file(frames, truth):
    """'dsack': a later D-SACK (RFC 2883) from the receiver covers the range; 'acked': an ACK already did."""
    by_stream = defaultdict(list)
    for fr in frames:
        by_stream[fr.stream].append(fr)
    checked = 0
    for r in truth:
        if r["kind"] != gen.KIND_SPURIOUS:
            continue
        fr = frames[int(r["frame"]) - 1]
        end = (fr.seq + fr.plen + (fr.flags & 0x01)) % 2**32
        rev = [x for x in by_stream[fr.stream] if x.c2s != fr.c2s]
        ev = r["evidence"].split(";")
        covered = [x for x in rev if x.number < fr.number and x.flags & 0x10 and not _serial_after(end, x.ack, 32)]
        assert ("acked" in ev) == bool(covered), r
        if "dsack" in ev:
            dsacks = [x for x in rev if x.number > fr.number and x.sack and x.sack[0][0] == fr.seq
                      and x.sack[0][1] == end and (_serial_after(x.ack, x.sack[0][0], 32) or (
                          len(x.sack) > 1 and not _serial_after(x.sack[1][0], x.sack[0][0], 32)))]
            assert dsacks, r
            checked += 1
    assert checked


# ----------------------------------------------------------------------------------------------
# The stacks' fields follow from what happened (the generator's record of the network)
# ----------------------------------------------------------------------------------------------


def test_ip_id_and_tsval_per_host_increase_with_every_packet_sent(built, frames):
    p = built.p
    order = np.lexsort((np.arange(len(p["flow"])), p["d"], p["flow"]))  # per flow and direction, in send order
    fl, d = p["flow"][order], p["d"][order]
    same = (fl[1:] == fl[:-1]) & (d[1:] == d[:-1])
    assert (np.diff(p["t_send"][order])[same] > 0).all()
    assert ((np.diff(p["ipid"][order]) % 65536)[same] == 1).all()
    ts = built.f.ts[fl[1:]] & same
    assert ((np.diff(p["tsval"][order]) % 2**32)[ts] < 2**31).all()
    # the file shows every ID but those of packets that never reached the capture point
    in_file = defaultdict(set)
    for fr in frames:
        if not fr.v6:
            in_file[(fr.stream, fr.c2s)].add(fr.ipid)
    stream_of = built.stream_of()
    cut = built.cap.t[-1]
    for (stream, c2s), ids in in_file.items():
        k = int(np.flatnonzero(stream_of == stream)[0])
        mine = (p["flow"] == k) & (p["d"] == (0 if c2s else 1))
        uncaptured = mine & (p["t_tap"] < 0)
        assert ids.isdisjoint(p["ipid"][uncaptured].tolist())
        if p["t_tap"][mine].max() < cut:  # the connection ends inside the file
            assert ids | set(p["ipid"][uncaptured].tolist()) == set(p["ipid"][mine].tolist())


def _received(ranges: list[tuple[int, int]]) -> tuple[int, list[tuple[int, int]]]:
    """Cumulative point and merged blocks of the byte ranges a receiver got."""
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    cum = merged[0][1] if merged and merged[0][0] == 0 else 0
    return cum, [(a, b) for a, b in merged]


def test_acks_sacks_and_dsacks_say_what_the_receiver_got(built):
    """Every ACK from a receiver: the cumulative ACK is what it had in order when it decided to send;
    SACK blocks lie above it and hold only bytes it got (RFC 2018); a D-SACK block (RFC 2883) holds only
    bytes it got twice; a duplicate ACK comes only from a hole or from duplicate data."""
    p = built.p
    n_sack = n_dsack = n_dup = 0
    starts = np.searchsorted(p["flow"], np.arange(p["flow"].max() + 2))
    for k in range(p["flow"].max() + 1):
        idx = np.arange(starts[k], starts[k + 1])
        sack_ok = bool(built.f.sack[k])
        for r in (0, 1):
            data = idx[(p["d"][idx] != r) & (p["t_arr"][idx] >= 0)]
            acks = idx[(p["d"][idx] == r) & ((p["flags"][idx] & gen.TH_ACK) != 0)]
            fin_syn = (p["flags"][data] & (gen.TH_FIN | gen.TH_SYN)) != 0
            arr = p["t_arr"][data]
            lo, hi = p["seq"][data], p["seq"][data] + p["plen"][data] + fin_syn
            last_ack = None
            for q in acks:
                t = p["t_dec"][q]
                before, upto = arr < t, arr <= t  # arrivals in the same microsecond: either order
                cum_lo, _ = _received(list(zip(lo[before], hi[before])))
                cum, blocks = _received(list(zip(lo[upto], hi[upto])))
                ack = p["ack"][q]
                if p["flags"][q] & gen.TH_SYN:
                    continue
                assert cum_lo <= ack <= cum, (k, q)
                sack = [(p[f"s{j}l"][q], p[f"s{j}r"][q]) for j in range(p["nsack"][q])]
                assert sack_ok or not sack
                for j, (a, b) in enumerate(sack):
                    if j == 0 and p["dsack"][q]:
                        copies = sum(1 for x, y in zip(lo[upto], hi[upto]) if x <= a and b <= y)
                        assert copies >= 2, (k, q)
                        assert b <= ack or (len(sack) > 1 and sack[1][0] <= a and b <= sack[1][1])
                        n_dsack += 1
                        continue
                    assert a > ack and any(x <= a and b <= y for x, y in blocks), (k, q)
                    n_sack += 1
                pure = p["plen"][q] == 0 and not p["flags"][q] & gen.TH_FIN
                if pure and ack == last_ack and ack > 1:
                    hole = any(a > ack for a, _ in blocks)
                    assert hole or p["why"][q] == gen.WHY_DUP, (k, q)
                    n_dup += 1
                last_ack = ack
    assert n_sack and n_dsack and n_dup


def test_tsecr_echoes_the_segment_that_last_advanced_the_ack(built):
    """RFC 7323 4.3: TS.Recent takes a segment's TSval only when it is at or below the last ACK sent."""
    p = built.p
    starts = np.searchsorted(p["flow"], np.arange(p["flow"].max() + 2))
    checked = 0
    for k in np.flatnonzero(built.f.ts)[:60]:
        idx = np.arange(starts[k], starts[k + 1])
        for r in (0, 1):
            events = sorted([(p["t_arr"][q], 0, q) for q in idx if p["d"][q] != r and p["t_arr"][q] >= 0]
                            + [(p["t_dec"][q], 1, q) for q in idx if p["d"][q] == r])
            recent, last_ack = 0, 0
            for _, what, q in events:
                if what == 0:
                    if p["flags"][q] & gen.TH_SYN or (p["seq"][q] <= last_ack and
                                                      (p["tsval"][q] - recent) % 2**32 < 2**31):
                        recent = p["tsval"][q]
                elif p["flags"][q] & gen.TH_ACK:
                    assert p["tsecr"][q] == recent, (k, q)
                    last_ack = p["ack"][q]
                    checked += 1
    assert checked > 1000


# ----------------------------------------------------------------------------------------------
# Capture loss, rates
# ----------------------------------------------------------------------------------------------


def test_capture_loss_is_listed_with_its_neighbours(tmp_path):
    path = tmp_path / "lossy.pcap"
    rates = gen.Rates.parse([], capture_loss_pct=2.0)
    b = gen.build(5000, 3, rates)
    gen.write_files(str(path), b)
    frames = read_frames(path)
    assert len(frames) == 5000
    with open(str(path) + ".capture_loss.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == gen.CAPTURE_LOSS_COLUMNS and len(rows) > 50
    for r in rows:
        t = round((float(r["time"]) - gen.EPOCH_START) * 1e6)
        for col, earlier in (("frame_before", True), ("frame_after", False)):
            if r[col]:
                fr = frames[int(r[col]) - 1]
                assert fr.stream == int(r["stream"])
                assert (fr.ts_us - gen.EPOCH_START * 10**6 <= t) == earlier
        if r["frame_before"] and r["frame_after"]:  # neighbours: nothing of the stream between them
            between = frames[int(r["frame_before"]) : int(r["frame_after"]) - 1]
            assert all(fr.stream != int(r["stream"]) for fr in between)
    assert set(b.cap.dropped.tolist()).isdisjoint(b.cap.pkt.tolist())
    assert (b.p["t_tap"][b.cap.dropped] >= 0).all()  # the network carried them past the capture point


def test_no_capture_loss_file_without_capture_loss(capture):
    assert not Path(str(capture) + ".capture_loss.csv").exists()


def test_rates_are_parsed_and_checked():
    assert gen.Rates.parse(["capture_dup=0", "reorder_before=0.01"], 0.5) == gen.Rates(
        capture_dup=0.0, reorder_before=0.01, capture_loss=0.005)
    with pytest.raises(ValueError, match="unknown rate"):
        gen.Rates.parse(["reorder=0.1"], 0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        gen.Rates.parse(["loss_after=1.5"], 0)


def test_a_zero_rate_removes_its_cause(tmp_path):
    path = tmp_path / "nodup.pcap"
    meta = gen.generate(str(path), 5000, 2, gen.Rates(capture_dup=0.0, reorder_before=0.0, delay_spike=0.0))
    assert meta["causes"][gen.KIND_DUP] == 0 and meta["causes"][gen.KIND_OOO] == 0


# ----------------------------------------------------------------------------------------------
# tshark
# ----------------------------------------------------------------------------------------------


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (Debian package tshark)")
def test_tshark_reads_the_file_cleanly_and_flags_only_truth_frames(capture, truth):
    res = gen.compare_with_tshark(str(capture))
    assert res["frames"] == FRAMES
    assert res["expert_errors"] == 0 and res["bad_ip_checksum"] == 0 and res["bad_tcp_checksum"] == 0, res
    assert res["extra"] == [], res["extra"][:10]
    assert res["per_cause"][gen.KIND_SYN]["agreement"] == 1.0
    assert res["per_cause"][gen.KIND_DUP]["tshark_same"] == 0  # Wireshark has no such label
    assert 0 < res["truth_flagged_by_tshark"] < len(truth)  # some truth frames look in sequence to it
    assert res["clean"]
