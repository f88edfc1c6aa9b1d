"""tcp-analyzer: rebuild TCP connections from captures, label handshakes and retransmissions.

Public API::

    >>> import analyzer
    >>> packets = analyzer.read_packets("captures/demo.pcap")          # doctest: +SKIP
    >>> report = analyzer.analyze("captures/demo.pcap")                 # doctest: +SKIP
    >>> report.handshakes[["stream", "outcome", "handshake_rtt"]]       # doctest: +SKIP
"""
from __future__ import annotations

import os as _os
import tempfile as _tempfile

# Compiled kernels are cached next to the sources; where the package is read-only (an install owned
# by root, used by someone else), numba cannot write there and refuses `cache=True`. Use a per-user
# cache folder instead. This must happen before numba is first imported.
if "NUMBA_CACHE_DIR" not in _os.environ and not _os.access(_os.path.dirname(__file__), _os.W_OK):
    _os.environ["NUMBA_CACHE_DIR"] = _os.path.join(
        _os.environ.get("XDG_CACHE_HOME") or _os.path.join(_os.path.expanduser("~"), ".cache")
        if _os.access(_os.path.expanduser("~"), _os.W_OK) else _tempfile.gettempdir(),
        "tcp-analyzer-numba")

from .decode import PacketReader, iter_packets, read_packets
from .errors import AnalyzerError, CaptureError
from .report import Report, analyze

__all__ = ["read_packets", "iter_packets", "analyze", "Report", "PacketReader", "AnalyzerError", "CaptureError"]
__version__ = "0.1.0"
