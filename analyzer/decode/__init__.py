"""Decode: frame batches (``analyzer.sources``) -> the packet table, one row per TCP segment.

Modules: ``headers`` (the compiled kernel: link layer, IP, TCP options), ``store`` (the typed column
matrices it writes, and the DataFrame over them), ``fragments`` (IP reassembly), ``decoder`` (the
``Decoder`` tying them together, carrying state between batches), ``reader`` (a capture file as
packet-table batches), ``tshark`` (the same table from tshark's dissectors, through pyshark).

>>> import analyzer
>>> df = analyzer.read_packets("captures/demo.pcap")                  # doctest: +SKIP
>>> for batch in analyzer.iter_packets("big.pcap", batch_size=100_000):  # doctest: +SKIP
...     print(len(batch))
"""
from .decoder import ALL_CONNECTIONS, ConnectionGroup, Decoder, decode_batch, rows_by_group
from .reader import (ANALYZE_BATCH, DEFAULT_BATCH, ENGINES, PREFETCH, FrameSelection, PacketReader, TimeBound,
                     frame_selection, iter_packets, prefetched, read_packets)
from .store import Codes, ColumnStore, StoreRows, to_frame

__all__ = ["Decoder", "ConnectionGroup", "ALL_CONNECTIONS", "rows_by_group", "decode_batch", "PacketReader", "FrameSelection", "TimeBound", "frame_selection", "iter_packets", "read_packets", "prefetched", "ColumnStore",
           "StoreRows", "Codes", "to_frame", "ENGINES", "DEFAULT_BATCH", "ANALYZE_BATCH", "PREFETCH"]
