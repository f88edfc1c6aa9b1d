"""Frame batches: raw frame bytes plus per-frame offsets, lengths, times and link types.

Every capture source (pcap, pcapng, live scapy capture) produces ``FrameBatch`` objects; the decoder
(``analyzer.decode.decode_batch``) turns one into the packet table.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Link-layer header types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family, host byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, version from the first nibble
LINKTYPE_C_HDLC = 104  # Cisco HDLC: address, control, 2-byte protocol (an EtherType)
LINKTYPE_IEEE802_11 = 105  # 802.11 MAC header, no radio header
LINKTYPE_LOOP = 108  # OpenBSD loopback: 4-byte address family, network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IEEE802_11_RADIOTAP = 127  # radiotap header, then the 802.11 MAC header
LINKTYPE_ARCNET_LINUX = 129  # ARCNET as Linux captures it
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239  # Linux netfilter NFLOG: header, then TLVs, one holding the packet
LINKTYPE_LINUX_SLL2 = 276

LINKTYPE_NAMES = {
    LINKTYPE_NULL: "NULL", LINKTYPE_ETHERNET: "ETHERNET", LINKTYPE_RAW: "RAW", LINKTYPE_C_HDLC: "C_HDLC",
    LINKTYPE_IEEE802_11: "IEEE802_11", LINKTYPE_LOOP: "LOOP", LINKTYPE_LINUX_SLL: "LINUX_SLL",
    LINKTYPE_IEEE802_11_RADIOTAP: "IEEE802_11_RADIOTAP", LINKTYPE_ARCNET_LINUX: "ARCNET_LINUX",
    LINKTYPE_IPV4: "IPV4", LINKTYPE_IPV6: "IPV6", LINKTYPE_NFLOG: "NFLOG", LINKTYPE_LINUX_SLL2: "LINUX_SLL2",
}


@dataclass
class FrameBatch:
    """A batch of captured frames, columnar.

    ``data`` holds the frames' bytes; frame ``i`` is ``data[offsets[i] : offsets[i] + caplens[i]]``.
    ``first_frame`` is the 1-based frame number of frame 0 of this batch in the whole capture.
    """

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64
    caplens: np.ndarray  # int32, bytes captured
    wirelens: np.ndarray  # int32, original length on the wire
    ts_ns: np.ndarray  # int64, nanoseconds since the epoch
    linktypes: np.ndarray  # int32, per frame
    interfaces: np.ndarray  # int16, per frame (pcapng interface id)
    first_frame: int = 1
    problems: list[str] = field(default_factory=list)  # one-line notes on damage met in this batch

    def __len__(self) -> int:
        return len(self.offsets)

    @classmethod
    def from_frames(cls, frames: list[bytes], ts_ns: list[int], linktype: int = LINKTYPE_ETHERNET,
                    wirelens: list[int] | None = None, first_frame: int = 1) -> "FrameBatch":
        """Build a batch from a list of frames (live capture, tests)."""
        lens = np.fromiter((len(f) for f in frames), dtype=np.int32, count=len(frames))
        offsets = np.zeros(len(frames), dtype=np.int64)
        if len(frames) > 1:
            np.cumsum(lens[:-1], out=offsets[1:])
        # writable, as a file's buffer is: a read-only array is another type to numba, for which the
        # decoder would be compiled once more (~10 s) at the first live capture or fragmented datagram
        data = np.frombuffer(bytearray().join(frames), dtype=np.uint8)
        return cls(
            data=data, offsets=offsets, caplens=lens,
            wirelens=lens.copy() if wirelens is None else np.asarray(wirelens, dtype=np.int32),
            ts_ns=np.asarray(ts_ns, dtype=np.int64),
            linktypes=np.full(len(frames), linktype, dtype=np.int32),
            interfaces=np.zeros(len(frames), dtype=np.int16), first_frame=first_frame,
        )
