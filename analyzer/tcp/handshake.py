"""Three-way handshakes: per-connection tracking (compiled) and the ``handshakes`` table.

Rules (the outcome vocabulary itself is documented in ``analyzer.schema.HANDSHAKE_OUTCOMES``):

- The client is the sender of the first SYN without ACK; its ISN is that SYN's sequence number.
- A SYN-ACK counts when it comes from the other side and acknowledges ISN+1. Repeats of either are
  counted (``syn_retries``, ``synack_retries``).
- The handshake completes with the first packet from the client that has ACK, no SYN, and acknowledges
  the server's ISN+1 (a data packet will do when the bare ACK was not captured).
- RTT with retries: the ACK is paired with the most recent SYN-ACK before it, and that SYN-ACK with
  the most recent SYN before it (an ACK number of ISN+1 cannot say which SYN a SYN-ACK answers; the
  latest is the likeliest, and Wireshark measures iRTT from the latest SYN too). ``syn_frame`` and
  ``synack_frame`` are those paired frames; ``first_syn_frame``/``first_syn_ts`` keep the first SYN so
  the time the user waited (``setup_time``) is visible too.
- A client SYN after a RST ended the attempt (refused, or reset after the SYN-ACK) continues it: a retried
  SYN, a SYN-ACK and the ACK make it ``established``, retries counted. A SYN-ACK with a new ISN answering a
  SYN sent after the last SYN-ACK is the server starting over: it becomes the SYN-ACK of the handshake.
- ``rtt``, the round trip at the capture point (SYN -> SYN-ACK -> ACK), is the engine's first RTT estimate.
- Wireshark's own iRTT (``tcp.analysis.initial_rtt``) is tracked by ``wireshark.py``, exactly as it
  computes it.
"""
from __future__ import annotations

from enum import IntEnum, auto

import numpy as np

from ..jit import njit
from ..schema import TH_ACK, TH_RST, TH_SYN
from ..table import Masked, seconds
from .state import NONE


class HS(IntEnum):
    """Handshake progress (``CONVERSATION.hs_state``)."""

    NONE = 0
    SYN = auto()  # the client's SYN seen
    SYNACK = auto()  # a SYN-ACK answering it seen
    DONE = auto()  # the client's ACK of the SYN-ACK seen


class HSEnd(IntEnum):
    """How an attempt ended before completing (``CONVERSATION.hs_end``)."""

    NONE = 0
    REFUSED = auto()  # RST from the server answering the SYN
    RESET = auto()  # RST from either side after the SYN-ACK


SEQ_MASK = 0xFFFFFFFF


@njit(cache=True, nogil=True, _nrt=False)
def track_handshake(cv, d, flags, seq, ack, frame, ts, plen, mss, wscale, sackp, tsval, tfo, batch):
    """Update connection ``cv``'s handshake with one packet sent in direction ``d`` (0 or 1)."""
    syn = (flags & TH_SYN) != 0
    ackf = (flags & TH_ACK) != 0
    if syn and not ackf:
        if cv.syn_n == 0:
            cv.client_dir = d
            cv.syn_n = 1
            cv.syn1_frame = frame
            cv.syn1_ts = ts
            cv.lastsyn_frame = frame
            cv.lastsyn_ts = ts
            cv.client_isn = seq
            if cv.hs_state < HS.SYN:
                cv.hs_state = HS.SYN
            cv.mss_c = mss
            cv.ws_c = wscale
            cv.sack_c = sackp
            cv.ts_c = 1 if tsval >= 0 else 0
            cv.tfo = tfo
            cv.syn_data = plen
        elif d == cv.client_dir:
            cv.syn_n += 1
            cv.lastsyn_frame = frame
            cv.lastsyn_ts = ts
            if cv.hs_end != HSEnd.NONE:  # the client tries again after a RST: the attempt goes on
                cv.hs_end = HSEnd.NONE
                cv.hs_state = HS.SYN
        else:
            cv.hs_simopen = 1
    elif syn and ackf:
        # it answers the SYN when it ACKs ISN+1, or ISN+1+data when a TFO server accepted the SYN's data
        isn = cv.client_isn
        answers = cv.syn_n > 0 and d != cv.client_dir and (
            ack == ((isn + 1) & SEQ_MASK) or ack == ((isn + 1 + cv.syn_data) & SEQ_MASK))
        unseen_syn = cv.syn_n == 0 and cv.sa_n == 0
        if answers or unseen_syn:
            other_isn = False
            if cv.sa_n > 0 and seq != cv.server_isn and answers and cv.lastsyn_ts > cv.lastsa_ts:
                cv.sa_n = 0  # a new ISN answering a SYN sent after the last SYN-ACK: the server started over
            if cv.sa_n == 0:
                cv.server_isn = seq
                cv.mss_s = mss
                cv.ws_s = wscale
                cv.sack_s = sackp
                cv.ts_s = 1 if tsval >= 0 else 0
            elif seq != cv.server_isn:
                other_isn = True  # a SYN-ACK with another ISN is not a retry of this one
            if not other_isn:
                cv.sa_n += 1
                cv.lastsa_frame = frame
                cv.lastsa_ts = ts
                cv.lastsa_syn_frame = cv.lastsyn_frame
                cv.lastsa_syn_ts = cv.lastsyn_ts
                if answers and cv.hs_state < HS.SYNACK:
                    cv.hs_state = HS.SYNACK
    elif ackf:
        if (cv.hs_state == HS.SYNACK and cv.hs_end == HSEnd.NONE and d == cv.client_dir
                and ack == ((cv.server_isn + 1) & SEQ_MASK)):
            cv.hs_state = HS.DONE
            cv.ack_frame = frame
            cv.ack_ts = ts
            cv.syn_frame = cv.lastsa_syn_frame
            cv.syn_ts = cv.lastsa_syn_ts
            cv.sa_frame = cv.lastsa_frame
            cv.sa_ts = cv.lastsa_ts
            cv.rtt = ts - cv.lastsa_syn_ts
            if cv.hs_decided == NONE:
                cv.hs_decided = batch
    if (flags & TH_RST) != 0 and cv.hs_end == HSEnd.NONE:
        state = cv.hs_state
        if (state == HS.SYN and d != cv.client_dir) or state == HS.SYNACK:
            cv.hs_end = HSEnd.REFUSED if state == HS.SYN else HSEnd.RESET
            cv.end_frame = frame
            cv.end_ts = ts
            if cv.hs_decided == NONE:
                cv.hs_decided = batch


