"""The ``retransmissions`` table: one row per frame our analysis or Wireshark's flags, the evidence in words.

The causes are decided in ``sequence.py`` and documented with the vocabulary in
``analyzer.schema.RETRANSMISSION_KINDS``; Wireshark's own label comes from ``wireshark.py``. A row keeps
the kind the per-packet evidence gave it; a retransmission later shown unnecessary (a D-SACK, an Eifel
echo, or its original arriving after it: ``EVENT.spur`` set) is labelled ``spurious_retransmission``
here, its reason being the first evidence followed by the later one. This module turns the compiled
engine's event rows into the table's columns; the only per-row Python is the formatting of the
``reason`` and ``wireshark_filter`` text, over event rows (a few % of packets), never packets.
"""
from __future__ import annotations

import numpy as np

from ..table import Masked, seconds, wireshark_filters
from .sequence import (EV_ABOVE, EV_ACKED, EV_CLOCK_BACK, EV_COPY_GONE, EV_DUPACKS, EV_IPID_EARLIER, EV_IPID_GAP,
                       EV_IPID_LATER, EV_LATE, EV_PARTIAL, EV_RENO_HELD, EV_RTO_RECOVERY, EV_SACK, EV_SACK_HOLE,
                       EV_SACKED, EV_SEEN, EV_SIMOPEN, EV_TIMING, EV_TSVAL_EARLIER, EV_TSVAL_LATER)
from .state import NONE, NOTE_FIN_REPEATED, Evidence, Kind

KIND_NAMES = {k: k.name.lower() for k in Kind}  # the table's labels: Kind.FAST_RETRANSMISSION -> fast_retransmission
KIND_LABELS = np.array([""] + [KIND_NAMES[k] for k in sorted(Kind)], dtype=object)


DIRECTIONS = np.array(["client->server", "server->client"], dtype=object)  # (one object each, however many rows)


def directions(ev_dir: np.ndarray, client_dir: np.ndarray) -> np.ndarray:
    """'client->server' or 'server->client' for each event row."""
    return DIRECTIONS[(ev_dir != client_dir).astype(np.intp)]


def durations(ns: np.ndarray) -> list[str]:
    """Short human durations, one per value: '850 µs', '4.2 ms', '1.5 s'."""
    ns = np.asarray(ns, dtype=np.float64)
    fmt = np.where(np.abs(ns) < 1e6, "%.0f µs", np.where(np.abs(ns) < 1e9, "%.3g ms", "%.3g s")).tolist()
    value = np.where(np.abs(ns) < 1e6, ns / 1e3, np.where(np.abs(ns) < 1e9, ns / 1e6, ns / 1e9)).tolist()
    return [f % v for f, v in zip(fmt, value)]


def _order_text(why: int, ipid: int, ref_ipid: int, tsv: int, ref_tsv: int, what: str) -> str:
    """The send-order evidence: IP ID or TSval against ``what``."""
    if why & EV_IPID_LATER:
        return f"IP ID {ipid} > {ref_ipid} of {what}: sent after it"
    if why & EV_IPID_EARLIER:
        return f"IP ID {ipid} < {ref_ipid} of {what}: sent before it"
    if why & EV_TSVAL_LATER:
        return f"TSval {tsv} newer than {ref_tsv} of {what}: sent after it"
    if why & EV_TSVAL_EARLIER:
        return f"TSval {tsv} older than {ref_tsv} of {what}: sent before it"
    return ""


def _trigger_text(kind: int, why: int, count: int, ref: int, gap: str, limit: str) -> str:
    """Why a resend was needed or not, from the receiver's signals."""
    if why & EV_ACKED:
        return "the receiver had already acknowledged every byte of it"
    if why & EV_SACKED:
        return "the receiver had already SACKed every byte of it"
    if why & EV_RENO_HELD:
        return (f"no SACK, but the receiver's duplicate ACKs said it held {count} segment"
                + ("s" if count != 1 else "") + " above its cumulative ACK, all those captured there: it had these "
                "bytes (each segment above a hole draws one duplicate ACK, RFC 5681 4.2)")
    signal = ("the receiver's 2nd duplicate ACK for it" + (f" ({count} in all)" if count > 2 else "") if why & EV_DUPACKS
              else "SACK blocks showing data above it received" if why & EV_SACK
              else "a partial ACK during fast recovery asking for it" if why & EV_PARTIAL else "")
    if why & EV_RTO_RECOVERY:
        return (f"resent in the loss recovery after the timeout retransmission in frame {ref}, {gap} earlier "
                "(the sender resends what is still missing of the window it had sent, RFC 5681 5.1)"
                + (f", as {signal} asked" if signal else ""))
    if why & EV_SACK_HOLE:
        return (f"{signal} (frame {ref}), resent {gap} later: a hole above the cumulative ACK, which a timeout "
                "would have resent first: SACK loss recovery, hole by hole (RFC 6675)")
    if kind == Kind.FAST_RETRANSMISSION:
        return f"{signal} (frame {ref}), resent {gap} later, within {limit}: fast recovery"
    if why & EV_LATE:
        return f"{signal} (frame {ref}), but resent {gap} later (a fast resend comes within {limit}) or a second time: a timeout"
    return "no duplicate ACK or SACK asked for it: a timeout (or a tail-loss probe)"


