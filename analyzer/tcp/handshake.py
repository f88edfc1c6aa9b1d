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
- Wireshark's own iRTT (``tcp.analysis.initial_rtt``) is also tracked, exactly as it computes it: time of
  the first packet with ACK and without SYN (either side, RST-ACK included) minus time of the most recent
  SYN. It sets the out-of-order threshold in ``sequence.py``.
"""
from __future__ import annotations

import numpy as np

from ..jit import njit
from ..schema import TH_ACK, TH_RST, TH_SYN
from ..table import Masked
from .state import (C_ACK_FRAME, C_ACK_TS, C_CLIENT_DIR, C_CLIENT_ISN, C_END_FRAME, C_END_TS, C_HS_DECIDED,
                    C_HS_END, C_HS_SIMOPEN, C_HS_STATE, C_IRTT, C_LASTSA_FRAME, C_LASTSA_SYN_FRAME,
                    C_LASTSA_SYN_TS, C_LASTSA_TS, C_LASTSYN_FRAME, C_LASTSYN_TS, C_MRU_SYN_TS, C_MSS_C, C_MSS_S,
                    C_SA_FRAME, C_SA_N, C_SA_TS, C_SACK_C, C_SACK_S, C_SERVER_ISN, C_SYN1_FRAME, C_SYN1_TS,
                    C_SYN_DATA, C_SYN_FRAME, C_SYN_N, C_SYN_TS, C_TFO, C_TS_C, C_TS_S, C_WS_C, C_WS_S, NONE)

# handshake progress (C_HS_STATE) and how it ended early (C_HS_END)
HS_NONE, HS_SYN, HS_SYNACK, HS_DONE = 0, 1, 2, 3
HS_END_NONE, HS_END_REFUSED, HS_END_RESET = 0, 1, 2
SEQ_MASK = 0xFFFFFFFF


@njit(cache=True, nogil=True, inline="always")
def track_handshake(conv, c, d, flags, seq, ack, frame, ts, plen, mss, wscale, sackp, tsval, tfo, batch):
    """Update connection ``c``'s handshake with one packet sent in direction ``d`` (0 or 1)."""
    syn = (flags & TH_SYN) != 0
    ackf = (flags & TH_ACK) != 0
    if syn and not ackf:
        conv[c, C_MRU_SYN_TS] = ts
        if conv[c, C_SYN_N] == 0:
            conv[c, C_CLIENT_DIR] = d
            conv[c, C_SYN_N] = 1
            conv[c, C_SYN1_FRAME] = frame
            conv[c, C_SYN1_TS] = ts
            conv[c, C_LASTSYN_FRAME] = frame
            conv[c, C_LASTSYN_TS] = ts
            conv[c, C_CLIENT_ISN] = seq
            if conv[c, C_HS_STATE] < HS_SYN:
                conv[c, C_HS_STATE] = HS_SYN
            conv[c, C_MSS_C] = mss
            conv[c, C_WS_C] = wscale
            conv[c, C_SACK_C] = sackp
            conv[c, C_TS_C] = 1 if tsval >= 0 else 0
            conv[c, C_TFO] = tfo
            conv[c, C_SYN_DATA] = plen
        elif d == conv[c, C_CLIENT_DIR]:
            conv[c, C_SYN_N] += 1
            conv[c, C_LASTSYN_FRAME] = frame
            conv[c, C_LASTSYN_TS] = ts
        else:
            conv[c, C_HS_SIMOPEN] = 1
    elif syn and ackf:
        # it answers the SYN when it ACKs ISN+1, or ISN+1+data when a TFO server accepted the SYN's data
        isn = conv[c, C_CLIENT_ISN]
        answers = conv[c, C_SYN_N] > 0 and d != conv[c, C_CLIENT_DIR] and (
            ack == ((isn + 1) & SEQ_MASK) or ack == ((isn + 1 + conv[c, C_SYN_DATA]) & SEQ_MASK))
        unseen_syn = conv[c, C_SYN_N] == 0 and conv[c, C_SA_N] == 0
        if answers or unseen_syn:
            other_isn = False
            if conv[c, C_SA_N] == 0:
                conv[c, C_SERVER_ISN] = seq
                conv[c, C_MSS_S] = mss
                conv[c, C_WS_S] = wscale
                conv[c, C_SACK_S] = sackp
                conv[c, C_TS_S] = 1 if tsval >= 0 else 0
            elif seq != conv[c, C_SERVER_ISN]:
                other_isn = True  # a SYN-ACK with another ISN is not a retry of this one
            if not other_isn:
                conv[c, C_SA_N] += 1
                conv[c, C_LASTSA_FRAME] = frame
                conv[c, C_LASTSA_TS] = ts
                conv[c, C_LASTSA_SYN_FRAME] = conv[c, C_LASTSYN_FRAME]
                conv[c, C_LASTSA_SYN_TS] = conv[c, C_LASTSYN_TS]
                if answers and conv[c, C_HS_STATE] < HS_SYNACK:
                    conv[c, C_HS_STATE] = HS_SYNACK
    elif ackf:
        if (conv[c, C_HS_STATE] == HS_SYNACK and conv[c, C_HS_END] == HS_END_NONE and d == conv[c, C_CLIENT_DIR]
                and ack == ((conv[c, C_SERVER_ISN] + 1) & SEQ_MASK)):
            conv[c, C_HS_STATE] = HS_DONE
            conv[c, C_ACK_FRAME] = frame
            conv[c, C_ACK_TS] = ts
            conv[c, C_SYN_FRAME] = conv[c, C_LASTSA_SYN_FRAME]
            conv[c, C_SYN_TS] = conv[c, C_LASTSA_SYN_TS]
            conv[c, C_SA_FRAME] = conv[c, C_LASTSA_FRAME]
            conv[c, C_SA_TS] = conv[c, C_LASTSA_TS]
            if conv[c, C_HS_DECIDED] == NONE:
                conv[c, C_HS_DECIDED] = batch
    if (flags & TH_RST) != 0 and conv[c, C_HS_END] == HS_END_NONE:
        state = conv[c, C_HS_STATE]
        if (state == HS_SYN and d != conv[c, C_CLIENT_DIR]) or state == HS_SYNACK:
            conv[c, C_HS_END] = HS_END_REFUSED if state == HS_SYN else HS_END_RESET
            conv[c, C_END_FRAME] = frame
            conv[c, C_END_TS] = ts
            if conv[c, C_HS_DECIDED] == NONE:
                conv[c, C_HS_DECIDED] = batch
    # Wireshark's iRTT (reference B.3), stored once; 0 means "not known yet", as in Wireshark
    if ackf and not syn and conv[c, C_MRU_SYN_TS] != NONE and conv[c, C_IRTT] == 0:
        conv[c, C_IRTT] = ts - conv[c, C_MRU_SYN_TS]


