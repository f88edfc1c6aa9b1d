"""tcp-analyzer: rebuild TCP connections from captures, label handshakes and retransmissions.

Public API::

    >>> import analyzer
    >>> packets = analyzer.read_packets("captures/demo.pcap")          # doctest: +SKIP
    >>> report = analyzer.analyze("captures/demo.pcap")                 # doctest: +SKIP
    >>> report.handshakes[["stream", "outcome", "handshake_rtt"]]       # doctest: +SKIP
"""
from __future__ import annotations

from . import jit  # noqa: F401  (first: it chooses numba's cache folder before numba is imported)
from .decode import PacketReader, iter_packets, read_packets
from .errors import AnalyzerError, CaptureError
from .report import Report, analyze

__all__ = ["read_packets", "iter_packets", "analyze", "Report", "PacketReader", "AnalyzerError", "CaptureError"]
__version__ = "0.1.0"