# the fields a reason shows (``_Row`` attributes) and the event field each comes from (None: a duration,
# worded by ``durations``); the others only choose its wording
SHOWN = {"orig": "orig_frame", "since": None, "ipid": "ipid", "ref_ipid": "ref_ipid", "tsv": "tsv",
         "ref_tsv": "ref_tsv", "overlap": "overlap", "len": "len", "count": "count", "spur_frame": "spur_frame",
         "spur_a": "spur_a", "spur_b": "spur_b", "ref": "ref_frame", "gap": None, "limit": None}


def reasons(ev: np.ndarray, since: np.ndarray, syn_ack: np.ndarray) -> np.ndarray:
    """The evidence that decided each row, in words a user can check in Wireshark (an object array).

    Rows whose wording takes the same branches (the same kind, evidence bits, and the few value tests
    the text makes) share one template, made once by ``_text`` with placeholders for the values shown
    (``_Shown``) and filled for each row with ``%``."""
    n = len(ev)
    out = np.empty(n, dtype=object)
    if not n:
        return out
    times = {"since": since, "gap": ev["gap"], "limit": ev["limit"]}  # (worded only where a template shows them)
    worded: dict[str, np.ndarray] = {}  # each duration column worded once for all rows, when first shown
    # everything a row's wording depends on: the rows of one shape take the same branches in ``_text``
    parts = [ev["kind"], ev["ws_kind"], ev["why"], ev["captured"], ev["note"], ev["spur"], syn_ack, ev["ipid"] > 0,
             ev["orig_frame"] != NONE, ev["overlap"] > 0, np.clip(ev["count"], -1, 3), ev["spur_a"] > 0, ev["len"] > 0]
    shapes, inverse = np.unique(_shape_keys(parts), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(shapes) + 1))
    for k in range(len(shapes)):
        rows = order[bounds[k]:bounds[k + 1]]
        first = int(rows[0])
        shape = tuple(int(part[first]) for part in parts)
        if shape not in _TEMPLATES:
            if len(_TEMPLATES) >= MAX_TEMPLATES:
                _TEMPLATES.clear()
            _TEMPLATES[shape] = _template(ev[first], bool(syn_ack[first]))
        template, shown = _TEMPLATES[shape]
        if not shown:
            out[rows] = template
            continue
        columns = []
        for name in shown:
            if SHOWN[name] is None:
                if name not in worded:
                    worded[name] = np.array(durations(times[name]), dtype=object)
                columns.append(worded[name][rows].tolist())
            else:
                columns.append(ev[SHOWN[name]][rows].tolist())
        out[rows] = [template % t for t in zip(*columns)]
    return out


# the template of each shape of row met so far (a shape: the values ``reasons`` tells wordings apart by; a
# few hundred of them in all, each worded the same way in every chunk and capture)
_TEMPLATES: dict[tuple, tuple[str, list[str]]] = {}
MAX_TEMPLATES = 1 << 12  # (evidence bits could make more shapes than any capture shows: then start again)


def _shape_keys(parts: list[np.ndarray]) -> np.ndarray:
    """One int64 per row telling apart every combination of ``parts`` (small integers: mixed radix), or the
    rows of ``parts`` side by side when their ranges together do not fit."""
    key = np.zeros(len(parts[0]), dtype=np.int64)
    room = 1
    for part in parts:
        part = part.astype(np.int64)
        lo, hi = int(part.min()), int(part.max())
        room *= hi - lo + 1
        if room >= 1 << 62:
            return np.stack([p.astype(np.int64) for p in parts], axis=1)
        key = key * (hi - lo + 1) + (part - lo)
    return key


