"""Per-flow state carried from one batch to the next: numpy record arrays with named fields.

The sequential part of the engine (``sequence.analyze_batch``, compiled with numba) reads and writes
these arrays; nothing else is kept between batches. Each kind of record is declared once below, a
comment per field, in the manner of Wireshark's ``tcp_flow_t``/``struct tcp_analysis``
(``packet-tcp.h``) and Zeek's ``TCP_Endpoint``; numba compiles ``d.nextseq`` to a plain load.

- ``conv``  ``CONVERSATION`` ``[conversations]``: one record per connection (``stream`` = its index).
- ``dirs``  ``DIRECTION`` ``[2 * conversations]``: one per direction; record ``2*c`` is the direction of
  the connection's first packet, ``2*c+1`` the opposite one (the client may be either).
- ``records`` ``SENT`` pool: recent transmissions per direction (a linked list through ``prev``), used
  to find a retransmission's original frame; compacted by the engine (``sequence.compact_records``).
- ``pend`` ``PENDING`` ``[rows, PEND_SLOTS]``: retransmissions still waiting for the receiver's D-SACK
  or timestamp echo: a pool whose rows are lent to a direction while it has some (most directions never
  do, so memory follows the directions with pending ones, not all of them).
- ``counter`` ``COUNTERS`` ``[1]``: engine-wide counts and the pools' bookkeeping.
- events ``EVENT``: one row per labelled segment, kept by the engine (not per flow) until the tables are
  built, in one array that the compiled pass writes to (later evidence that an earlier row's
  retransmission was not needed goes straight to that row's ``spur`` fields).
- ``tuple_conv``: the current connection of each 4-tuple (port reuse), ``tuple_last``: the time of its last
  analyzed packet (stragglers), ``gone``: 1 or 2 for a connection that has ended (``sequence.ended``),
  ``freed``: 1 once its rows are written and its records' pages handed back (they read as zeros;
  ``engine.Engine`` keeps what its later rows need in small arrays of its own). The engine frees ended
  connections a few thousand at a time, so between the two a connection is gone but its records intact.

Adding a field: add one line to its record below (name, initial value, comment). Everything that
copies records (creation, growth) copies whole records, so nothing else changes.
"""
from __future__ import annotations

import mmap
import sys
from enum import IntEnum, auto

import numpy as np

from ..decode.store import NO_CLOCK

NONE = -1  # "not set" for frames, times and options

HOLES = 16  # gaps remembered per direction; when full the lowest one is forgotten (its bytes count as seen)
HISTORY_LEN = 32  # Zeek history letters kept per connection
RECORD_WALK = 64  # sent-segment records searched back for a retransmission's original frame
# records a compaction keeps per direction of a connection that is over (both FINs acknowledged, or reset):
# enough for a late repeat of its last segments (the FIN), whose original is then still found
RECORD_KEEP_OVER = 4
# Retransmissions kept per direction until the receiver shows whether they were needed (when all slots
# are taken, the oldest is forgotten): a timeout's go-back-N resends a whole window before the first D-SACK
# comes back
PEND_SLOTS = 256
# Hole fills remembered per direction beyond the record walk: a segment that filled a gap below the top, so
# that its original, delayed longer than RECORD_WALK later segments, is still recognised when it comes
FILLS = 8
RECENT = 4  # packets per direction remembered to recognise a capture copy that is not the next packet
FILL_START, FILL_END, FILL_FRAME, FILL_TS, FILL_IPID, FILL_TSVAL, FILL_EV = range(7)


def record(*fields: tuple) -> tuple[np.dtype, np.ndarray]:
    """A record dtype from ``(name, initial value, comment)`` or ``(name, dtype, initial value, comment)``
    lines (int64 when no dtype is given), and one record holding every field's initial value."""
    spec, init = [], {}
    for f in fields:
        name, kind, value = (f[0], "i8", f[1]) if len(f) == 3 else f[:3]
        spec.append((name, kind))
        init[name] = value
    dtype = np.dtype(spec, align=True)
    first = np.zeros(1, dtype=dtype)
    for name, value in init.items():
        first[name] = value
    first.flags.writeable = False
    return dtype, first


