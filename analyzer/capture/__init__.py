"""Capture sources -> the packet table.

>>> import analyzer
>>> df = analyzer.read_packets("captures/demo.pcap")                  # doctest: +SKIP
>>> for batch in analyzer.iter_packets("big.pcap", batch_size=100_000):  # doctest: +SKIP
...     print(len(batch))
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pandas as pd

from ..errors import AnalyzerError
from .frames import FrameBatch

ENGINES = ("native", "pyshark")
DEFAULT_BATCH = 262_144


class PacketReader:
    """Iterates a capture as packet-table DataFrames, one per batch of frames.

    After iteration, ``stats`` holds frames read, TCP segments, skipped frames by reason and the
    one-line ``problems`` met (damage that stopped the reading early).
    """

    def __init__(self, path, batch_size: int = DEFAULT_BATCH):
        from ..decode import Decoder
        from .reader import FrameSource

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = path
        self.batch_size = batch_size
        self._source = FrameSource(path)  # raises CaptureError at once for a non-capture
        self._decoder = Decoder()
        self.format = self._source.format

    @property
    def stats(self) -> dict:
        s = self._decoder.stats.as_dict()
        s["format"] = self.format
        s["problems"] = list(self._source.problems)
        return s

    def stores(self) -> Iterator:
        """Yield one ``ColumnStore`` per batch (the internal, zero-copy form)."""
        from ..decode import ColumnStore

        for batch in self._source.batches(self.batch_size):
            store = ColumnStore(len(batch))
            self._decoder.decode_into(batch, store)
            yield store
        self._decoder.finish()

    @property
    def addresses(self) -> list[str]:
        return self._decoder.addresses

    def __iter__(self) -> Iterator[pd.DataFrame]:
        from ..decode import to_frame

        for store in self.stores():
            df = to_frame(store, self._decoder.addresses)
            df.attrs["stats"] = self.stats
            yield df

    def read_all(self) -> pd.DataFrame:
        """Decode the whole capture into one table."""
        from ..decode import ColumnStore, to_frame

        store = ColumnStore.concat(list(self.stores()))
        df = to_frame(store, self._decoder.addresses)
        df.attrs["stats"] = self.stats
        return df


def iter_packets(path, batch_size: int = DEFAULT_BATCH) -> PacketReader:
    """Read a capture batch by batch; memory stays flat whatever the file size.

    >>> reader = iter_packets("captures/demo.pcap", batch_size=10_000)   # doctest: +SKIP
    >>> total = sum(len(df) for df in reader); reader.stats["frames"]     # doctest: +SKIP
    """
    return PacketReader(path, batch_size)


def read_packets(path, engine: str = "native") -> pd.DataFrame:
    """Read a whole capture into the packet table (one row per TCP segment).

    ``df.attrs["stats"]`` says how many frames were read and skipped, and why.

    >>> df = read_packets("captures/demo.pcap")                          # doctest: +SKIP
    >>> df[["frame", "src", "sport", "dst", "dport", "flags"]].head()    # doctest: +SKIP
    """
    if engine == "pyshark":
        from .pyshark_engine import read_packets_pyshark

        return read_packets_pyshark(os.fspath(path))
    if engine != "native":
        raise AnalyzerError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return PacketReader(path).read_all()


__all__ = ["FrameBatch", "PacketReader", "iter_packets", "read_packets", "ENGINES"]
