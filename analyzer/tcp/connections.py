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

import numpy as np

from ..jit import njit
from ..schema import TH_ACK, TH_FIN, TH_RST, TH_SYN
from .state import (C_COMPLETENESS, C_HIST_LEN, D_Z_FIN_SEQ, D_Z_RST_SEQ, D_Z_RXMIT, D_Z_SYN_SEQ, D_Z_ZWIN,
                    D_ZONCE, D_ZSTATE, HISTORY_LEN, NONE)

# Wireshark tcp.completeness bits (reference B.4)
COMPLETE_SYN, COMPLETE_SYNACK, COMPLETE_ACK, COMPLETE_DATA, COMPLETE_FIN, COMPLETE_RST = 1, 2, 4, 8, 16, 32

# Zeek endpoint states (TCP_Endpoint.h)
ZS_INACTIVE, ZS_SYN_SENT, ZS_SYN_ACK_SENT, ZS_PARTIAL, ZS_ESTABLISHED, ZS_CLOSED, ZS_RESET = range(7)

# history letters recorded at most once per direction (bit in D_ZONCE)
_ONCE_A, _ONCE_D, _ONCE_I, _ONCE_Q = 1, 2, 4, 8


@njit(cache=True, nogil=True, inline="always")
def _add_letter(conv, history, c, d, upper):
    n = conv[c, C_HIST_LEN]
    if n < HISTORY_LEN:
        history[c, n] = upper if d == 0 else upper + 32  # lowercase for direction 1; swapped later if needed
        conv[c, C_HIST_LEN] = n + 1


@njit(cache=True, nogil=True, inline="always")
def _once(conv, dirs, history, c, d, fw, bit, upper):
    if (dirs[fw, D_ZONCE] & bit) == 0:
        dirs[fw, D_ZONCE] |= bit
        _add_letter(conv, history, c, d, upper)


@njit(cache=True, nogil=True, inline="always")
def _power_of_ten(n):
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


@njit(cache=True, nogil=True, inline="always")
def track_connection(conv, dirs, history, c, d, flags, seq, seglen, window, rexmit):
    """Zeek history/state and Wireshark completeness for one packet (``rexmit``: Zeek's T rule)."""
    fw = 2 * c + d
    rv = 2 * c + 1 - d
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
    conv[c, C_COMPLETENESS] |= bits
    # endpoint states
    e = dirs[fw, D_ZSTATE]
    p = dirs[rv, D_ZSTATE]
    if rst:
        e = ZS_RESET
    elif fin:
        if e != ZS_RESET:
            e = ZS_CLOSED
    elif syn and not ackf:
        if e == ZS_INACTIVE:
            e = ZS_SYN_SENT
    elif syn:
        if e == ZS_INACTIVE or e == ZS_SYN_SENT:
            e = ZS_SYN_ACK_SENT
    else:
        if e == ZS_INACTIVE:
            e = ZS_PARTIAL
        elif (e == ZS_SYN_SENT or e == ZS_SYN_ACK_SENT) and ackf:
            e = ZS_ESTABLISHED
            if p == ZS_SYN_SENT or p == ZS_SYN_ACK_SENT:
                dirs[rv, D_ZSTATE] = ZS_ESTABLISHED
    dirs[fw, D_ZSTATE] = e
    # history letters
    n_special = int(syn) + int(fin) + int(rst)
    if n_special > 1:
        if fin and rst:
            _once(conv, dirs, history, c, d, fw, _ONCE_I, 73)  # 'I'
        else:
            _once(conv, dirs, history, c, d, fw, _ONCE_Q, 81)  # 'Q'
    elif syn:
        if dirs[fw, D_Z_SYN_SEQ] == NONE or dirs[fw, D_Z_SYN_SEQ] != seq:
            _add_letter(conv, history, c, d, 72 if ackf else 83)  # 'H' / 'S'
        dirs[fw, D_Z_SYN_SEQ] = seq
    elif fin:
        end = (seq + seglen) & 0xFFFFFFFF
        if dirs[fw, D_Z_FIN_SEQ] == NONE or dirs[fw, D_Z_FIN_SEQ] != end:
            _add_letter(conv, history, c, d, 70)  # 'F'
        dirs[fw, D_Z_FIN_SEQ] = end
    elif rst:
        if dirs[fw, D_Z_RST_SEQ] == NONE or dirs[fw, D_Z_RST_SEQ] != seq:
            _add_letter(conv, history, c, d, 82)  # 'R'
        dirs[fw, D_Z_RST_SEQ] = seq
    elif seglen > 0:
        _once(conv, dirs, history, c, d, fw, _ONCE_D, 68)  # 'D'
    elif ackf:
        _once(conv, dirs, history, c, d, fw, _ONCE_A, 65)  # 'A'
    if rexmit:
        dirs[fw, D_Z_RXMIT] += 1
        if _power_of_ten(dirs[fw, D_Z_RXMIT]):
            _add_letter(conv, history, c, d, 84)  # 'T'
    if window == 0 and not syn and not rst:
        dirs[fw, D_Z_ZWIN] += 1
        if _power_of_ten(dirs[fw, D_Z_ZWIN]):
            _add_letter(conv, history, c, d, 87)  # 'W'


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
    inactive_or_partial = lambda s: (s == ZS_INACTIVE) | (s == ZS_PARTIAL)  # noqa: E731
    rstos0 = np.zeros(len(history), dtype=bool)
    maybe = np.flatnonzero(orig == ZS_RESET)  # the pattern is only looked at for these
    if len(maybe):
        rstos0[maybe] = [_RSTOS0.match(h) is not None for h in history[maybe].tolist()]
    conditions = [
        (resp == ZS_RESET) & ((orig == ZS_SYN_SENT) | (orig == ZS_SYN_ACK_SENT)
                              | ((orig == ZS_RESET) & (orig_bytes == 0) & (resp_bytes == 0))),
        (resp == ZS_RESET) & inactive_or_partial(orig),
        resp == ZS_RESET,
        (orig == ZS_RESET) & inactive_or_partial(resp) & rstos0,
        (orig == ZS_RESET) & inactive_or_partial(resp),
        orig == ZS_RESET,
        (orig == ZS_CLOSED) & (resp == ZS_CLOSED),
        (orig == ZS_CLOSED) & (resp == ZS_INACTIVE),
        orig == ZS_CLOSED,
        (resp == ZS_CLOSED) & (orig == ZS_INACTIVE),
        resp == ZS_CLOSED,
        (orig == ZS_SYN_SENT) & (resp == ZS_INACTIVE),
        (orig == ZS_ESTABLISHED) & (resp == ZS_ESTABLISHED),
    ]
    labels = ["REJ", "RSTRH", "RSTR", "RSTOS0", "OTH", "RSTO", "SF", "SH", "S2", "SHR", "S3", "S0", "S1"]
    return np.select(conditions, labels, default="OTH").astype(object)