def outcomes(conv: np.ndarray, server_pkts: np.ndarray) -> np.ndarray:
    """The outcome label of every connection row of ``conv`` (vectorized)."""
    state, end = conv[:, C_HS_STATE], conv[:, C_HS_END]
    conditions = [
        conv[:, C_SYN_N] == 0,
        conv[:, C_HS_SIMOPEN] == 1,
        end == HS_END_REFUSED,
        state == HS_DONE,
        end == HS_END_RESET,
        state == HS_SYNACK,
        server_pkts == 0,
    ]
    labels = ["midstream", "simultaneous_open", "refused", "established", "reset", "incomplete", "no_reply"]
    return np.select(conditions, labels, default="incomplete").astype(object)


def _float(v: np.ndarray, missing: np.ndarray):
    """A nullable Float64 column: ``v`` where not ``missing``."""
    return Masked(np.where(missing, 0.0, v).astype(np.float64), missing)


def _ts(ns: np.ndarray):
    return _float(ns / 1e9, ns == NONE)


def _frame(v: np.ndarray):
    return Masked(v.astype(np.int64), v == NONE)


def _delta(a: np.ndarray, b: np.ndarray):
    return _float((a - b) / 1e9, (a == NONE) | (b == NONE))


def handshake_columns(conv: np.ndarray, server_pkts: np.ndarray) -> dict:
    """The handshake-specific columns for rows of ``conv`` (addresses are added by the caller): object
    arrays, and ``Masked`` pairs for the nullable columns."""
    done = conv[:, C_HS_STATE] == HS_DONE
    syn_ts = np.where(done, conv[:, C_SYN_TS], conv[:, C_LASTSA_SYN_TS])
    syn_frame = np.where(done, conv[:, C_SYN_FRAME], conv[:, C_LASTSA_SYN_FRAME])
    syn_ts = np.where(syn_ts == NONE, conv[:, C_SYN1_TS], syn_ts)
    syn_frame = np.where(syn_frame == NONE, conv[:, C_SYN1_FRAME], syn_frame)
    sa_ts = np.where(done, conv[:, C_SA_TS], conv[:, C_LASTSA_TS])
    sa_frame = np.where(done, conv[:, C_SA_FRAME], conv[:, C_LASTSA_FRAME])
    ack_ts = conv[:, C_ACK_TS]
    opt = lambda v: Masked(v.astype(np.int64), v < 0)  # noqa: E731
    both = lambda a, b: Masked((a == 1) & (b == 1), (a == NONE) | (b == NONE))  # noqa: E731
    irtt = conv[:, C_IRTT]
    return {
        "outcome": outcomes(conv, server_pkts),
        "syn_frame": _frame(syn_frame), "synack_frame": _frame(sa_frame), "ack_frame": _frame(conv[:, C_ACK_FRAME]),
        "syn_ts": _ts(syn_ts), "synack_ts": _ts(sa_ts), "ack_ts": _ts(ack_ts),
        "syn_retries": opt(np.maximum(conv[:, C_SYN_N] - 1, 0)),
        "synack_retries": opt(np.maximum(conv[:, C_SA_N] - 1, 0)),
        "server_rtt": _delta(sa_ts, syn_ts), "client_rtt": _delta(ack_ts, sa_ts),
        "handshake_rtt": _delta(ack_ts, syn_ts),
        "first_syn_frame": _frame(conv[:, C_SYN1_FRAME]), "first_syn_ts": _ts(conv[:, C_SYN1_TS]),
        "setup_time": _delta(ack_ts, conv[:, C_SYN1_TS]),
        "rst_frame": _frame(conv[:, C_END_FRAME]),
        "wireshark_irtt": _float(irtt / 1e9, irtt == 0),
        "mss_client": opt(conv[:, C_MSS_C]), "mss_server": opt(conv[:, C_MSS_S]),
        "wscale_client": opt(conv[:, C_WS_C]), "wscale_server": opt(conv[:, C_WS_S]),
        "sack_permitted": both(conv[:, C_SACK_C], conv[:, C_SACK_S]),
        "timestamps": both(conv[:, C_TS_C], conv[:, C_TS_S]),
        "tfo": Masked((conv[:, C_TFO] >= 0) | (conv[:, C_SYN_DATA] > 0), conv[:, C_SYN_N] == 0),
        "syn_data_bytes": opt(np.where(conv[:, C_SYN_N] > 0, conv[:, C_SYN_DATA], NONE)),
    }
