"""Per-connection facts: Zeek ``history`` and ``conn_state``, Wireshark ``completeness``, and the table.

Zeek (reference section C) is followed with these simplifications, each a documented caveat:

- Endpoint states are tracked per direction: INACTIVE, SYN_SENT (SYN), SYN_ACK_SENT (SYN-ACK),
  PARTIAL (first packet without SYN), ESTABLISHED (the SYN sender ACKs the SYN-ACK), CLOSED (FIN),
  RESET (RST). ``conn_state`` is then derived from the two states in the order of Zeek's
  ``conn_state()`` (reference C.5).
- History letters: ``S H A D F R I Q T W`` as in C.2. ``T`` uses Zeek's own rule (payload that does not
  advance the highest sequence number, so reordering and 1-byte keep-alives count too) and ``T``/``W`` are
  log-scaled (1st, 10th, 100th ...). ``C`` (bad checksum, not verified here), ``G`` (content gaps, no
  reassembly here) and ``^`` (Zeek's port heuristic; our client is always the SYN sender) never appear.
- Uppercase letters are the client's, lowercase the server's.
"""
from __future__ import annotations

import re
from enum import IntEnum, auto

import numpy as np

from ..jit import njit
from ..schema import TH_ACK, TH_FIN, TH_RST, TH_SYN
from .state import HISTORY_LEN, NONE

# Wireshark tcp.completeness bits (reference B.4)
COMPLETE_SYN, COMPLETE_SYNACK, COMPLETE_ACK, COMPLETE_DATA, COMPLETE_FIN, COMPLETE_RST = 1, 2, 4, 8, 16, 32



class ZS(IntEnum):
    """Zeek endpoint states (``TCP_Endpoint.h``), ``DIRECTION.zstate``."""

    INACTIVE = 0
    SYN_SENT = auto()  # sent a SYN
    SYN_ACK_SENT = auto()  # sent a SYN-ACK
    PARTIAL = auto()  # its first packet had no SYN
    ESTABLISHED = auto()  # the SYN sender acknowledged the SYN-ACK
    CLOSED = auto()  # sent a FIN
    RESET = auto()  # sent a RST


# history letters recorded at most once per direction (bits of ``DIRECTION.zonce``)
_ONCE_A, _ONCE_D, _ONCE_I, _ONCE_Q = 1, 2, 4, 8


@njit(cache=True, nogil=True, _nrt=False)
def _add_letter(cv, di, upper):
    n = cv.hist_len
    if n < HISTORY_LEN:
        cv.history[n] = upper if di == 0 else upper + 32  # lowercase for direction 1; swapped later if needed
        cv.hist_len = n + 1


@njit(cache=True, nogil=True, _nrt=False)
def _once(cv, d, di, bit, upper):
    if (d.zonce & bit) == 0:
        d.zonce |= bit
        _add_letter(cv, di, upper)


@njit(cache=True, nogil=True, _nrt=False)
def _power_of_ten(n):
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


@njit(cache=True, nogil=True, _nrt=False)
def track_connection(cv, d, r, di, flags, seq, seglen, window, rexmit):
    """Zeek history/state and Wireshark completeness for one packet of connection ``cv``, sent in direction
    ``d`` (number ``di``; ``r`` is the reverse direction); ``rexmit``: Zeek's T rule."""
    syn = (flags & TH_SYN) != 0
    fin = (flags & TH_FIN) != 0
    rst = (flags & TH_RST) != 0
    ackf = (flags & TH_ACK) != 0
    # completeness (reference B.4: the ACK bit only for a zero-length segment with ACK and no SYN)
    bits = 0
    if syn:
        bits |= COMPLETE_SYNACK if ackf else COMPLETE_SYN
    if ackf and not syn and seglen == 0:
        bits |= COMPLETE_ACK
    if seglen > 0:
        bits |= COMPLETE_DATA
    if fin:
        bits |= COMPLETE_FIN
    if rst:
        bits |= COMPLETE_RST
    cv.completeness |= bits
    # endpoint states
    e = d.zstate
    p = r.zstate
    if rst:
        e = ZS.RESET
    elif fin:
        if e != ZS.RESET:
            e = ZS.CLOSED
    elif syn and not ackf:
        if e == ZS.INACTIVE:
            e = ZS.SYN_SENT
    elif syn:
        if e == ZS.INACTIVE or e == ZS.SYN_SENT:
            e = ZS.SYN_ACK_SENT
    else:
        if e == ZS.INACTIVE:
            e = ZS.PARTIAL
        elif (e == ZS.SYN_SENT or e == ZS.SYN_ACK_SENT) and ackf:
            e = ZS.ESTABLISHED
            if p == ZS.SYN_SENT or p == ZS.SYN_ACK_SENT:
                r.zstate = ZS.ESTABLISHED
    d.zstate = e
    # history letters
    n_special = int(syn) + int(fin) + int(rst)
    if n_special > 1:
        if fin and rst:
            _once(cv, d, di, np.int64(_ONCE_I), np.int64(73))  # 'I'
        else:
            _once(cv, d, di, np.int64(_ONCE_Q), np.int64(81))  # 'Q'
    elif syn:
        if d.z_syn_seq == NONE or d.z_syn_seq != seq:
            _add_letter(cv, di, 72 if ackf else 83)  # 'H' / 'S'
        d.z_syn_seq = seq
    elif fin:
        end = (seq + seglen) & 0xFFFFFFFF
        if d.z_fin_seq == NONE or d.z_fin_seq != end:
            _add_letter(cv, di, np.int64(70))  # 'F'
        d.z_fin_seq = end
    elif rst:
        if d.z_rst_seq == NONE or d.z_rst_seq != seq:
            _add_letter(cv, di, np.int64(82))  # 'R'
        d.z_rst_seq = seq
    elif seglen > 0:
        _once(cv, d, di, np.int64(_ONCE_D), np.int64(68))  # 'D'
    elif ackf:
        _once(cv, d, di, np.int64(_ONCE_A), np.int64(65))  # 'A'
    if rexmit:
        d.z_rxmit += 1
        if _power_of_ten(d.z_rxmit):
            _add_letter(cv, di, np.int64(84))  # 'T'
    if window == 0 and not syn and not rst:
        d.z_zwin += 1
        if _power_of_ten(d.z_zwin):
            _add_letter(cv, di, np.int64(87))  # 'W'