# --- one connection ------------------------------------------------------------------------------
CONVERSATION, NEW_CONVERSATION = record(
    ("tuple", NONE, "its 4-tuple (flows.TupleTable id)"),
    ("first_lo", NONE, "1 when its first packet came from the 4-tuple's lower endpoint"),
    ("client_dir", 0, "direction (0: of the first packet, 1: the other) of the client, the first SYN's sender"),
    ("first_frame", NONE, "its first frame"),
    ("first_ts", NONE, "time of its first frame, ns"),
    ("last_frame", NONE, "its latest frame"),
    ("last_ts", NONE, "time of its latest frame, ns"),
    ("vlan", NONE, "outer VLAN id of its first packet (-1 untagged)"),
    ("reused", 0, "1 when a SYN with a new ISN on a known 4-tuple started it (Wireshark reused_ports)"),
    ("completeness", 0, "Wireshark tcp.completeness bits seen so far (connections.COMPLETE_*)"),
    # Wireshark's initial RTT (reference B.3; wireshark.py)
    ("irtt", 0, "Wireshark's iRTT, ns; 0 = not known yet, as in Wireshark"),
    ("ws_mru_syn_ts", 0, "time of the most recent SYN without ACK (Wireshark ts_mru_syn), ns; 0 = none"),
    ("rtt", 0, "our round-trip estimate at the capture point, ns: the handshake's SYN -> ACK; 0 = unknown"),
    # handshake progress (handshake.py)
    ("hs_state", 0, "handshake progress: handshake.HS_*"),
    ("hs_end", 0, "how it ended before completing: handshake.HS_END_*"),
    ("hs_simopen", 0, "1 when both sides sent a SYN without ACK (simultaneous open)"),
    ("hs_decided", NONE, "batch in which the handshake reached an outcome (for live display)"),
    ("client_isn", NONE, "sequence number of the client's first SYN"),
    ("server_isn", NONE, "sequence number of the server's first SYN-ACK answering it"),
    ("syn_n", 0, "client SYNs seen (same ISN)"),
    ("syn1_frame", NONE, "the first SYN"),
    ("syn1_ts", NONE, "its time"),
    ("lastsyn_frame", NONE, "the latest SYN"),
    ("lastsyn_ts", NONE, "its time"),
    ("sa_n", 0, "SYN-ACKs seen answering the SYN, same ISN"),
    ("lastsa_frame", NONE, "the latest such SYN-ACK"),
    ("lastsa_ts", NONE, "its time"),
    ("lastsa_syn_frame", NONE, "the latest SYN before that SYN-ACK (the one it is taken to answer)"),
    ("lastsa_syn_ts", NONE, "its time"),
    ("syn_frame", NONE, "when completed: the SYN the RTT is measured from"),
    ("syn_ts", NONE, "its time"),
    ("sa_frame", NONE, "when completed: the SYN-ACK used"),
    ("sa_ts", NONE, "its time"),
    ("ack_frame", NONE, "the client's ACK completing the handshake"),
    ("ack_ts", NONE, "its time"),
    ("end_frame", NONE, "the RST that refused or reset the attempt"),
    ("end_ts", NONE, "its time"),
    ("mss_c", NONE, "MSS option of the client's SYN (-1 absent)"),
    ("mss_s", NONE, "MSS option of the server's SYN-ACK"),
    ("ws_c", NONE, "window scale option of the client's SYN"),
    ("ws_s", NONE, "window scale option of the server's SYN-ACK"),
    ("sack_c", NONE, "1 when the client's SYN carried SACK-permitted"),
    ("sack_s", NONE, "1 when the server's SYN-ACK did"),
    ("ts_c", NONE, "1 when the client's SYN carried timestamps"),
    ("ts_s", NONE, "1 when the server's SYN-ACK did"),
    ("tfo", NONE, "TCP Fast Open cookie length in the SYN (-1 no TFO option)"),
    ("syn_data", NONE, "payload bytes of the client's first SYN"),
    # Zeek history (connections.py)
    ("hist_len", 0, "letters in ``history``"),
    ("history", ("u1", HISTORY_LEN), 0, "Zeek history letters, ASCII; direction 1 lowercase until the table swaps"),
)