class _Shown:
    """A value a reason shows, as a placeholder: formats as its marker, compares as the row's value."""

    def __init__(self, name: str, value):
        self.name, self.value = name, value

    def __format__(self, spec: str) -> str:
        return f"\x00{self.name}\x00"

    __str__ = lambda self: self.__format__("")  # noqa: E731
    __gt__ = lambda self, other: self.value > other  # noqa: E731
    __ne__ = lambda self, other: self.value != other  # noqa: E731
    __eq__ = lambda self, other: self.value == other  # noqa: E731
    __hash__ = None


class _Row:
    """One row's fields for ``_text``: the wording ones as they are, the shown ones as ``_Shown``."""

    def __init__(self, rec, syn_ack: bool):
        for name in ("kind", "why", "captured", "note", "spur", "ws_kind"):
            setattr(self, name, int(rec[name]))
        self.syn_ack = syn_ack
        for name, field in SHOWN.items():
            setattr(self, name, _Shown(name, None if field is None else int(rec[field])))


def _template(rec, syn_ack: bool) -> tuple[str, list[str]]:
    """The ``%`` template of the reasons of rows shaped like event row ``rec``, and the shown fields it
    takes, in order."""
    text = _text(_Row(rec, syn_ack))
    parts = text.split("\x00")
    template = "".join(p.replace("%", "%%") if k % 2 == 0 else "%s" for k, p in enumerate(parts))
    return template, parts[1::2]


def _text(v: _Row) -> str:
    """The reason of one row (``v``: its fields)."""
    kind, why, ref, gap, limit = v.kind, v.why, v.ref, v.gap, v.limit
    first = f"frame {v.orig}, {v.since} earlier" if v.orig != NONE else ""
    if kind == Kind.DUPLICATE:
        text = ("same " + (f"IP ID {v.ipid}" if v.ipid > 0 else "TSval") + f", seq, ack, length and flags as "
                f"frame {ref}, {gap} later"
                + ("" if v.ipid > 0 else
                   ", no loss signal from the receiver in between (no TCP resends data that soon unasked)"
                   if why & EV_TIMING else ", nothing from the peer in between")
                + ": the same packet captured twice")
    elif kind == Kind.SYN_RETRANSMISSION:
        text = ("SYN-ACK" if v.syn_ack else "SYN") + " repeated with the same ISN" + (f", first sent in {first}"
                                                                                   if first else "")
    elif kind == 0:
        text = ("a SYN-ACK of a simultaneous open repeats its own SYN's ISN (RFC 9293 3.5): not a retransmission"
                if why & EV_SIMOPEN else
                "no byte of it was sent before: it does not start below the highest byte sent in its direction")
        text += f"; Wireshark calls it {KIND_NAMES[Kind(v.ws_kind)]}"
    elif kind == Kind.OUT_OF_ORDER:
        if why & EV_COPY_GONE:
            text = ("its bytes were captured before, in a copy no longer kept; "
                    + _order_text(why, v.ipid, v.ref_ipid, v.tsv, v.ref_tsv, "the highest sent")
                    + f" (frame {ref}): the original, delayed in the network past its resend")
        elif why & EV_SEEN:
            text = (f"the original of frame {ref}, which was its retransmission, captured {gap} earlier: "
                    + _order_text(why, v.ipid, v.ref_ipid, v.tsv, v.ref_tsv, "that copy")
                    + "; sent once, delayed in the network")
        elif why & EV_TIMING:
            text = (f"none of its bytes captured before; it came {gap} after frame {ref}, whose bytes lie above it "
                    f"(sent after its original), under {limit} (the RTT, before which RACK, RFC 8985, calls no "
                    "segment lost): reordering assumed (ambiguous: no IP ID or timestamps to order them)")
        else:
            text = ("none of its bytes captured before; "
                    + _order_text(why, v.ipid, v.ref_ipid, v.tsv, v.ref_tsv, "the highest sent")
                    + f", yet it came {gap} after frame {ref}, whose bytes lie above it: reordered before the "
                    "capture point")
    else:
        if v.captured:
            fin = (v.note & NOTE_FIN_REPEATED) != 0
            text = ((f"repeats {v.overlap} of {v.len} bytes" + (" and the FIN" if fin else "") + " first sent in "
                     if v.overlap > 0 else "FIN repeated, first sent in ") + (first or "a frame no longer kept"))
            order = _order_text(why, v.ipid, v.ref_ipid, v.tsv, v.ref_tsv, "that copy")
            if order:
                text += "; " + order
            elif why & EV_TIMING:
                text += "; no IP ID or TSval to order the copies: the one captured later taken as the resend"
        elif why & EV_IPID_GAP:
            missing = v.count
            text = (f"at the highest byte sent, but IP ID {v.ipid} follows {v.ref_ipid} of the sender's previous "
                    f"packet (frame {ref}, {gap} earlier): {missing} packet{'s' if missing > 1 else ''} of it "
                    "not captured, while the peer had acknowledged everything and sent nothing to answer: they "
                    f"carried {'these bytes' if v.len > 0 else 'this FIN'}, lost before the capture point (a tail "
                    "loss)")
        else:
            what = "a segment above it (sent after its original)" if why & EV_ABOVE else "the highest sent"
            order = _order_text(why, v.ipid, v.ref_ipid, v.tsv, v.ref_tsv, what)
            text = (f"its {v.len} bytes lie below the highest byte sent but were never captured: the original "
                    "was lost before the capture point" + ("; " + order if order else
                                                           "; no IP ID or TSval to tell it from a late original "
                                                           "(ambiguous)"))
        text += "; " + _trigger_text(kind, why, v.count, ref, gap, limit)
    if why & EV_CLOCK_BACK:
        text += "; the capture's clock went backwards before this frame"
    spur = v.spur
    if spur == Evidence.DSACK:
        text += (f"; but the D-SACK in frame {v.spur_frame} (SLE={v.spur_a} SRE={v.spur_b}) shows the original had "
                 "arrived: not needed (RFC 2883)")
    elif spur == Evidence.EIFEL:
        text += (f"; but the ACK in frame {v.spur_frame}, which covers it, echoes TSval {v.spur_a}, older than this "
                 f"one's {v.spur_b}: it answered a segment sent before this one, so the receiver had these bytes "
                 "before this copy arrived: not needed (Eifel, RFC 3522)")
    elif spur == Evidence.DUPACK:
        text += (f"; but in frame {v.spur_frame} the receiver, which had acknowledged everything sent, repeated "
                 "that ACK with nothing new from the sender: it had received a second copy (RFC 5681 4.2), "
                 "the original had arrived, so this was not needed")
    elif spur == Evidence.LATE_ORIGINAL:
        text += (f"; but its original arrived after it (frame {v.spur_frame}"
                 + (f", IP ID {v.spur_a}" if v.spur_a > 0 else "") + "): the original was delayed, not lost, so this "
                 "was not needed")
    return text


