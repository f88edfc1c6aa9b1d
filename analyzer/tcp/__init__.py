"""TCP analysis engine: connections, handshakes and retransmissions from packet-table batches.

    >>> from analyzer.tcp import analyze_batches                          # doctest: +SKIP
    >>> tables = analyze_batches(analyzer.iter_packets("capture.pcap"))   # doctest: +SKIP
    >>> tables.retransmissions[["frame", "kind", "reason"]]              # doctest: +SKIP

Modules, in pipeline order: ``flows`` (4-tuple ids), ``state`` (carried per-flow arrays),
``sequence`` (the compiled per-packet pass), ``handshake``, ``connections``, ``retransmit``, ``health``
(tables), ``engine`` (the ``Engine`` that ties them together: connections end, their rows go to a sink).
"""
from __future__ import annotations

from .engine import BatchEvents, Engine, TcpTables, analyze_batches

__all__ = ["Engine", "TcpTables", "BatchEvents", "analyze_batches"]