def outcomes(conv: np.ndarray, server_pkts: np.ndarray) -> np.ndarray:
    """The outcome label of every connection row of ``conv`` (vectorized)."""
    state, end = conv["hs_state"], conv["hs_end"]
    conditions = [
        conv["syn_n"] == 0,
        conv["hs_simopen"] == 1,
        end == HSEnd.REFUSED,
        state == HS.DONE,
        end == HSEnd.RESET,
        state == HS.SYNACK,
        server_pkts == 0,
    ]
    labels = np.array(["midstream", "simultaneous_open", "refused", "established", "reset", "incomplete", "no_reply"],
                      dtype=object)
    return labels[np.select(conditions, np.arange(len(labels)), default=5)]  # (5: incomplete; one object a label)


def _float(v: np.ndarray, missing: np.ndarray):
    """A nullable Float64 column: ``v`` where not ``missing``."""
    return Masked(np.where(missing, 0.0, v).astype(np.float64), missing)


def _ts(ns: np.ndarray):
    return _float(seconds(ns), ns == NONE)


def _frame(v: np.ndarray):
    return Masked(v.astype(np.int64), v == NONE)


def _delta(a: np.ndarray, b: np.ndarray):
    return _float((a - b) / 1e9, (a == NONE) | (b == NONE))


def handshake_columns(conv: np.ndarray, server_pkts: np.ndarray) -> dict:
    """The handshake-specific columns for rows of ``conv`` (addresses are added by the caller): object
    arrays, and ``Masked`` pairs for the nullable columns."""
    done = conv["hs_state"] == HS.DONE
    syn_ts = np.where(done, conv["syn_ts"], conv["lastsa_syn_ts"])
    syn_frame = np.where(done, conv["syn_frame"], conv["lastsa_syn_frame"])
    syn_ts = np.where(syn_ts == NONE, conv["syn1_ts"], syn_ts)
    syn_frame = np.where(syn_frame == NONE, conv["syn1_frame"], syn_frame)
    sa_ts = np.where(done, conv["sa_ts"], conv["lastsa_ts"])
    sa_frame = np.where(done, conv["sa_frame"], conv["lastsa_frame"])
    ack_ts = conv["ack_ts"]
    opt = lambda v: Masked(v.astype(np.int64), v < 0)  # noqa: E731
    both = lambda a, b: Masked((a == 1) & (b == 1), (a == NONE) | (b == NONE))  # noqa: E731
    irtt = conv["irtt"]
    return {
        "outcome": outcomes(conv, server_pkts),
        "syn_frame": _frame(syn_frame), "synack_frame": _frame(sa_frame), "ack_frame": _frame(conv["ack_frame"]),
        "syn_ts": _ts(syn_ts), "synack_ts": _ts(sa_ts), "ack_ts": _ts(ack_ts),
        "syn_retries": opt(np.maximum(conv["syn_n"] - 1, 0)),
        "synack_retries": opt(np.maximum(conv["sa_n"] - 1, 0)),
        "server_rtt": _delta(sa_ts, syn_ts), "client_rtt": _delta(ack_ts, sa_ts),
        "handshake_rtt": _delta(ack_ts, syn_ts),
        "first_syn_frame": _frame(conv["syn1_frame"]), "first_syn_ts": _ts(conv["syn1_ts"]),
        "setup_time": _delta(ack_ts, conv["syn1_ts"]),
        "rst_frame": _frame(conv["end_frame"]),
        "wireshark_irtt": _float(irtt / 1e9, irtt == 0),
        "mss_client": opt(conv["mss_c"]), "mss_server": opt(conv["mss_s"]),
        "wscale_client": opt(conv["ws_c"]), "wscale_server": opt(conv["ws_s"]),
        "sack_permitted": both(conv["sack_c"], conv["sack_s"]),
        "timestamps": both(conv["ts_c"], conv["ts_s"]),
        "tfo": Masked((conv["tfo"] >= 0) | (conv["syn_data"] > 0), conv["syn_n"] == 0),
        "syn_data_bytes": opt(np.where(conv["syn_n"] > 0, conv["syn_data"], NONE)),
    }