# --- one direction of a connection ---------------------------------------------------------------
DIRECTION, NEW_DIRECTION = record(
    # Wireshark 4.0's own state (wireshark.py), raw 32-bit numbers as packet-tcp.c keeps them
    ("ws_base", 0, "Wireshark's base_seq (raw)"),
    ("ws_base_set", 0, "1 once set (TCP_S_BASE_SEQ_SET)"),
    ("ws_nextseq", 0, "highest seq + len seen, raw; 0 = unset"),
    ("ws_nextseq_frame", 0, "the segment that set it"),
    ("ws_nextseq_ts", 0, "its time, ns"),
    ("ws_maxseqtobeacked", 0, "highest contiguous seq to be acknowledged, raw; 0 = unset"),
    ("ws_lastack", 0, "ACK field of the last packet, raw (even without the ACK flag)"),
    ("ws_lastack_ts", 0, "time of the last packet, ns"),
    ("ws_lastnondupack", 0, "frame of the last ACK that was not a duplicate"),
    ("ws_dupacknum", 0, "duplicate ACKs in a row (-1 after an ACKed-unseen segment)"),
    ("ws_window", 0xFFFFFFFF, "window of the last packet, unscaled (G_MAXUINT32 before the first)"),
    ("ws_win_scale", NONE, "window scale shift; -1 unknown, -2 scaling off"),
    ("ws_lastsegflags", 0, "analysis flags of the last packet (wireshark.TCP_A_*)"),
    ("ws_is_first_ack", 0, "1 from a SYN until the first ACK without SYN"),
    # Wireshark's list of its unacknowledged segments (``segments``), in the ``ua`` pool, kept as two lists:
    # those in sequence order (each starting at or above the previous one's end), oldest first, and the
    # others (resends, copies, late segments), so that walks of the first can stop early
    ("ws_ua_head", NONE, "oldest of its unacknowledged segments in sequence order"),
    ("ws_ua_tail", NONE, "newest of them"),
    ("ws_ua_side", NONE, "the others, newest first"),
    ("ws_ua_count", 0, "how many in both (Wireshark's ``segment_count``, at most TCP_MAX_UNACKED_SEGMENTS)"),
    ("ws_valid_bif", 1, "0 after a lost segment until an ACK comes from the other side (``valid_bif``)"),
    ("ws_sack_n", 0, "SACK blocks of its last packet that Wireshark keeps for bytes in flight (at most 3)"),
    ("ws_sack", ("i8", (3, 2)), 0, "their raw edges (``sack_left_edge``/``sack_right_edge``)"),
    ("ws_dupack_frame", NONE, "the frame its last duplicate ACK duplicates (``lastnondupack`` then)"),
    # our own sequence space: relative, unwrapped to 64 bits
    ("base", NONE, "ISN (raw): the SYN's seq, else first seq - 1, or the peer's first ACK - 1"),
    ("base_set", 0, "1 once ``base`` is known"),
    ("uref", 0, "highest unwrapped relative seq seen, the reference that unwraps the next one"),
    # exact byte accounting
    ("seen", 0, "1 once a segment occupying sequence space was seen"),
    ("lo", NONE, "lowest unwrapped seq seen"),
    ("top", NONE, "highest unwrapped seq + len seen (SYN/FIN count 1)"),
    ("top_frame", NONE, "the segment that last raised ``top``"),
    ("top_ts", NONE, "its time, ns"),
    ("holes", ("i8", (HOLES, 2)), 0, "ranges [lo, hi) below ``top`` never seen (empty when hi <= lo)"),
    ("hole_n", 0, "slots of ``holes`` in use: the first hole_n (an empty one among them waits for a gap)"),
    ("rec_head", NONE, "newest record of this direction in the sent-segment pool"),
    ("fills", ("i8", (FILLS, 7)), NONE, "its latest hole fills: start, end, frame, ts, IP ID, TSval, event row "
                                        "(FILL_*; a ring, ``fills_next`` the next slot; frame NONE: empty)"),
    ("fills_next", 0, "next slot of ``fills``"),
    ("data_frame", NONE, "its latest frame that occupied sequence space (data, SYN or FIN)"),
    # the order in which the sender sent its packets
    ("ipid_max", NONE, "highest IPv4 ID sent (16-bit serial order); -1 none"),
    ("ipid_steps", 0, "packets whose IP ID went up by a small step from the highest (a counter per packet)"),
    ("ipid_ones", 0, "of ``ipid_steps``, those of exactly one (a per-connection counter steps by one)"),
    ("ipid_lost", 0, "of ``ipid_steps``, bigger ones the capture shows packets lost before it for (bytes "
                     "missing below the packet, or a tail loss)"),
    ("one_seg", 0, "largest payload of its packets followed by an IP ID step of exactly one: no bigger than "
                   "the segment size then (a bigger packet, captured on the sending host, may be a TSO/GSO "
                   "packet that takes one ID per segment it is cut into)"),
    ("ipid_other", 0, "packets whose IP ID did not (zero, repeated, far off); a little below counts for neither"),
    ("tsval_max", NONE, "highest TSval sent (serial order); -1 none"),
    # what the receiver said: the ACKs this direction sends about the reverse direction's data
    ("acked", NONE, "highest cumulative ACK sent, unwrapped in the reverse direction's space"),
    ("dupacks", 0, "duplicate ACKs sent for ``acked`` (pure ACKs, same window; not capture copies)"),
    ("reno_held", 0, "without SACK: the peer's segments it holds above ``acked``, one per duplicate ACK (Linux's "
                     "Reno sacked_out), at most as many as were captured there"),
    ("dupack_ts", NONE, "time of the last of them, ns"),
    ("signal_ts", NONE, "when this receiver began signalling a loss at ``acked``: its 2nd duplicate ACK, its "
                        "first SACK above ``acked``, or a partial ACK during the sender's recovery"),
    ("signal_frame", NONE, "that ACK's frame"),
    ("signal_how", 0, "sequence.SIG_* bits of the signals since then"),
    ("sacks", ("i8", (4, 2)), 0, "SACK blocks of its last ACK above ``acked`` (unwrapped, reverse space)"),
    ("sacks_n", 0, "how many of ``sacks`` are valid"),
    ("sacked_hi", NONE, "highest SACK right edge sent for the current ``acked``"),
    ("recovery", NONE, "while this sender is in fast recovery: its ``top`` when recovery began"),
    ("rto_recovery", NONE, "while it recovers after a timeout (Linux's Loss state): its ``top`` at the timeout"),
    ("rto_frame", NONE, "the timeout retransmission that began it"),
    ("rto_ts", NONE, "its time, ns"),
    ("retx_seq", NONE, "start of its latest retransmission (unwrapped)"),
    ("retx_ts", NONE, "its time, ns"),
    # the previous packet, to recognise the same packet captured twice
    ("prev_frame", NONE, "frame of this direction's previous packet"),
    ("prev_ts", NONE, "its time, ns"),
    ("prev_seq", NONE, "its raw seq"),
    ("prev_ack", NONE, "its raw ack"),
    ("prev_len", NONE, "its payload length"),
    ("prev_flags", NONE, "its TCP flags"),
    ("prev_win", NONE, "its raw window"),
    ("prev_ipid", NONE, "its IPv4 ID (-1 none)"),
    ("prev_tsval", NONE, "its TSval (-1 none)"),
    ("prev_tsecr", NONE, "its TSecr (-1 none)"),
    ("prev_sack", NONE, "its first SACK block, folded into one number (-1 none)"),
    ("dup_copies", 0, "packets since it taken for its capture copies"),
    ("recent", ("i8", (RECENT, 3)), NONE, "its last RECENT packets: a hash of their header fields, frame, time "
                                          "(a ring, ``recent_next`` the next slot): copies that came interleaved"),
    ("recent_next", 0, "next slot of ``recent``"),
    # the peer's packets since this direction's latest one (what that one, or the next, may be answering)
    ("peer_since_ts", NONE, "time of the peer's first packet since this direction's latest, ns (-1: none since)"),
    ("peer_since_top", NONE, "the peer's ``top`` just before that packet"),
    ("known_dup", NONE, "event row of its latest segment that the receiver had acknowledged in full before"),
    # counters for the connections table
    ("pkts", 0, "packets sent (duplicates included)"),
    ("bytes", 0, "payload bytes sent (duplicates excluded)"),
    ("retx", 0, "retransmission rows (kinds retransmission, fast, spurious, syn)"),
    ("retx_bytes", 0, "bytes those rows sent again (seen before, or sent before and lost upstream)"),
    ("ooo", 0, "out_of_order rows"),
    ("dups", 0, "duplicate rows (captured twice)"),
    ("ka", 0, "keep-alives"),
    ("zwp", 0, "zero-window probes"),
    ("syn_pkts", 0, "packets with SYN"),
    ("fin_pkts", 0, "packets with FIN"),
    ("rst_pkts", 0, "packets with RST"),
    # Zeek endpoint state and history bookkeeping (connections.py)
    ("zstate", 0, "Zeek endpoint state (connections.ZS)"),
    ("zonce", 0, "history letters recorded once already (connections._ONCE_* bits)"),
    ("z_syn_seq", NONE, "seq of the last SYN (a new letter only when it changes)"),
    ("z_fin_seq", NONE, "seq + len of the last FIN"),
    ("z_rst_seq", NONE, "seq of the last RST"),
    ("z_rxmit", 0, "Zeek's retransmission count (for the log-scaled T letter)"),
    ("z_zwin", 0, "zero windows advertised (for the log-scaled W letter)"),
    # retransmissions waiting for D-SACK / Eifel evidence (the ``pend`` pool)
    # health figures (issue 13): counts of Wireshark's flags on the packets it sent, and its data's RTT,
    # throughput and bytes in flight
    ("h_dupacks", 0, "its packets Wireshark flags duplicate ACK"),
    ("h_zero_windows", 0, "... zero window"),
    ("h_window_full", 0, "... window full"),
    ("h_lost", 0, "... previous segment not captured"),
    ("h_ack_lost", 0, "... ACKed segment that wasn't captured"),
    ("h_missed", 0, "bytes of its data the receiver acknowledged or that were skipped, never captured"),
    ("h_gap_to", NONE, "its data up to here (unwrapped) is accounted for in ``h_missed``"),
    ("rtt_n", 0, "RTT samples of its data (Wireshark's ack_rtt, on the peer's ACKs)"),
    ("rtt_min", NONE, "their minimum, ns"),
    ("rtt_max", NONE, "their maximum, ns"),
    ("rtt_q", ("f8", (5,)), 0.0, "P-square median estimator of them: marker heights"),
    ("rtt_qn", ("f8", (5,)), 0.0, "... marker positions"),
    ("karn_n", 0, "of them, samples of segments sent once (Karn: no resend, no copy)"),
    ("karn_apart", 0, "1 once a sample was not (until then ``karn_q`` is ``rtt_q``)"),
    ("karn_q", ("f8", (5,)), 0.0, "P-square median of those: heights"),
    ("karn_qn", ("f8", (5,)), 0.0, "... positions"),
    ("data_first_ts", NONE, "time of its first segment with payload"),
    ("data_last_ts", NONE, "time of its last one"),
    ("bif_max", NONE, "its largest bytes in flight (Wireshark's bytes_in_flight)"),
    ("pend_live", 0, "live slots in its ``pend`` row"),
    ("pend_row", NONE, "the ``pend`` row lent to this direction (NONE while it has no waiting retransmission)"),
    # retransmissions (with timestamps) not yet covered by an ACK, however many: each ACK that moves the
    # receiver's left edge meanwhile is an Eifel check (RFC 3522) for them (``sequence._eifel``)
    ("wait_head", NONE, "the latest of them (global event index; ``EVENT.wait_prev`` links the others)"),
)

