"""A capture file as packet-table batches: ``PacketReader``, ``iter_packets``, ``read_packets``.

With ``merge=True`` several files (or a folder of them) are read as one trace in time order
(``sources.merge``): frame numbers continue across files, and the table gets the ``capture`` and
``capture_frame`` columns (``schema.CAPTURE_COLUMNS``) saying where each frame came from. The path
``-`` is standard input.

>>> import analyzer
>>> df = analyzer.read_packets("captures/demo.pcap")                  # doctest: +SKIP
>>> for batch in analyzer.iter_packets("big.pcap", batch_size=100_000):  # doctest: +SKIP
...     print(len(batch))
>>> analyzer.read_packets(["part0.pcap", "part1.pcap"], merge=True)  # doctest: +SKIP
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import TYPE_CHECKING

import numpy as np

from .. import schema
from ..errors import AnalyzerError
from ..sources.frames import FrameBatch
from .decoder import ALL_CONNECTIONS, ConnectionGroup
from .store import Q_FRAME, ColumnStore

if TYPE_CHECKING:
    import pandas as pd

ENGINES = ("native", "pyshark")
DEFAULT_BATCH = 262_144
# analyze() runs the engine on smaller batches: the reader thread and the engine overlap more finely, and
# the few recycled stores stay in the CPU caches and need fewer fresh pages (see PacketReader.stores)
ANALYZE_BATCH = 32_768
PREFETCH = 2  # batches read ahead by the prefetch thread
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class TimeBound:
    """One end of a time window: ``ns`` since the epoch, or since the capture's first frame (``relative``).

    Text: ``1700000000.25`` is absolute epoch seconds, ``+5`` five seconds after the first frame
    (decimal, exact to the nanosecond).

    >>> TimeBound.parse("+1.5")
    TimeBound(ns=1500000000, relative=True)
    """

    ns: int
    relative: bool = False

    @classmethod
    def parse(cls, text: str | float) -> "TimeBound":
        text = str(text).strip()
        try:
            seconds = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{text!r} is not a time: give epoch seconds (1700000000.5) or seconds after "
                             "the first frame (+5)") from None
        if not seconds.is_finite():
            raise ValueError(f"{text!r} is not a time")
        # a frame at or after the exact bound: compare with the bound rounded up to a whole nanosecond
        ns = int((seconds * NS_PER_S).to_integral_value(rounding=ROUND_CEILING))
        return cls(ns, relative=text.startswith("+"))


class FrameSelection:
    """Which frames of a capture to keep: a BPF filter (tcpdump's syntax, ``sources.bpf``) and a time
    window, ``start <= time < end`` (as editcap -A/-B). Kept frames keep their frame numbers in the file."""

    def __init__(self, bpf: str | None = None, start: TimeBound | None = None, end: TimeBound | None = None):
        from ..sources.bpf import BpfFilter

        self.bpf = BpfFilter(bpf) if bpf else None
        self.start, self.end = start, end
        self.first_ns: int | None = None  # the capture's first frame, for relative bounds
        self.dropped = 0

    def apply(self, batch: FrameBatch, big_endian: bool | np.ndarray = False) -> tuple[FrameBatch, np.ndarray | None]:
        """(the kept frames as a batch, their indices in ``batch``; None when all are kept). ``big_endian``:
        the file's byte order (a BSD loopback header is in the capturing host's order)."""
        if self.first_ns is None and len(batch):
            self.first_ns = int(batch.ts_ns[0])
        keep = self.bpf.match(batch, big_endian) if self.bpf else np.ones(len(batch), dtype=bool)
        for bound, later in ((self.start, True), (self.end, False)):
            if bound is not None:
                at = bound.ns + (self.first_ns if bound.relative else 0)
                keep &= (batch.ts_ns >= at) if later else (batch.ts_ns < at)
        if keep.all():
            return batch, None
        kept = np.flatnonzero(keep)
        self.dropped += len(batch) - len(kept)
        return replace(batch, offsets=batch.offsets[kept], caplens=batch.caplens[kept],
                       wirelens=batch.wirelens[kept], ts_ns=batch.ts_ns[kept], linktypes=batch.linktypes[kept],
                       interfaces=batch.interfaces[kept]), kept


def frame_selection(bpf: str | None = None, start: TimeBound | str | float | None = None,
                    end: TimeBound | str | float | None = None) -> FrameSelection | None:
    """A ``FrameSelection`` from a filter expression and time bounds (``TimeBound`` or its text); None for none.
    Raises ``AnalyzerError`` for a bound that is not a time."""
    if not bpf and start is None and end is None:
        return None
    try:
        start, end = (b if b is None or isinstance(b, TimeBound) else TimeBound.parse(b) for b in (start, end))
    except ValueError as exc:
        raise AnalyzerError(str(exc)) from None
    return FrameSelection(bpf, start, end)


class PacketReader:
    """Iterates a capture as packet-table DataFrames, one per batch of frames.

    After iteration, ``stats`` holds frames read, TCP segments, skipped frames by reason and the
    one-line ``problems`` met (damage that stopped the reading early). With ``select`` (a
    ``FrameSelection``), only the frames it keeps are decoded; ``stats["filtered_out"]`` counts the others.
    With ``nullable``, the DataFrames are in the form for people (``store.nullable_packets``). With
    ``group``, only that connection group's segments are decoded into rows (``analyze --scheduler``: each
    worker reads every frame and keeps its own connections); the stats still count every frame.
    With ``merge``, ``path`` is a list of captures or folders, read as one trace (module doc); ``captures``
    then names the files and ``frame_map`` places each merged frame in one of them.
    """

    def __init__(self, path, batch_size: int = DEFAULT_BATCH, prefetch: bool = False,
                 select: FrameSelection | None = None, nullable: bool = False, merge: bool = False,
                 group: ConnectionGroup = ALL_CONNECTIONS):
        from ..sources.files import FrameSource, capture_name
        from ..sources.merge import MergedSource, capture_files
        from .decoder import Decoder

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = path
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.select = select
        self.nullable = nullable
        if merge:
            paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
            self._source = MergedSource(capture_files(paths))
            self.captures: list[str] | None = self._source.captures
            self.frame_map = self._source.frames
            self.name = self._source.name
        else:
            self._source = FrameSource(path)  # raises CaptureError at once for a non-capture
            self.captures, self.frame_map, self.name = None, None, capture_name(path)
        self._decoder = Decoder(group)
        self.format = self._source.format

    @property
    def bytes_read(self) -> int:
        """Bytes of the capture (or captures) read so far."""
        return self._source.bytes_read

    @property
    def size(self) -> int:
        """Bytes of the capture files; 0 when unknown (gzip, a pipe)."""
        return self._source.file_size() or 0

    @property
    def stats(self) -> dict:
        s = self._decoder.stats.as_dict()
        s["format"] = self.format
        s["problems"] = list(self._source.problems)
        s["filtered_out"] = self.select.dropped if self.select else 0
        return s

    def _decode(self, batch: FrameBatch, store: ColumnStore) -> None:
        """Decode ``batch`` (what the selection keeps of it) into ``store``; rows keep the file's frame numbers."""
        if self.select is not None:
            batch, kept = self.select.apply(batch, self._source.big_endian)
            if kept is not None:
                start = store.n
                self._decoder.decode_into(batch, store, code_addresses=False)
                frames = store.mats[0][Q_FRAME, start:store.n]
                frames[:] = batch.first_frame + kept[frames - batch.first_frame]
                return
        self._decoder.decode_into(batch, store, code_addresses=False)

    def stores(self, recycle: int = 0, new_store: Callable[[], ColumnStore] | None = None) -> Iterator:
        """Yield one ``ColumnStore`` per batch of ``batch_size`` frames (the internal form).

        The file is read in small pieces (about 2 MB), each decoded while its bytes are still in
        the CPU cache; a store collects the rows of many pieces. A store has room for a whole batch from
        the start (a frame gives at most one row): untouched room costs address space, not memory.

        With ``recycle=k``, the store yielded ``k`` batches earlier is filled again instead of a new one
        (the caller holds no reference to it by then): the same few stores' memory is used over and
        over, which saves a page fault per 4 KiB of rows (a third of ``analyze``'s time on some VMs).
        With ``new_store``, each batch goes into the empty store it returns, with room for ``batch_size``
        rows (the caller recycles them: ``report.parallel`` hands out stores in shared memory).
        """
        ring: list[ColumnStore] = []

        def next_store() -> ColumnStore:
            if new_store is not None:
                return new_store()
            if recycle and len(ring) == recycle:
                store = ring.pop(0)
                store.n = 0
            else:
                store = ColumnStore(self.batch_size)
            if recycle:
                ring.append(store)
            return store

        store, frames = next_store(), 0
        for batch in self._source.batches(lambda: self.batch_size - frames):
            self._decode(batch, store)
            frames += len(batch)
            if frames >= self.batch_size:
                self._decoder.code_addresses(store)
                yield store
                store, frames = next_store(), 0
        self._decoder.finish()
        if frames or store.n:
            self._decoder.code_addresses(store)
            yield store

    @property
    def addresses(self) -> list[str]:
        return self._decoder.addresses

    def _frames(self) -> Iterator[pd.DataFrame]:
        for store in self.stores():
            df = self.frame(store)
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
        store = None
        for batch in self._source.batches(self.batch_size):
            if store is None:
                store = ColumnStore(self._estimate_rows(batch))
            self._decode(batch, store)
        self._decoder.finish()
        store = store or ColumnStore(0)
        self._decoder.code_addresses(store)
        df = self.frame(store)
        df.attrs["stats"] = self.stats
        return df

    def frame(self, store: ColumnStore) -> pd.DataFrame:
        """The packet table of one store (with the capture columns when merging)."""
        from .store import nullable_packets, to_frame

        df = to_frame(store)
        if self.captures is not None:
            df = with_captures(df, self.frame_map.locate(df["frame"].to_numpy()), self.captures)
        return nullable_packets(df) if self.nullable else df

    def _estimate_rows(self, first: FrameBatch) -> int:
        size = self._source.file_size()
        if not size or len(first) < 2:
            return 1 << 16
        stride = (int(first.offsets[-1]) - int(first.offsets[0])) / (len(first) - 1)
        return int(size / max(stride, 1.0) * 1.5) + 1024  # over-estimating costs address space only


