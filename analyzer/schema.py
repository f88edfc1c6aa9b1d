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

import numpy as np
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


def empty_frame(columns: tuple[Column, ...]) -> pd.DataFrame:
    """An empty DataFrame with the declared columns and dtypes."""
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