# --- one transmission in the sent-segment pool ---------------------------------------------------
SENT, _ = record(
    ("start", NONE, "unwrapped relative seq of its first byte"),
    ("end", NONE, "seq after its last byte (SYN/FIN count 1)"),
    ("frame", NONE, "its frame"),
    ("ts", NONE, "its time, ns"),
    ("prev", NONE, "the direction's previous record (NONE: the oldest kept)"),
    ("tsval", NONE, "TCP TSval of this transmission (-1 without timestamps)"),
    ("ipid", NONE, "its IPv4 ID (-1 none)"),
    ("ev", NONE, "global index of its event row, NONE when it has none"),
    ("flags", 0, "its TCP flags"),
)

# --- a retransmission waiting for the receiver's verdict -----------------------------------------
PENDING, _ = record(
    ("ev", NONE, "the event row's global index (NONE: free slot); in a free row's slot 0, ``start`` links the free list"),
    ("start", NONE, "the unwrapped range [start, end) it covered"),
    ("end", NONE, "end of that range"),
)

# --- one unacknowledged segment in Wireshark's per-direction list (``tcp_unacked_t``) ------------------
UNACKED, _ = record(
    ("seq", 0, "raw seq (trimmed to the ACK that covered part of it)"),
    ("nextseq", 0, "raw seq after it (SYN/FIN count 1)"),
    ("frame", NONE, "its frame"),
    ("ts", NONE, "its time, ns"),
    ("next", NONE, "the next segment of its list; in the free list, the next free entry"),
    ("karn", 1, "1 while a sample of it says one transmission's RTT (no other copy of its range listed)"),
)

