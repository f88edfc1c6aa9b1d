"""The ``retransmissions`` table: one row per labelled segment, each with the rule that fired in words.

The rules themselves are decided in ``sequence.py`` and documented with the vocabulary in
``analyzer.schema.RETRANSMISSION_KINDS``. This module turns the compiled engine's event rows into the
table; it loops over event rows (few), never over packets.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .sequence import (E_CONV, E_COUNT, E_DIR, E_GAP, E_KIND, E_LEN, E_LIMIT, E_ORIG_FRAME, E_ORIG_TS,
                       E_OVERLAP, E_REF_FRAME, E_SEQ, K_DUPLICATE, K_FAST, K_OUT_OF_ORDER, K_RETRANSMISSION,
                       K_SPURIOUS, K_SYN)
from .state import NONE

KIND_NAMES = {K_RETRANSMISSION: "retransmission", K_FAST: "fast_retransmission",
              K_SPURIOUS: "spurious_retransmission", K_SYN: "syn_retransmission",
              K_OUT_OF_ORDER: "out_of_order", K_DUPLICATE: "duplicate"}
KIND_LABELS = np.array([""] + [KIND_NAMES[k] for k in range(1, 7)], dtype=object)


def directions(ev_dir: np.ndarray, client_dir: np.ndarray) -> np.ndarray:
    """'client->server' or 'server->client' for each event row."""
    return np.where(ev_dir == client_dir, "client->server", "server->client").astype(object)


def durations(ns: np.ndarray) -> pd.Series:
    """Short human durations, vectorized: '850 µs', '4.2 ms', '1.5 s'."""
    ns = np.asarray(ns, dtype=np.float64)
    us = pd.Series(np.char.mod("%.0f µs", ns / 1e3), dtype=object)
    ms = pd.Series(np.char.mod("%.3g ms", ns / 1e6), dtype=object)
    s = pd.Series(np.char.mod("%.3g s", ns / 1e9), dtype=object)
    return us.where(ns < 1e6, ms.where(ns < 1e9, s))


def _text(v: np.ndarray) -> pd.Series:
    return pd.Series(np.asarray(v), dtype=object).astype(str)


def reasons(ev: np.ndarray, since: np.ndarray, syn_ack: np.ndarray) -> pd.Series:
    """The rule that labelled each event row, in words a user can check in Wireshark (vectorized)."""
    kind = ev[:, E_KIND]
    ref, count = _text(ev[:, E_REF_FRAME]), _text(ev[:, E_COUNT])
    length, overlap = _text(ev[:, E_LEN]), _text(ev[:, E_OVERLAP])
    new = _text(ev[:, E_LEN] - ev[:, E_OVERLAP])
    gap, limit = durations(ev[:, E_GAP]), durations(ev[:, E_LIMIT])
    has_orig = ev[:, E_ORIG_FRAME] != NONE
    orig = _text(ev[:, E_ORIG_FRAME])
    first = pd.Series(np.where(has_orig, (" first sent in frame " + orig + ", " + durations(since) + " earlier"), ""),
                      dtype=object)
    out = pd.Series([""] * len(ev), dtype=object)
    rules = {
        K_FAST: count + " dup ACKs before (last in frame " + ref + "), " + gap + " after the last (< 20 ms)",
        K_SPURIOUS: "all " + length + " bytes were already ACKed by the receiver (frame " + ref
                    + ") before this was sent",
        K_SYN: pd.Series(np.where(syn_ack, "SYN-ACK", "SYN"), dtype=object) + " repeated with the same ISN"
               + first.str.replace(" first sent", ", first sent", regex=False),
        K_OUT_OF_ORDER: "starts below the highest sequence sent (frame " + ref + ") and came " + gap
                        + " after it, less than " + limit + " = "
                        + pd.Series(np.where(ev[:, E_COUNT] == 1, "the handshake RTT", "3 ms (no handshake RTT)"),
                                    dtype=object)
                        + "; " + new + " of " + length + " bytes new",
        K_DUPLICATE: "same " + pd.Series(np.where(ev[:, E_COUNT] > 0, "IP ID " + count, "TSval"), dtype=object)
                     + ", seq, ack, length and flags as frame " + ref + ", " + gap + " later: captured twice",
    }
    for k, text in rules.items():
        out = out.where(kind != k, text)
    unseen = ("starts below the highest sequence sent (frame " + ref + ", " + gap
              + " earlier) but its bytes were never captured: the original was missed by the capture")
    repeat = ("repeats " + overlap + " of " + length + " bytes" + first + "; no 2+ dup ACKs within 20 ms and "
              + gap + " after the highest segment (frame " + ref + "), too late for out-of-order")
    plain = kind == K_RETRANSMISSION
    out = out.where(~(plain & (ev[:, E_OVERLAP] == 0)), unseen)
    out = out.where(~(plain & (ev[:, E_OVERLAP] > 0)), repeat)
    return out


def event_rows(ev: np.ndarray, frame: np.ndarray, ts_ns: np.ndarray, seq_raw: np.ndarray, flags: np.ndarray,
               src: np.ndarray, sport: np.ndarray, dst: np.ndarray, dport: np.ndarray,
               client_dir: np.ndarray) -> pd.DataFrame:
    """Build the table from event rows and the packet fields of those rows (already selected)."""
    kinds = ev[:, E_KIND]
    orig = ev[:, E_ORIG_FRAME]
    orig_ts = ev[:, E_ORIG_TS]
    since = np.where(orig != NONE, ts_ns - orig_ts, NONE)
    syn_ack = (flags & 0x12) == 0x12
    why = reasons(ev, since, syn_ack)
    stream = ev[:, E_CONV]
    return pd.DataFrame({
        "frame": pd.Series(frame, dtype="int64"),
        "ts": pd.Series(ts_ns / 1e9, dtype="float64"),
        "stream": pd.Series(stream, dtype="int64"),
        "direction": pd.Series(directions(ev[:, E_DIR], client_dir), dtype=object),
        "src": pd.Series(src, dtype=object), "sport": pd.Series(sport, dtype="int64"),
        "dst": pd.Series(dst, dtype=object), "dport": pd.Series(dport, dtype="int64"),
        "seq": pd.Series(ev[:, E_SEQ], dtype="Int64").mask(ev[:, E_SEQ] == NONE),
        "seq_raw": pd.Series(seq_raw, dtype="int64"),
        "len": pd.Series(ev[:, E_LEN], dtype="int64"),
        "kind": pd.Series(KIND_LABELS[kinds], dtype=object),
        "original_frame": pd.Series(orig, dtype="Int64").mask(orig == NONE),
        "since_original": pd.Series(np.where(orig != NONE, since / 1e9, np.nan), dtype="Float64"),
        "overlap_bytes": pd.Series(ev[:, E_OVERLAP], dtype="int64"),
        "evidence_frame": pd.Series(ev[:, E_REF_FRAME], dtype="Int64").mask(ev[:, E_REF_FRAME] == NONE),
        "reason": why,
        "wireshark_filter": "tcp.stream eq " + _text(stream) + " && frame.number == " + _text(frame),
    })
