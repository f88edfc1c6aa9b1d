"""Column declarations and label vocabularies: every table is declared once, here.

Everything else (CSV headers, DataFrame column order, the README's column docs, tests) reads these
declarations. A column is ``Column(name, dtype, doc)``; a table is an ordered tuple of columns.

Conventions shared by all tables (design.md):

- ``frame`` is the 1-based position of the frame in the capture, counting every frame (TCP or not),
  so it equals Wireshark's ``frame.number``.
- ``stream`` is the 0-based connection index in order of first appearance, split on port reuse, as
  Wireshark numbers ``tcp.stream``.
- ``ts`` is seconds since the epoch as a float; ``ts_ns`` keeps the exact integer nanoseconds.
- Missing integers are ``-1`` (packet table) or empty (report tables, nullable dtypes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    doc: str


def _table(*cols: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*c) for c in cols)


# TCP flag bits (RFC 9293, RFC 3168 for ECE/CWR, RFC 3540 for NS/AE).
TH_FIN = 0x001
TH_SYN = 0x002
TH_RST = 0x004
TH_PSH = 0x008
TH_ACK = 0x010
TH_URG = 0x020
TH_ECE = 0x040
TH_CWR = 0x080
TH_NS = 0x100

SACK_MAX_BLOCKS = 4  # 40 bytes of options hold at most 4 SACK blocks (RFC 2018)

# --------------------------------------------------------------------------------------------
# The packet table: one row per TCP segment (after IP reassembly).
# --------------------------------------------------------------------------------------------
PACKET_COLUMNS = _table(
    ("frame", "int64", "1-based frame number in the file, counting every frame (= Wireshark frame.number); "
                       "for a reassembled IP datagram, the frame of its last fragment"),
    ("ts", "float64", "capture time, seconds since the epoch"),
    ("ts_ns", "int64", "capture time, exact integer nanoseconds since the epoch"),
    ("interface", "int16", "pcapng interface id (0 for pcap and live capture)"),
    ("vlan", "int32", "outer 802.1Q/802.1ad VLAN id, -1 when untagged"),
    ("vlan_inner", "int32", "inner VLAN id of a QinQ frame, -1 when absent"),
    ("ip_version", "int8", "4 or 6"),
    ("src", "category", "source IP address (text)"),
    ("dst", "category", "destination IP address (text)"),
    ("ip_id", "int32", "IPv4 identification, or the IPv6 fragment id; -1 when none"),
    ("ttl", "int16", "IPv4 TTL or IPv6 hop limit"),
    ("fragmented", "bool", "the segment was reassembled from IP fragments"),
    ("sport", "uint16", "TCP source port"),
    ("dport", "uint16", "TCP destination port"),
    ("seq_raw", "uint32", "sequence number as on the wire"),
    ("ack_raw", "uint32", "acknowledgement number as on the wire (even when the ACK flag is clear)"),
    ("flags", "uint16", "TCP flags: the 9 flag bits (FIN=0x001 ... NS/AE=0x100) and the 3 reserved bits above, as tshark's tcp.flags"),
    ("window", "uint16", "advertised window, raw (not scaled)"),
    ("tcp_hlen", "int16", "TCP header length in bytes (data offset * 4)"),
    ("payload_len", "int32", "TCP payload length from the IP header (total length - headers), not from caplen"),
    ("caplen", "int32", "bytes captured of this frame"),
    ("wirelen", "int32", "original length of this frame on the wire"),
    ("truncated", "bool", "part of the TCP payload was not captured (snaplen), so payload bytes are incomplete"),
    ("mss", "int32", "MSS option value, -1 when absent"),
    ("wscale", "int16", "window scale option shift count, -1 when absent"),
    ("sack_permitted", "bool", "SACK-permitted option present"),
    ("sack_count", "int8", "number of SACK blocks in this segment (0-4)"),
    *[(f"sack{i}_{edge}", "uint32", f"SACK block {i} {'left' if edge == 'le' else 'right'} edge, raw; 0 when absent")
      for i in range(1, SACK_MAX_BLOCKS + 1) for edge in ("le", "re")],
    ("tsval", "int64", "timestamps option TSval, -1 when absent"),
    ("tsecr", "int64", "timestamps option TSecr, -1 when absent"),
    ("tfo_cookie_len", "int16", "TCP Fast Open option (kind 34): cookie length, 0 for a cookie request, -1 absent"),
)

PACKET_COLUMN_NAMES = tuple(c.name for c in PACKET_COLUMNS)

# the packets table as written (``analyze --packets``): the decoded columns, and the connection of each packet
PACKET_TABLE_COLUMNS = PACKET_COLUMNS + _table(
    ("stream", "int64", "connection index (the stream id of the other tables; Wireshark tcp.stream)"),
    ("direction", "str", "client->server or server->client"),
)


def empty_frame(columns: tuple[Column, ...]) -> pd.DataFrame:
    """An empty DataFrame with the declared columns and dtypes."""
    import pandas as pd

    data = {}
    for c in columns:
        if c.dtype == "category":
            data[c.name] = pd.Categorical([])
        elif c.dtype in ("str", "string"):
            data[c.name] = pd.Series([], dtype=object)
        else:
            data[c.name] = pd.Series([], dtype=c.dtype)
    return pd.DataFrame(data)


def conform(df: pd.DataFrame, columns: tuple[Column, ...]) -> pd.DataFrame:
    """Return ``df`` with exactly the declared columns, in declared order and dtypes."""
    import pandas as pd

    out = {}
    for c in columns:
        s = df[c.name]
        if c.dtype == "category":
            out[c.name] = s if isinstance(s.dtype, pd.CategoricalDtype) else s.astype("category")
        elif c.dtype in ("str", "string"):
            out[c.name] = s.astype(object)
        elif str(s.dtype) != c.dtype:
            out[c.name] = s.astype(c.dtype)
        else:
            out[c.name] = s
    return pd.DataFrame(out)


def numpy_dtype(c: Column) -> np.dtype:
    return np.dtype(c.dtype)


# --------------------------------------------------------------------------------------------
# TCP engine report tables (analyzer.tcp). Missing values are empty (nullable dtypes).
# --------------------------------------------------------------------------------------------

HANDSHAKE_OUTCOMES = {
    "established": "SYN, SYN-ACK acknowledging ISN+1, then the client's ACK of the server's ISN+1",
    "refused": "the server answered the SYN with a RST (usually RST-ACK) before any SYN-ACK",
    "no_reply": "SYNs were sent and nothing came back from the server (Zeek S0)",
    "reset": "a SYN-ACK was seen, then a RST from either side before the client's ACK",
    "incomplete": "the server answered but the handshake did not finish (SYN-ACK without the final ACK) "
                  "and no RST ended it; the capture may have stopped",
    "simultaneous_open": "both sides sent a SYN without ACK (RFC 9293 3.5); Wireshark flags the SYN-ACKs "
                         "as retransmissions, we do not",
    "midstream": "no SYN from the client was captured: the capture started after the handshake",
}

RETRANSMISSION_KINDS = {
    "retransmission": "needed, sent after a timeout: bytes sent before (captured, or lost before the capture "
                      "point) sent again with no duplicate ACK or SACK asking for them, or only long after the "
                      "receiver asked (later than a fast retransmission comes: 2 RTT, at least 20 ms; 200 ms "
                      "without an RTT estimate), or a second time after such a signal, or in the loss recovery "
                      "that follows a timeout (until all that was outstanding then is acknowledged: RFC 5681 5.1, "
                      "Linux's Loss state). Bytes count as sent before when captured, when below a pure ACK's "
                      "sequence number (the sender's next byte), or, in order, when the sender's per-connection "
                      "IP IDs skip packets the peer gave it nothing to answer with, or only too recently to have "
                      "reached it (a tail loss; not within 1 ms "
                      "of the packet before the skip, nor after one bigger than any shown to be one segment: "
                      "captured on the sending host, an offload packet takes an ID per segment). Linux's "
                      "tail-loss probe reads as one too",
    "fast_retransmission": "needed, triggered by the receiver: it was sending 2+ duplicate ACKs for exactly this "
                           "sequence number, SACK blocks showing data above it received, or a partial ACK during "
                           "fast recovery asked for it (RFC 5681, 6675, 6582), and it was resent within 2 RTT (at "
                           "least 20 ms) of that signal, or later but as a SACK hole above the cumulative ACK "
                           "(which a timeout resends first), outside the recovery after a timeout",
    "spurious_retransmission": "not needed, the receiver already had every byte: acknowledged or SACKed before it "
                               "was sent; or shown afterwards: a D-SACK (RFC 2883) covering it; the ACK that moved "
                               "the receiver's left edge over it echoing a TSval older than its own, when that "
                               "TSval is its own range's (Eifel, RFC 3522) or that of a resend it was sent after; "
                               "without SACK, the receiver repeating an ACK of everything with nothing from the "
                               "sender in between that it could answer (pure ACKs, or data too recent to have reached "
                               "it: within half the smallest round trip measured on its side of the capture point), "
                               "when no later copy of bytes it had acknowledged explains that ACK (it got a second "
                               "copy, RFC 5681 4.2), or, before it was sent, duplicate ACKs (one per segment "
                               "received above a hole) as many as the segments captured above the ACK, its "
                               "original among them; or its original arriving after it "
                               "(delayed, not lost). evidence_frame is then that frame",
    "syn_retransmission": "a SYN or SYN-ACK repeated with the same ISN (a SYN with a new ISN starts a new "
                          "connection; a SYN-ACK with a new ISN restarts the server's sequence numbers)",
    "out_of_order": "network reordering: a segment sent once, arriving after higher data. Told from a "
                    "retransmission whose original was lost by its IPv4 ID (the sender's counter: below the "
                    "highest sent means sent earlier) or its TCP TSval (older); sent after a segment above it, "
                    "it is a resend (the original came before those bytes). When a copy of its bytes "
                    "was captured first, by the same comparison with that copy (which is then the spurious "
                    "retransmission). Without either, timing decides (it came within the RTT of the lowest "
                    "segment above it captured, sent after its original: RACK, RFC 8985, calls nothing lost "
                    "sooner) and the reason says it was ambiguous",
    "duplicate": "the same packet captured twice (a SPAN port, two interfaces), any length, pure ACKs too: "
                 "identical seq, ack, length, flags, window, TSval, TSecr and first SACK block to an earlier packet "
                 "of its direction (the previous one, or one of the last few when the copies came interleaved), "
                 "at most 5 ms later, with the same non-zero IPv4 ID; or, without a usable ID (IPv6, ID 0), what no "
                 "stack sends again: data within 1 ms with no loss signal in between, a pure ACK with the same SACK "
                 "blocks, or one with nothing from the peer that would ask for it (a train of genuine duplicate "
                 "ACKs, each asked for by a segment of the peer, stays duplicate ACKs). Not a retransmission; left "
                 "out of every other count and state",
}
"""Retransmission-table kinds: the cause the capture's evidence supports (tcp-analysis-reference.md (h));
``wireshark_kind`` keeps the label tshark 4.0 gives the same frame, whose rules decide from timing alone.
Keep-alives and zero-window probes are never retransmissions (Wireshark's rules, counted per connection
instead). A row's ``kind`` may be empty when only Wireshark flags the frame and nothing of it was sent
before (a SYN-ACK of a simultaneous open, for instance): the reason says so. A retransmission becomes
spurious when later evidence shows it was not needed: that evidence may come in a later batch, so the rows
an ``Engine.feed`` call returns for live display keep the label known then, while the final tables
(``Engine.finish``) have it whatever the batch sizes."""

CONN_STATES = {
    "S0": "connection attempt seen, no reply",
    "S1": "established, not terminated",
    "SF": "normal establishment and termination (both sides sent FIN)",
    "REJ": "connection attempt rejected (RST from the responder while the originator was in SYN)",
    "S2": "established, close attempt by the originator only (no reply from the responder)",
    "S3": "established, close attempt by the responder only",
    "RSTO": "established, the originator aborted (sent a RST)",
    "RSTR": "responder sent a RST",
    "RSTOS0": "originator sent a SYN followed by a RST, no SYN-ACK from the responder",
    "RSTRH": "responder sent a SYN-ACK (or other packets) followed by a RST, no SYN from the originator",
    "SH": "originator sent a SYN followed by a FIN, no SYN-ACK from the responder",
    "SHR": "responder sent a SYN-ACK followed by a FIN, no SYN from the originator",
    "OTH": "no SYN seen, just midstream traffic (not later closed)",
}
"""Zeek conn_state (reference C.5), computed from simplified endpoint states; see analyzer.tcp.connections."""

HANDSHAKE_COLUMNS = _table(
    ("stream", "int64", "connection index, = Wireshark tcp.stream"),
    ("client", "str", "client address (sender of the first SYN without ACK; else of the first packet)"),
    ("client_port", "int64", "client TCP port"),
    ("server", "str", "server address"),
    ("server_port", "int64", "server TCP port"),
    ("outcome", "str", "one of HANDSHAKE_OUTCOMES"),
    ("syn_frame", "Int64", "the SYN the RTT is measured from: the latest SYN before the SYN-ACK used"),
    ("synack_frame", "Int64", "the SYN-ACK used: the latest one before the client's ACK"),
    ("ack_frame", "Int64", "the client's first packet with ACK (no SYN) acknowledging the server's ISN+1"),
    ("syn_ts", "Float64", "time of syn_frame, seconds since the epoch"),
    ("synack_ts", "Float64", "time of synack_frame"),
    ("ack_ts", "Float64", "time of ack_frame"),
    ("syn_retries", "Int64", "client SYNs after the first (same ISN)"),
    ("synack_retries", "Int64", "server SYN-ACKs after the first"),
    ("server_rtt", "Float64", "synack_ts - syn_ts, seconds (network + server side)"),
    ("client_rtt", "Float64", "ack_ts - synack_ts, seconds (network + client side)"),
    ("handshake_rtt", "Float64", "ack_ts - syn_ts = server_rtt + client_rtt; equals Wireshark's "
                                 "tcp.analysis.initial_rtt when the SYN was not retried"),
    ("first_syn_frame", "Int64", "the client's first SYN"),
    ("first_syn_ts", "Float64", "time of the first SYN"),
    ("setup_time", "Float64", "ack_ts - first_syn_ts: how long the client waited, retries included"),
    ("rst_frame", "Int64", "the RST that refused or reset the attempt"),
    ("wireshark_irtt", "Float64", "Wireshark's iRTT exactly as it computes it: first packet with ACK and no "
                                  "SYN (either side, RST-ACK included) minus the most recent SYN"),
    ("mss_client", "Int64", "MSS option of the client's SYN"),
    ("mss_server", "Int64", "MSS option of the server's SYN-ACK"),
    ("wscale_client", "Int64", "window scale shift in the client's SYN"),
    ("wscale_server", "Int64", "window scale shift in the server's SYN-ACK"),
    ("sack_permitted", "boolean", "both SYN and SYN-ACK carried SACK-permitted"),
    ("timestamps", "boolean", "both SYN and SYN-ACK carried the timestamps option"),
    ("tfo", "boolean", "the SYN carried a TCP Fast Open option or data (RFC 7413)"),
    ("syn_data_bytes", "Int64", "payload bytes carried by the client's first SYN (TFO)"),
)

RETRANSMISSION_COLUMNS = _table(
    ("frame", "int64", "frame number (= Wireshark frame.number)"),
    ("ts", "float64", "capture time, seconds since the epoch"),
    ("stream", "int64", "connection index, = Wireshark tcp.stream"),
    ("direction", "str", "client->server or server->client"),
    ("src", "str", "sender address"),
    ("sport", "int64", "sender port"),
    ("dst", "str", "receiver address"),
    ("dport", "int64", "receiver port"),
    ("seq", "Int64", "sequence number relative to the direction's ISN, unwrapped (as Wireshark shows it)"),
    ("seq_raw", "int64", "sequence number on the wire"),
    ("len", "int64", "payload bytes"),
    ("kind", "str", "the cause, one of RETRANSMISSION_KINDS (empty: only Wireshark flags the frame)"),
    ("wireshark_kind", "str", "the label tshark 4.0 gives this frame: retransmission, fast_retransmission, "
                              "spurious_retransmission, out_of_order, or empty when it flags none"),
    ("original_captured", "boolean", "the first transmission of these bytes is in the capture (false: lost "
                                     "before the capture point); empty when kind is empty"),
    ("original_frame", "Int64", "frame that first sent (some of) these bytes, among the last 64 records; for a "
                                "retransmission whose original arrived after it, that original"),
    ("since_original", "Float64", "seconds since original_frame"),
    ("overlap_bytes", "int64", "payload bytes of this segment already seen in this direction"),
    ("evidence_frame", "Int64", "the frame the evidence came from: the receiver's signal (fast), the D-SACK, "
                                "Eifel ACK or late original (spurious shown later), a segment above it (timing) or "
                                "the other copy (out_of_order), the first copy (duplicate)"),
    ("reason", "str", "the evidence that decided the kind, in words"),
    ("wireshark_filter", "str", "display filter that shows this frame in Wireshark"),
)

CONNECTION_COLUMNS = _table(
    ("stream", "int64", "connection index, = Wireshark tcp.stream"),
    ("client", "str", "client address (sender of the first SYN without ACK; else of the first packet)"),
    ("client_port", "int64", "client TCP port"),
    ("server", "str", "server address"),
    ("server_port", "int64", "server TCP port"),
    ("vlan", "Int64", "VLAN id of the first packet (not part of the connection key, as in Wireshark 4.0)"),
    ("first_frame", "int64", "first frame of the connection"),
    ("last_frame", "int64", "last frame of the connection"),
    ("first_ts", "float64", "time of the first packet"),
    ("last_ts", "float64", "time of the last packet"),
    ("duration", "float64", "last_ts - first_ts, seconds"),
    ("client_pkts", "int64", "packets sent by the client (duplicates included)"),
    ("server_pkts", "int64", "packets sent by the server (duplicates included)"),
    ("client_bytes", "int64", "payload bytes sent by the client (retransmissions included, duplicates not)"),
    ("server_bytes", "int64", "payload bytes sent by the server"),
    ("handshake", "str", "handshake outcome (HANDSHAKE_OUTCOMES)"),
    ("retransmissions", "int64", "rows of kind retransmission, fast, spurious or syn_retransmission"),
    ("retransmitted_bytes", "int64", "payload bytes those rows sent again: seen before, or below the highest byte "
                                     "and lost before the capture point"),
    ("out_of_order", "int64", "rows of kind out_of_order"),
    ("duplicates", "int64", "rows of kind duplicate (captured twice)"),
    ("keep_alives", "int64", "keep-alive segments (0 or 1 byte at next-1), not retransmissions"),
    ("zero_window_probes", "int64", "zero-window probes (1 byte at next while the peer's window is 0)"),
    ("conn_state", "str", "Zeek conn_state (CONN_STATES)"),
    ("history", "str", "Zeek history letters, uppercase = client (see analyzer.tcp.connections)"),
    ("completeness", "int64", "Wireshark tcp.completeness bit mask: 1 SYN, 2 SYN-ACK, 4 ACK, 8 data, 16 FIN, 32 RST"),
    ("reused_ports", "bool", "started by a SYN reusing a 4-tuple with a new ISN (Wireshark reused_ports)"),
) + tuple(
    col for side, peer in (("client", "server"), ("server", "client")) for col in _table(
        (f"{side}_dup_acks", "int64", f"packets the {side} sent that Wireshark flags duplicate ACK (tcp.analysis."
                                      f"duplicate_ack): each asks the {peer} again for the same byte"),
        (f"{side}_zero_windows", "int64", f"packets the {side} sent advertising a zero window (the {side}'s "
                                          f"receive buffer full: the {peer} must stop)"),
        (f"{side}_window_full", "int64", f"{side} segments that filled the {peer}'s advertised window (tcp.analysis."
                                         f"window_full: the {side} was held back by the {peer})"),
        (f"{side}_data_rtt_n", "int64", f"RTT samples of the {side}'s data: a {side} segment to the {peer}'s first "
                                        f"ACK exactly covering it (Wireshark's tcp.analysis.ack_rtt)"),
        (f"{side}_data_rtt_min", "Float64", "their minimum, seconds (NA without samples)"),
        (f"{side}_data_rtt_median", "Float64", "their median, seconds (exact up to 5 samples, then the P-square "
                                               "estimate of Jain and Chlamtac)"),
        (f"{side}_data_rtt_max", "Float64", "their maximum, seconds"),
        (f"{side}_data_rtt_karn_median", "Float64", "the median of the samples of segments sent once (Karn's rule: "
                                                    "none of a resent range, nor of its resends)"),
        (f"{side}_throughput", "Float64", f"payload bits per second the {side} sent (retransmissions included), "
                                          "over the span from its first to its last data segment (NA under 2)"),
        (f"{side}_goodput", "Float64", "the same for new bytes only (retransmitted bytes left out)"),
        (f"{side}_max_in_flight", "Int64", f"the most bytes of the {side}'s data in flight (Wireshark's "
                                           "tcp.analysis.bytes_in_flight, its largest value)"),
        (f"{side}_missed_bytes", "int64", f"bytes of the {side}'s data the {peer} acknowledged that the capture "
                                          "never saw (Zeek's missed_bytes: capture loss, not network loss)"),
    )
)

EVENT_KINDS = {
    "duplicate_ack": "a pure ACK repeating the previous ACK, window and sequence number (Wireshark's rule); "
                     "detail: its number and the frame it repeats",
    "zero_window": "the sender's receive window is 0: the peer must stop sending",
    "zero_window_probe": "1 byte at the next sequence number while the peer's window is 0",
    "zero_window_probe_ack": "the ACK answering a zero-window probe, window still 0",
    "window_full": "a segment that fills the peer's advertised window",
    "window_update": "a pure ACK that only changes the window; detail: the new window (unscaled)",
    "keep_alive": "0 or 1 byte one below the next sequence number (not a retransmission)",
    "keep_alive_ack": "the ACK answering a keep-alive",
    "lost_segment": "Wireshark's 'previous segment not captured': this segment starts beyond the highest byte "
                    "seen; detail: the bytes skipped (lost before the capture point, or missed by the capture)",
    "ack_lost_segment": "Wireshark's 'ACKed segment that wasn't captured': this ACK covers bytes never seen; detail: "
                        "how many",
    "capture_gap": "our byte accounting: the receiver acknowledges bytes the capture never saw, so the capture "
                   "itself dropped them (network loss would have been resent); detail: how many, and the ACK",
}
"""Events-table findings: Wireshark 4.0's expert-info names, with its exact rules, except capture_gap (ours)."""