# --- engine-wide counts ---------------------------------------------------------------------------
COUNTERS, NEW_COUNTERS = record(
    ("conversations", 0, "connections so far"),
    ("batch", 0, "batches analyzed so far (the current batch's number)"),
    ("events", 0, "event rows so far (the next event's global index)"),
    ("records", 0, "records in use in the sent-segment pool"),
    ("pending", 0, "live ``pend`` slots over all directions"),
    ("pend_rows", 0, "``pend`` pool rows handed out so far"),
    ("pend_free", NONE, "first free ``pend`` row (a free row's slot 0 ``start`` links to the next)"),
    ("ua_used", 0, "``ua`` pool entries handed out so far"),
    ("ua_free", NONE, "first free ``ua`` entry (linked through ``next``)"),
    ("findings", 0, "finding rows so far (the next one's global index)"),
    ("late", 0, "packets of connections that had ended (not analyzed; counted under their old stream)"),
    ("clock", NO_CLOCK, "the capture's clock after the latest batch (``decode.store.CLOCK_COLUMN``), ns"),
)


# --- the decisions: one event row per labelled segment ----------------------------------------------
class Kind(IntEnum):
    """Retransmission-table kinds (documented in ``analyzer.schema.RETRANSMISSION_KINDS``); 0 = none."""

    RETRANSMISSION = 1
    FAST_RETRANSMISSION = auto()
    SPURIOUS_RETRANSMISSION = auto()
    SYN_RETRANSMISSION = auto()
    OUT_OF_ORDER = auto()
    DUPLICATE = auto()