def histories(history: np.ndarray, lengths: np.ndarray, client_dir: np.ndarray) -> np.ndarray:
    """History strings, uppercase for the client (vectorized over connections)."""
    if len(history) == 0:
        return np.array([], dtype=object)
    text = np.char.decode(np.ascontiguousarray(history).view(f"S{HISTORY_LEN}").reshape(-1), "ascii")
    flip = client_dir == 1
    if flip.any():
        text = text.astype(object)
        text[flip] = np.char.swapcase(text[flip].astype(str))
    return text.astype(object)


def completeness(bits: np.ndarray, packets: np.ndarray) -> np.ndarray:
    """Wireshark's final tcp.completeness. Quirk kept for agreement (checked on tshark 4.0.17): a
    one-packet conversation reports 0 unless that packet is a SYN without ACK."""
    return np.where((packets == 1) & (bits != COMPLETE_SYN), 0, bits)


_RSTOS0 = re.compile(r"\^?S[^HAFGIQ]*R")  # Zeek's RSTOS0 history pattern


def conn_states(orig: np.ndarray, resp: np.ndarray, orig_bytes: np.ndarray, resp_bytes: np.ndarray,
                history: np.ndarray) -> np.ndarray:
    """Zeek conn_state from the two endpoint states (reference C.5, evaluated in its order)."""
    inactive_or_partial = lambda s: (s == ZS.INACTIVE) | (s == ZS.PARTIAL)  # noqa: E731
    rstos0 = np.zeros(len(history), dtype=bool)
    maybe = np.flatnonzero(orig == ZS.RESET)  # the pattern is only looked at for these
    if len(maybe):
        rstos0[maybe] = [_RSTOS0.match(h) is not None for h in history[maybe].tolist()]
    conditions = [
        (resp == ZS.RESET) & ((orig == ZS.SYN_SENT) | (orig == ZS.SYN_ACK_SENT)
                              | ((orig == ZS.RESET) & (orig_bytes == 0) & (resp_bytes == 0))),
        (resp == ZS.RESET) & inactive_or_partial(orig),
        resp == ZS.RESET,
        (orig == ZS.RESET) & inactive_or_partial(resp) & rstos0,
        (orig == ZS.RESET) & inactive_or_partial(resp),
        orig == ZS.RESET,
        (orig == ZS.CLOSED) & (resp == ZS.CLOSED),
        (orig == ZS.CLOSED) & (resp == ZS.INACTIVE),
        orig == ZS.CLOSED,
        (resp == ZS.CLOSED) & (orig == ZS.INACTIVE),
        resp == ZS.CLOSED,
        (orig == ZS.SYN_SENT) & (resp == ZS.INACTIVE),
        (orig == ZS.ESTABLISHED) & (resp == ZS.ESTABLISHED),
    ]
    labels = np.array(["REJ", "RSTRH", "RSTR", "RSTOS0", "OTH", "RSTO", "SF", "SH", "S2", "SHR", "S3", "S0", "S1"],
                      dtype=object)
    return labels[np.select(conditions, np.arange(len(labels)), default=4)]  # (4: OTH; one object per label)
