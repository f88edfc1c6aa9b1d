"""Connection health: the events table's rows and the per-direction health columns of ``connections``.

The compiled pass (``sequence.analyze_batch``) writes a ``FINDING`` row for every expert finding on a
frame (Wireshark 4.0's flags, from ``wireshark.py``, and our own ``capture_gap``) and keeps per-direction
accumulators (``DIRECTION.h_*``, ``rtt_*``, ``karn_*``, ``data_*``, ``bif_max``); this module turns them
into table columns, vectorized, with one formatting step per events row for its ``detail``.
"""
from __future__ import annotations

import numpy as np

from ..table import Masked, seconds, wireshark_filters
from .state import NONE, Finding, Gathered

# at most this many findings on one packet: every Wireshark flag at once, a capture gap, an RTT sample
FINDINGS_PER_PACKET = len(Finding)

EVENT_NAMES = np.array([""] + [f.name.lower() for f in sorted(Finding)], dtype=object)


_FIXED = {
    Finding.ZERO_WINDOW: "receive window 0: the peer must stop sending",
    Finding.ZERO_WINDOW_PROBE: "1 byte while the peer's window is 0",
    Finding.ZERO_WINDOW_PROBE_ACK: "answers a zero-window probe; window still 0",
    Finding.WINDOW_FULL: "fills the peer's advertised window",
    Finding.KEEP_ALIVE: "one byte below the next sequence number: a keep-alive, not a retransmission",
    Finding.KEEP_ALIVE_ACK: "answers a keep-alive",
}


# the detail of the findings that have one: its format, filled with the row's (a, b)
_WORDED = {
    Finding.DUPLICATE_ACK: "#%d, repeating frame %d",
    Finding.WINDOW_UPDATE: "window %d (unscaled)",
    Finding.LOST_SEGMENT: "%d bytes before it not captured",
    Finding.ACK_LOST_SEGMENT: "acknowledges %d bytes never captured",
    Finding.CAPTURE_GAP: "%d bytes below ACK %d (relative) acknowledged but never captured: the capture dropped them",
}


def _details(rows: np.ndarray) -> np.ndarray:
    """The ``detail`` text of each finding row (an object array), one kind of finding at a time."""
    what = rows["what"]
    out = np.full(len(rows), "", dtype=object)
    for w in np.unique(what).tolist():
        sel = np.flatnonzero(what == w)
        fmt = _WORDED.get(w)
        if fmt is None:
            out[sel] = _FIXED.get(w, "")
        elif fmt.count("%d") == 1:
            out[sel] = [fmt % x for x in rows["a"][sel].tolist()]
        else:
            out[sel] = [fmt % t for t in zip(rows["a"][sel].tolist(), rows["b"][sel].tolist())]
    return out


def finding_rows(rows: np.ndarray, client_dir: np.ndarray) -> dict:
    """The events table's columns from finding rows (``direction`` is added by the engine)."""
    frame, stream = rows["frame"], rows["conv"]
    return {
        "frame": frame,
        "ts": seconds(rows["ts"]),
        "stream": stream,
        "event": EVENT_NAMES[rows["what"]],
        "detail": _details(rows),
        "wireshark_filter": wireshark_filters(stream, frame),
    }


def _median(q: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The P-square estimate (the middle marker) from 5 samples on; the exact median of the first ones below."""
    out = q[:, 2].copy()
    for k in (1, 2, 3, 4):
        few = n == k
        if few.any():
            rows = q[few, :k]
            out[few] = np.median(rows, axis=1)
    return out


def _rate(nbytes: np.ndarray, first: np.ndarray, last: np.ndarray) -> Masked:
    """Bits per second over [first, last] ns; NA when the span is empty."""
    span = (last - first).astype(np.float64)
    ok = (first != NONE) & (span > 0)
    return Masked(np.where(ok, nbytes * 8.0 / np.where(ok, span, 1.0) * 1e9, 0.0), ~ok)


def health_columns(dirs: np.ndarray, idx: np.ndarray, client_dir: np.ndarray, payload: tuple, resent: tuple) -> dict:
    """The ``client_*``/``server_*`` health columns of connections ``idx`` (``payload``/``resent``: the
    (client, server) payload and retransmitted byte counts)."""
    cols = {}
    for k, side in enumerate(("client", "server")):
        d = Gathered(dirs, 2 * idx + (client_dir if k == 0 else 1 - client_dir))
        n, kn = d["rtt_n"], d["karn_n"]
        none = n == 0
        cols.update({
            f"{side}_dup_acks": d["h_dupacks"],
            f"{side}_zero_windows": d["h_zero_windows"],
            f"{side}_window_full": d["h_window_full"],
            f"{side}_data_rtt_n": n,
            f"{side}_data_rtt_min": Masked(np.where(none, 0, d["rtt_min"]) / 1e9, none),
            f"{side}_data_rtt_median": Masked(np.where(none, 0.0, _median(d["rtt_q"], n)) / 1e9, none),
            f"{side}_data_rtt_max": Masked(np.where(none, 0, d["rtt_max"]) / 1e9, none),
            f"{side}_data_rtt_karn_median": Masked(np.where(kn == 0, 0.0, np.where(
                d["karn_apart"] == 1, _median(d["karn_q"], kn), _median(d["rtt_q"], n))) / 1e9, kn == 0),
            f"{side}_throughput": _rate(payload[k], d["data_first_ts"], d["data_last_ts"]),
            f"{side}_goodput": _rate(payload[k] - resent[k], d["data_first_ts"], d["data_last_ts"]),
            f"{side}_max_in_flight": Masked(np.maximum(d["bif_max"], 0), d["bif_max"] == NONE),
            f"{side}_missed_bytes": d["h_missed"],
        })
    return cols