class Evidence(IntEnum):
    """How later packets showed a retransmission was not needed (``EVENT.spur``); 0 = they did not."""

    DSACK = 1  # a D-SACK covering it (RFC 2883)
    EIFEL = auto()  # the first ACK covering it echoed the original's TSval (RFC 3522)
    LATE_ORIGINAL = auto()  # its original arrived after it: the original was delayed, not lost
    DUPACK = auto()  # without SACK: the receiver, which had everything, repeated its ACK unprompted (a copy arrived)


NOTE_FIN_REPEATED = 1  # ``EVENT.note`` bit: the segment's FIN repeats a FIN sent before at the same sequence number

EVENT, NEW_EVENT = record(
    ("kind", 0, "our Kind (0: only Wireshark flags the frame)"),
    ("ws_kind", 0, "the Kind Wireshark 4.0 gives it (0: none)"),
    ("captured", 1, "1 when the first transmission of its bytes is in the capture"),
    ("why", 0, "sequence.EV_* bits: the evidence that decided ``kind``"),
    ("ipid", NONE, "its IPv4 ID"),
    ("ref_ipid", NONE, "the IP ID it was compared with (the other copy's, or the highest sent)"),
    ("tsv", NONE, "its TSval"),
    ("ref_tsv", NONE, "the TSval it was compared with"),
    ("conv", NONE, "the connection (stream id)"),
    ("dir", NONE, "its direction (0: of the connection's first packet)"),
    ("seq", NONE, "unwrapped relative seq (NONE when the direction's base is unknown)"),
    ("len", 0, "payload bytes"),
    ("overlap", 0, "payload bytes already seen in this direction"),
    ("orig_frame", NONE, "frame that first sent (some of) these bytes"),
    ("orig_ts", NONE, "its time, ns"),
    ("count", 0, "duplicate ACKs before it (fast); IP ID (duplicate)"),
    ("gap", 0, "the time the rule measured, ns"),
    ("limit", 0, "the threshold it was compared with, ns"),
    ("ref_frame", NONE, "the frame the rule looked at (evidence_frame)"),
    ("resent", 0, "bytes of it sent before (seen before, or below the highest byte and never seen)"),
    ("note", 0, "NOTE_* bits"),
    # the packet's own fields, for the table (no packet column is kept)
    ("frame", NONE, "its frame"),
    ("ts", NONE, "its time, ns"),
    ("seq_raw", NONE, "seq on the wire"),
    ("flags", 0, "TCP flags"),
    ("sender_lo", 0, "1 when the sender is the 4-tuple's lower endpoint"),
    ("wait_prev", NONE, "while it waits for its first covering ACK: the previous waiting row of its direction"),
    # later evidence that the retransmission was unnecessary
    ("spur", 0, "Evidence (0: none)"),
    ("spur_frame", NONE, "the D-SACK or Eifel ACK"),
    ("spur_a", 0, "D-SACK: left edge (relative); Eifel: the echoed TSecr; late original: its IP ID"),
    ("spur_b", 0, "D-SACK: right edge; Eifel: the retransmission's TSval; late original: its TSval"),
    ("spur_c", 0, "Eifel: the TSval of the copy before it (-1 unknown)"),
)

