"""A capture file as packet-table batches: ``PacketReader``, ``iter_packets``, ``read_packets``.

>>> import analyzer
>>> df = analyzer.read_packets("captures/demo.pcap")                  # doctest: +SKIP
>>> for batch in analyzer.iter_packets("big.pcap", batch_size=100_000):  # doctest: +SKIP
...     print(len(batch))
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..errors import AnalyzerError
from ..sources.frames import FrameBatch

if TYPE_CHECKING:
    import pandas as pd

ENGINES = ("native", "pyshark")
DEFAULT_BATCH = 262_144
# analyze() runs the engine on smaller batches: the reader thread and the engine overlap more finely, and
# the few recycled stores stay in the CPU caches and need fewer fresh pages (see PacketReader.stores)
ANALYZE_BATCH = 32_768
PREFETCH = 2  # batches read ahead by the prefetch thread


class PacketReader:
    """Iterates a capture as packet-table DataFrames, one per batch of frames.

    After iteration, ``stats`` holds frames read, TCP segments, skipped frames by reason and the
    one-line ``problems`` met (damage that stopped the reading early).
    """

    def __init__(self, path, batch_size: int = DEFAULT_BATCH, prefetch: bool = False):
        from ..sources.files import FrameSource
        from .decoder import Decoder

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = path
        self.batch_size = batch_size
        self.prefetch = prefetch
        self._source = FrameSource(path)  # raises CaptureError at once for a non-capture
        self._decoder = Decoder()
        self.format = self._source.format

    @property
    def stats(self) -> dict:
        s = self._decoder.stats.as_dict()
        s["format"] = self.format
        s["problems"] = list(self._source.problems)
        return s

    def stores(self, recycle: int = 0) -> Iterator:
        """Yield one ``ColumnStore`` per batch of ``batch_size`` frames (the internal form).

        The file is read in small pieces (about 2 MB), each decoded while its bytes are still in
        the CPU cache; a store collects the rows of many pieces. A store has room for a whole batch from
        the start (a frame gives at most one row): untouched room costs address space, not memory.

        With ``recycle=k``, the store yielded ``k`` batches earlier is filled again instead of a new one
        (the caller holds no reference to it by then): the same few stores' memory is used over and
        over, which saves a page fault per 4 KiB of rows (a third of ``analyze``'s time on some VMs).
        """
        from .store import ColumnStore

        ring: list[ColumnStore] = []

        def new_store() -> ColumnStore:
            if recycle and len(ring) == recycle:
                store = ring.pop(0)
                store.n = 0
            else:
                store = ColumnStore(self.batch_size)
            if recycle:
                ring.append(store)
            return store

        store, frames = new_store(), 0
        for batch in self._source.batches(lambda: self.batch_size - frames):
            self._decoder.decode_into(batch, store, code_addresses=False)
            frames += len(batch)
            if frames >= self.batch_size:
                self._decoder.code_addresses(store)
                yield store
                store, frames = new_store(), 0
        self._decoder.finish()
        if frames or store.n:
            self._decoder.code_addresses(store)
            yield store

    @property
    def addresses(self) -> list[str]:
        return self._decoder.addresses

    def _frames(self) -> Iterator[pd.DataFrame]:
        from .store import to_frame

        for store in self.stores():
            df = to_frame(store)
            df.attrs["stats"] = self.stats
            yield df

    def __iter__(self) -> Iterator[pd.DataFrame]:
        """Batches as DataFrames; with ``prefetch``, the next batch is read and decoded in a thread
        while the caller works on this one (the compiled kernels release the GIL), at most
        ``PREFETCH`` batches ahead, so memory stays bounded."""
        if not self.prefetch:
            yield from self._frames()
            return
        yield from prefetched(self._frames(), PREFETCH)

    def read_all(self) -> pd.DataFrame:
        """Decode the whole capture into one table.

        Rows go straight into one store sized from the file size and the first piece's frame size
        (it grows if the guess was short), so the table is built once, without a final copy.
        """
        from .store import ColumnStore, to_frame

        store = None
        for batch in self._source.batches(self.batch_size):
            if store is None:
                store = ColumnStore(self._estimate_rows(batch))
            self._decoder.decode_into(batch, store, code_addresses=False)
        self._decoder.finish()
        store = store or ColumnStore(0)
        self._decoder.code_addresses(store)
        df = to_frame(store)
        df.attrs["stats"] = self.stats
        return df

    def _estimate_rows(self, first: FrameBatch) -> int:
        size = self._source.file_size()
        if not size or len(first) < 2:
            return 1 << 16
        stride = (int(first.offsets[-1]) - int(first.offsets[0])) / (len(first) - 1)
        return int(size / max(stride, 1.0) * 1.5) + 1024  # over-estimating costs address space only


def prefetched(it: Iterator, depth: int) -> Iterator:
    """Run iterator ``it`` in a background thread, ``depth`` items ahead; errors are re-raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in it:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=work, name="tcp-analyzer-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def iter_packets(path, batch_size: int = DEFAULT_BATCH, prefetch: bool = False) -> PacketReader:
    """Read a capture batch by batch; memory stays flat whatever the file size.

    >>> reader = iter_packets("captures/demo.pcap", batch_size=10_000)   # doctest: +SKIP
    >>> total = sum(len(df) for df in reader); reader.stats["frames"]     # doctest: +SKIP
    """
    return PacketReader(path, batch_size, prefetch)


def read_packets(path, engine: str = "native") -> pd.DataFrame:
    """Read a whole capture into the packet table (one row per TCP segment).

    ``df.attrs["stats"]`` says how many frames were read and skipped, and why.

    >>> df = read_packets("captures/demo.pcap")                          # doctest: +SKIP
    >>> df[["frame", "src", "sport", "dst", "dport", "flags"]].head()    # doctest: +SKIP
    """
    if engine == "pyshark":
        from .tshark import read_packets_pyshark

        return read_packets_pyshark(os.fspath(path))
    if engine != "native":
        raise AnalyzerError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return PacketReader(path).read_all()