EVENT_COLUMNS = _table(
    ("frame", "int64", "frame number of the packet"),
    ("ts", "float64", "its time, seconds since the epoch"),
    ("stream", "int64", "connection index, = Wireshark tcp.stream"),
    ("direction", "str", "client->server or server->client: who sent the packet"),
    ("event", "str", "one of EVENT_KINDS"),
    ("detail", "str", "the finding's figures, in words"),
    ("wireshark_filter", "str", "a display filter that finds the frame in Wireshark"),
)

# --------------------------------------------------------------------------------------------
# Merged captures (``analyze --merge``, ``merge=True``): two more columns at the end of every table.
# --------------------------------------------------------------------------------------------
CAPTURE_COLUMNS = _table(
    ("capture", "category", "only when several files are merged into one trace: the file (as given, or found in "
                            "the folder given) holding the row's frame; for connections and handshakes, the "
                            "connection's first frame (first_frame). A packet's interface stays its id in that file"),
    ("capture_frame", "int64", "only when merging: that frame's number within its file (frame numbers elsewhere "
                               "in the row are the merged trace's, continuing across files in time order)"),
)


def with_capture_columns(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """A table's columns when merging: its own, then ``CAPTURE_COLUMNS``."""
    return columns + CAPTURE_COLUMNS