def with_captures(df: pd.DataFrame, located: tuple[np.ndarray, np.ndarray], captures: list[str]) -> pd.DataFrame:
    """``df`` with the ``capture`` and ``capture_frame`` columns (``schema.CAPTURE_COLUMNS``) of its rows:
    ``located`` is (file index, frame in the file) per row, as ``FrameMap.locate`` gives them."""
    import pandas as pd

    files, frames = located
    name, number = schema.CAPTURE_COLUMNS
    df = df.copy(deep=False)
    df[name.name] = pd.Categorical.from_codes(files, categories=captures)
    df[number.name] = frames.astype(number.dtype)
    return df


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


def iter_packets(path, batch_size: int = DEFAULT_BATCH, prefetch: bool = False, *, bpf: str | None = None,
                 start=None, end=None, nullable: bool = False, merge: bool = False) -> PacketReader:
    """Read a capture batch by batch; memory stays flat whatever the file size. ``bpf``, ``start``, ``end``,
    ``nullable``, ``merge``: as ``read_packets``.

    >>> reader = iter_packets("captures/demo.pcap", batch_size=10_000)   # doctest: +SKIP
    >>> total = sum(len(df) for df in reader); reader.stats["frames"]     # doctest: +SKIP
    """
    return PacketReader(path, batch_size, prefetch, frame_selection(bpf, start, end), nullable, merge)