# --- the findings: one row per frame per expert finding (the events table, issue 13) ---------------------
class Finding(IntEnum):
    """Events-table findings (``analyzer.schema.EVENT_KINDS``), Wireshark's expert names where it has one."""

    DUPLICATE_ACK = 1
    ZERO_WINDOW = auto()
    ZERO_WINDOW_PROBE = auto()
    ZERO_WINDOW_PROBE_ACK = auto()
    WINDOW_FULL = auto()
    WINDOW_UPDATE = auto()
    KEEP_ALIVE = auto()
    KEEP_ALIVE_ACK = auto()
    LOST_SEGMENT = auto()
    ACK_LOST_SEGMENT = auto()
    CAPTURE_GAP = auto()
    RTT_SAMPLE = auto()  # (only with Engine(rtt_samples=True); not an events-table row) an ack_rtt sample


FINDING, NEW_FINDING = record(
    ("frame", NONE, "its frame"),
    ("ts", NONE, "its time, ns"),
    ("conv", NONE, "the connection (stream id)"),
    ("dir", NONE, "the direction of the packet"),
    ("what", 0, "Finding"),
    ("a", 0, "duplicate_ack: its number; lost_segment, ack_lost_segment, capture_gap: bytes; rtt_sample: ns"),
    ("b", 0, "duplicate_ack: the frame it duplicates; capture_gap: the ACK (relative); rtt_sample: acks_frame"),
    ("c", 0, "rtt_sample: 1 when the acknowledged segment was sent once (Karn)"),
)


class FlowState:
    """All arrays the sequential engine carries between batches, grown as connections appear."""

    def __init__(self, capacity: int = 1024, records: int = 4096):
        self.conv = new_array(capacity, CONVERSATION)
        self.dirs = new_array(2 * capacity, DIRECTION)
        self.tuple_conv = np.full(1024, NONE, dtype=np.int64)
        self.tuple_last = np.zeros(1024, dtype=np.int64)  # per 4-tuple: the time of its last analyzed packet
        self.pend = np.empty((64, PEND_SLOTS), dtype=PENDING)
        self.ua = np.zeros(4096, dtype=UNACKED)
        self.records = np.zeros(records, dtype=SENT)
        self.counter = NEW_COUNTERS.copy()  # one record, an array so the compiled code can update it
        self.gone = np.zeros(capacity, dtype=np.uint8)  # 1 or 2: the connection has ended
        self.freed = np.zeros(capacity, dtype=np.uint8)  # 1: ... and its rows are written, its state freed

    @property
    def count(self):
        """The counters record (``count.conversations`` ...)."""
        return self.counter[0]

    def reserve(self, conversations: int, tuples: int, records: int) -> bool:
        """Make room for ``conversations`` more connections, ``tuples`` 4-tuples and ``records`` records
        (and as many ``pend`` rows: a batch takes at most one per retransmission, so one per record).
        Returns whether the per-connection arrays were replaced by larger copies."""
        need = self.conversations + conversations
        grown = need > len(self.conv)
        if grown:
            cap = max(need, 2 * len(self.conv))
            used = self.conversations
            live = np.flatnonzero(self.freed[:used] == 0)  # freed ones read as zeros: not copied, not touched
            self.conv = grow(self.conv, cap, used, live)
            self.dirs = grow(self.dirs, 2 * cap, 2 * used, np.stack([2 * live, 2 * live + 1], axis=1).ravel())
            self.gone = grow(self.gone, cap, used)
            self.gone[used:] = 0
            self.freed = grow(self.freed, cap, used)
            self.freed[used:] = 0
        if tuples > len(self.tuple_conv):
            old = len(self.tuple_conv)
            self.tuple_conv = grow(self.tuple_conv, max(tuples, 2 * old), old)
            self.tuple_conv[old:] = NONE
            self.tuple_last = grow(self.tuple_last, len(self.tuple_conv), old)
        used = int(self.count["records"])
        self.records = room(self.records, used, used + records)
        rows = int(self.count["pend_rows"])
        self.pend = room(self.pend, rows, rows + min(records, 2 * need))
        used = int(self.count["ua_used"])  # a segment adds at most one unacknowledged entry
        self.ua = room(self.ua, used, used + records)
        return grown

    @property
    def conversations(self) -> int:
        return int(self.count["conversations"])


PAGE = mmap.PAGESIZE
_MAPPED_FROM = 1 << 20  # arrays of this many bytes or more get pages of their own (``new_array``)


