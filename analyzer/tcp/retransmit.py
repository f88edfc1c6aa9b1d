"""The ``retransmissions`` table: one row per labelled segment, each with the rule that fired in words.

The rules themselves are decided in ``sequence.py`` and documented with the vocabulary in
``analyzer.schema.RETRANSMISSION_KINDS``. An event row keeps the kind the per-packet rules gave it; a
retransmission later shown unnecessary by the receiver (D-SACK or Eifel, ``EVENT.spur`` set) is labelled
``spurious_retransmission`` here, its reason being the original rule's followed by that evidence. This module turns the compiled engine's event rows into the
table's columns; the only per-row Python is the formatting of the ``reason`` and ``wireshark_filter``
text (rows grouped by kind, one f-string each), over event rows (a few % of packets), never packets.
"""
from __future__ import annotations

import numpy as np

from ..table import Masked
from .state import NONE, NOTE_FIN_REPEATED, Evidence, Kind

KIND_NAMES = {k: k.name.lower() for k in Kind}  # the table's labels: Kind.FAST_RETRANSMISSION -> fast_retransmission
KIND_LABELS = np.array([""] + [KIND_NAMES[k] for k in sorted(Kind)], dtype=object)


def directions(ev_dir: np.ndarray, client_dir: np.ndarray) -> np.ndarray:
    """'client->server' or 'server->client' for each event row."""
    return np.where(ev_dir == client_dir, "client->server", "server->client").astype(object)


def durations(ns: np.ndarray) -> list[str]:
    """Short human durations, one per value: '850 µs', '4.2 ms', '1.5 s'."""
    ns = np.asarray(ns, dtype=np.float64)
    fmt = np.where(ns < 1e6, "%.0f µs", np.where(ns < 1e9, "%.3g ms", "%.3g s")).tolist()
    value = np.where(ns < 1e6, ns / 1e3, np.where(ns < 1e9, ns / 1e6, ns / 1e9)).tolist()
    return [f % v for f, v in zip(fmt, value)]


def reasons(ev: np.ndarray, since: np.ndarray, syn_ack: np.ndarray) -> np.ndarray:
    """The rule that labelled each event row, in words a user can check in Wireshark (an object array;
    one formatting step per row, rows grouped by kind)."""
    out = np.full(len(ev), "", dtype=object)
    kind = ev["kind"]
    for k in np.unique(kind).tolist():
        rows = np.flatnonzero(kind == k)
        e = ev[rows]
        ref, count, length = e["ref_frame"].tolist(), e["count"].tolist(), e["len"].tolist()
        gap = durations(e["gap"])
        orig = e["orig_frame"]
        first = np.full(len(rows), "", dtype=object)
        has = np.flatnonzero(orig != NONE)
        if len(has):
            first[has] = [f" first sent in frame {o}, {d} earlier"
                          for o, d in zip(orig[has].tolist(), durations(since[rows][has]))]
        if k == Kind.RETRANSMISSION:
            overlap = e["overlap"].tolist()
            fin = ((e["note"] & NOTE_FIN_REPEATED) != 0).tolist()
            late = "no 2+ dup ACKs within 20 ms and {} after the highest segment (frame {}), too late for out-of-order"
            text = [f"repeats {o} of {n} bytes" + (" and the FIN" if fn else "") + f"{f}; " + late.format(g, r)
                    if o > 0 else
                    "FIN repeated" + (f" ({f.strip()})" if f else "") + "; " + late.format(g, r) if fn else
                    f"starts below the highest sequence sent (frame {r}, {g} earlier) but its bytes were never "
                    "captured: the original was missed by the capture"
                    for o, n, f, g, r, fn in zip(overlap, length, first.tolist(), gap, ref, fin)]
        elif k == Kind.FAST_RETRANSMISSION:
            text = [f"{c} dup ACKs before (last in frame {r}), {g} after the last (< 20 ms)"
                    for c, r, g in zip(count, ref, gap)]
        elif k == Kind.SPURIOUS_RETRANSMISSION:
            text = [f"all {n} bytes were already ACKed by the receiver (frame {r}) before this was sent"
                    for n, r in zip(length, ref)]
        elif k == Kind.SYN_RETRANSMISSION:
            text = [("SYN-ACK" if sa else "SYN") + " repeated with the same ISN" + (f and "," + f)
                    for sa, f in zip(syn_ack[rows].tolist(), first.tolist())]
        elif k == Kind.OUT_OF_ORDER:
            new = (e["len"] - e["overlap"]).tolist()
            text = [f"starts below the highest sequence sent (frame {r}) and came {g} after it, less than {lim} = "
                    + ("the handshake RTT" if c == 1 else "3 ms (no handshake RTT)") + f"; {m} of {n} bytes new"
                    for r, g, lim, c, m, n in zip(ref, gap, durations(e["limit"]), count, new, length)]
        elif k == Kind.DUPLICATE:
            text = ["same " + (f"IP ID {c}" if c > 0 else "TSval") + f", seq, ack, length and flags as frame {r}, "
                    f"{g} later" + ("" if c > 0 else ", nothing from the peer in between") + ": captured twice"
                    for c, r, g in zip(count, ref, gap)]
        else:
            continue
        out[rows] = text
    spur = np.flatnonzero(ev["spur"] != 0)
    if len(spur):
        e = ev[spur]
        out[spur] = [t + (f"; but the D-SACK in frame {fr} (SLE={a} SRE={b}) shows the original had arrived: "
                          "not needed (RFC 2883)" if how == Evidence.DSACK else
                          f"; but the ACK in frame {fr} echoes TSval {a}"
                          + (" of the original" if a == c else f" (the original's is {c})")
                          + f", older than this one's {b}: it answered the original, which had arrived, so this "
                          "was not needed (Eifel, RFC 3522)")
                     for t, how, fr, a, b, c in zip(out[spur].tolist(), e["spur"].tolist(),
                                                    e["spur_frame"].tolist(), e["spur_a"].tolist(),
                                                    e["spur_b"].tolist(), e["spur_c"].tolist())]
    return out