def read_packets(path, engine: str = "native", *, bpf: str | None = None, start=None, end=None,
                 nullable: bool = False, merge: bool = False) -> pd.DataFrame:
    """Read a whole capture into the packet table (one row per TCP segment).

    ``df.attrs["stats"]`` says how many frames were read and skipped, and why. ``bpf``: keep only the
    frames this filter (tcpdump's syntax) matches; ``start``/``end``: only frames at or after ``start``
    and before ``end``, epoch seconds or text ``"+5"`` (seconds after the first frame). Frame numbers
    stay those of the file. ``nullable``: NA instead of -1 for absent values (``mss``, ``wscale``,
    ``tsval``, ``tsecr``, ``ip_id``, ``vlan``, ``vlan_inner``, ``tfo_cookie_len`` as nullable Int
    columns) and a ``time`` column (datetime64[ns, UTC]) beside ``ts``; the default is the declared form
    (``schema.PACKET_COLUMNS``), which the TCP engine and the written tables use.

    >>> df = read_packets("captures/demo.pcap")                          # doctest: +SKIP
    >>> df[["frame", "src", "sport", "dst", "dport", "flags"]].head()    # doctest: +SKIP
    """
    select = frame_selection(bpf, start, end)
    if engine == "pyshark":
        if select is not None or merge:
            raise AnalyzerError("a BPF filter, a time window or a merge needs the native engine")
        from .store import nullable_packets
        from .tshark import read_packets_pyshark

        df = read_packets_pyshark(os.fspath(path))
        return nullable_packets(df) if nullable else df
    if engine != "native":
        raise AnalyzerError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return PacketReader(path, select=select, nullable=nullable, merge=merge).read_all()