def kinds(ev: np.ndarray) -> np.ndarray:
    """Kind labels of event rows: the per-packet kind, or spurious_retransmission once later evidence
    showed the retransmission was not needed."""
    return np.where(ev["spur"] != 0, KIND_LABELS[Kind.SPURIOUS_RETRANSMISSION], KIND_LABELS[ev["kind"]])


def event_rows(ev: np.ndarray, src: np.ndarray, sport: np.ndarray, dst: np.ndarray, dport: np.ndarray,
               client_dir: np.ndarray) -> dict:
    """The table's columns from event rows (which carry their packets' fields) and the rows' endpoints."""
    frame = ev["frame"]
    ts_ns = ev["ts"]
    late = ev["spur"] == Evidence.LATE_ORIGINAL
    orig = np.where(late, ev["spur_frame"], ev["orig_frame"])
    orig_ts = ev["orig_ts"]
    since = np.where((orig != NONE) & ~late, ts_ns - orig_ts, NONE)
    syn_ack = (ev["flags"] & 0x12) == 0x12
    stream = ev["conv"]
    seq = ev["seq"]
    ref = np.where(ev["spur"] != 0, ev["spur_frame"], ev["ref_frame"])
    text = lambda v: np.asarray(v, dtype=object)  # noqa: E731
    return {
        "frame": frame,
        "ts": seconds(ts_ns),
        "stream": stream,
        "direction": text(directions(ev["dir"], client_dir)),
        "src": text(src), "sport": np.asarray(sport, dtype=np.int64),
        "dst": text(dst), "dport": np.asarray(dport, dtype=np.int64),
        "seq": Masked(seq, seq == NONE),
        "seq_raw": ev["seq_raw"],
        "len": ev["len"],
        "kind": kinds(ev),
        "wireshark_kind": KIND_LABELS[ev["ws_kind"]],
        "original_captured": Masked((ev["captured"] == 1) | late, ev["kind"] == 0),
        "original_frame": Masked(orig, orig == NONE),
        "since_original": Masked(np.where(since != NONE, since / 1e9, 0.0), since == NONE),
        "overlap_bytes": ev["overlap"],
        "evidence_frame": Masked(ref, ref == NONE),
        "reason": text(reasons(ev, since, syn_ack)),
        "wireshark_filter": wireshark_filters(stream, frame),
    }