class Gathered:
    """Fields of rows ``rows`` of a record array, each gathered into an array of its own when first read
    (``g["irtt"]``). Gathering whole records instead would keep every field of every row alive as long as
    any one column made from them (a field of a record array is a view of the whole records)."""

    def __init__(self, records: np.ndarray, rows: np.ndarray) -> None:
        self._records, self._rows, self._got = records, rows, {}

    def __getitem__(self, name: str) -> np.ndarray:
        got = self._got.get(name)
        if got is None:
            got = self._got[name] = self._records[name][self._rows]
        return got

    def __len__(self) -> int:
        return len(self._rows)


def _libc_trim():
    """glibc's ``malloc_trim``, or None (another C library, another system)."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _libc_trim() if sys.platform == "linux" else None


def give_back_heap() -> None:
    """Hand the free pages inside malloc's heaps back to the system (glibc's ``malloc_trim``). The rows of
    ended connections are built in arrays small enough for the heap and freed at once, batch after batch:
    the heap keeps their pages, scattered between live blocks, unless asked (about 10% of the RSS)."""
    if _TRIM is not None:
        _TRIM(0)


def mapping_of(a: np.ndarray):
    """The anonymous mapping under ``a`` (``new_array``), or None when ``a`` came from malloc."""
    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    return base


def new_array(shape, dtype=np.int64) -> np.ndarray:
    """An uninitialised array; from 1 MiB on, in an anonymous memory mapping of its own, whose pages the
    system provides when first written and takes back as soon as the array is freed. Through malloc, the
    engine's growing and batch-long arrays would raise glibc's dynamic mmap threshold and leave its heap
    fragmented around the long-lived ones: RSS would creep up batch after batch."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < _MAPPED_FROM or not hasattr(mmap, "MAP_PRIVATE"):  # (no MAP_PRIVATE on Windows)
        return np.empty(shape, dtype=dtype)
    # MAP_NORESERVE: the size is an upper bound (per-connection arrays of a long capture, mostly pages of
    # ended connections never written or handed back), not memory to set aside: no overcommit refusal
    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_NORESERVE", 0x4000 if sys.platform == "linux" else 0)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=flags), dtype=dtype).reshape(shape)


def raw(a: np.ndarray) -> np.ndarray:
    """``a`` (records, or a field of records) seen as opaque items of the same size: numpy copies and
    concatenates those as plain memory, a record dtype field by field (about 8x slower)."""
    return a.view(np.dtype((np.void, a.dtype.itemsize)))


def grow(a: np.ndarray, rows: int, used: int, keep: np.ndarray | None = None) -> np.ndarray:
    """A larger copy of ``a`` keeping its first ``used`` rows, or only rows ``keep`` of them (the others
    are never read again: in a mapping of its own they stay unwritten, zeros that take no memory). New
    rows are left uninitialised: the compiled code initialises a record when it creates the connection,
    so untouched memory stays free."""
    out = new_array((rows,) + a.shape[1:], a.dtype)
    if keep is None or mapping_of(out) is None:
        raw(out)[:used] = raw(a)[:used]
        return out
    # run by run of consecutive rows, in order (no temporary copy of them all); the pages of ``a`` below the
    # next run are handed back as it goes: the old and the new copies of the rows are not both in memory
    old = mapping_of(a)
    if old is not None and not hasattr(old, "madvise"):
        old = None
    size = a.strides[0]
    edges = np.flatnonzero(np.diff(keep) != 1)
    starts, ends = [], []
    step = max(1, (1 << 20) // size)  # runs cut to 1 MiB pieces
    for lo, hi in zip(np.r_[keep[:1], keep[edges + 1]].tolist(), (np.r_[keep[edges], keep[-1:]] + 1).tolist()):
        starts.extend(range(lo, hi, step))
        ends.extend(list(range(lo + step, hi, step)) + [hi])
    freed = 0  # pages of ``a`` handed back: [0, freed)
    for k, (lo, hi) in enumerate(zip(starts, ends)):
        raw(out)[lo:hi] = raw(a)[lo:hi]
        below = (starts[k + 1] if k + 1 < len(starts) else len(a)) * size // PAGE  # pages wholly below it
        if old is not None and below - freed >= 16:
            old.madvise(mmap.MADV_DONTNEED, freed * PAGE, (below - freed) * PAGE)
            freed = below
    return out


def room(a: np.ndarray, used: int, rows: int) -> np.ndarray:
    """``a``, or a copy of its first ``used`` rows with room for at least ``rows`` (doubling)."""
    return a if len(a) >= rows else grow(a, max(rows, 2 * len(a)), used)