def kinds(ev: np.ndarray) -> np.ndarray:
    """Kind labels of event rows: the per-packet kind, or spurious_retransmission once later evidence
    showed the retransmission was not needed."""
    return np.where(ev["spur"] != 0, KIND_NAMES[Kind.SPURIOUS_RETRANSMISSION], KIND_LABELS[ev["kind"]]).astype(object)


def event_rows(ev: np.ndarray, src: np.ndarray, sport: np.ndarray, dst: np.ndarray, dport: np.ndarray,
               client_dir: np.ndarray) -> dict:
    """The table's columns from event rows (which carry their packets' fields) and the rows' endpoints."""
    frame = ev["frame"]
    ts_ns = ev["ts"]
    orig = ev["orig_frame"]
    since = np.where(orig != NONE, ts_ns - ev["orig_ts"], NONE)
    syn_ack = (ev["flags"] & 0x12) == 0x12
    stream = ev["conv"]
    seq = ev["seq"]
    ref = np.where(ev["spur"] != 0, ev["spur_frame"], ev["ref_frame"])
    filters = [f"tcp.stream eq {s} && frame.number == {f}" for s, f in zip(stream.tolist(), frame.tolist())]
    text = lambda v: np.asarray(v, dtype=object)  # noqa: E731
    return {
        "frame": frame,
        "ts": ts_ns / 1e9,
        "stream": stream,
        "direction": text(directions(ev["dir"], client_dir)),
        "src": text(src), "sport": np.asarray(sport, dtype=np.int64),
        "dst": text(dst), "dport": np.asarray(dport, dtype=np.int64),
        "seq": Masked(seq, seq == NONE),
        "seq_raw": ev["seq_raw"],
        "len": ev["len"],
        "kind": kinds(ev),
        "original_frame": Masked(orig, orig == NONE),
        "since_original": Masked(np.where(orig != NONE, since / 1e9, 0.0), orig == NONE),
        "overlap_bytes": ev["overlap"],
        "evidence_frame": Masked(ref, ref == NONE),
        "reason": text(reasons(ev, since, syn_ack)),
        "wireshark_filter": text(filters),
    }
