"""Run the pipeline on a capture: sources -> decode -> TCP engine -> ``Report``.

>>> import analyzer
>>> report = analyzer.analyze("captures/demo.pcap")                  # doctest: +SKIP
>>> report = analyzer.analyze("big.pcap", jobs=2)                    # doctest: +SKIP
>>> merged = analyzer.analyze(["trace0.pcap", "trace1.pcap"], merge=True)   # doctest: +SKIP
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from .. import schema
from ..decode import ANALYZE_BATCH, PREFETCH, PacketReader, frame_selection, prefetched, read_packets
from ..errors import AnalyzerError
from ..table import Table
from ..tcp.engine import CLOSE_DELAY, IDLE_TIMEOUT
from .report import Report
from .rows import DiskSink

if TYPE_CHECKING:
    from ..sources.merge import FrameMap


def analyze(path_or_paths, engine: str = "native", packets: bool = False, batch_size: int = ANALYZE_BATCH,
            progress: Callable[[int, int], None] | None = None, *, bpf: str | None = None, start=None,
            end=None, merge: bool = False, jobs: int = 1, scheduler: str | None = None,
            idle_timeout: float = IDLE_TIMEOUT, close_delay: float = CLOSE_DELAY) -> Report | list[Report]:
    """Analyze one capture (returns a ``Report``) or several (returns a list, one per capture).

    ``bpf``, ``start``, ``end`` keep only some frames, as in ``read_packets`` (a BPF filter in tcpdump's
    syntax; epoch seconds or ``"+5"``, seconds after the first frame); frame numbers stay the file's.
    ``merge``: the captures (a list of files or folders) are one trace, read in time order as mergecap
    merges them (``sources.merge``); one ``Report``, whose tables end with the ``capture`` and
    ``capture_frame`` columns. A capture may be ``-`` (standard input) or a binary file object.
    With the native engine, a thread reads and decodes the capture batch by batch, ``PREFETCH`` batches
    ahead, while this one runs the TCP engine on them (the compiled passes of both release the GIL).
    A connection ends ``close_delay`` seconds after it is over (FIN both ways, or RST) or after
    ``idle_timeout`` seconds without a packet (Zeek's defaults: 5 s, 300 s); the connections and
    handshakes rows of ended connections wait on disk (``rows.DiskSink``), so memory follows the
    connections open at once. The report reads them back when a table is asked for or written.

    ``jobs`` > 1: one capture's connections (a merged trace's, a pipe's too) are analyzed in that many
    processes (``parallel``), several captures that many at once. ``scheduler`` (``tcp://host:port``): on
    that Dask cluster (``cluster``), the captures read by its workers (files only: not a merge, not a pipe).
    Either way the report is the one a single process gives.

    >>> report = analyze(["trace0.pcap", "trace1.pcap"], merge=True)   # doctest: +SKIP
    >>> report.retransmissions[["frame", "capture", "capture_frame", "kind"]]   # doctest: +SKIP
    """
    if merge and engine != "native":
        raise AnalyzerError("merging captures needs the native engine")
    if scheduler is not None:
        from .cluster import analyze_on_cluster

        if merge:
            raise AnalyzerError("a merge of captures is read by this process: it cannot run on a Dask cluster")
        return analyze_on_cluster(scheduler, path_or_paths, engine=engine, packets=packets, bpf=bpf, start=start,
                                  end=end, groups=jobs if jobs > 1 else None, idle_timeout=idle_timeout,
                                  close_delay=close_delay)
    if isinstance(path_or_paths, (list, tuple)) and not merge:
        one = lambda p: analyze(p, engine, packets, batch_size, bpf=bpf, start=start, end=end,  # noqa: E731
                                idle_timeout=idle_timeout, close_delay=close_delay)
        if jobs > 1 and len(path_or_paths) > 1:
            from .parallel import each_in_processes

            return [raised(r) for r in each_in_processes(one, list(path_or_paths), jobs)]
        return [analyze(p, engine, packets, batch_size, progress, bpf=bpf, start=start, end=end, jobs=jobs,
                        idle_timeout=idle_timeout, close_delay=close_delay) for p in path_or_paths]
    if merge and engine != "native":
        raise AnalyzerError("merging captures needs the native engine")
    path = path_or_paths if merge or hasattr(path_or_paths, "read") else os.fspath(path_or_paths)
    select = frame_selection(bpf, start, end)
    if engine == "native" and jobs > 1:
        from .parallel import analyze_split

        return analyze_split(path, jobs, packets=packets, select=select, progress=progress, batch_size=batch_size,
                             merge=merge, idle_timeout=idle_timeout, close_delay=close_delay)
    kept: list = []
    captures = None
    if engine == "native":
        reader = PacketReader(path, batch_size, select=select, merge=merge)
        captures = reader.captures
        # decoding starts now, while the engine loads. Without the packet table, the engine keeps no
        # reference to a store once it asks for the next one: PREFETCH + 2 stores are enough, reused
        stores = prefetched(reader.stores(recycle=0 if packets else PREFETCH + 2), PREFETCH)
        from ..tcp import analyze_batches

        import pyarrow.csv  # noqa: F401  (for write(); imported while the first batch is decoded)

        size = reader.size

        def batches() -> Iterable:
            for store in stores:
                if packets:
                    kept.append(reader.frame(store))
                if progress:
                    progress(reader.bytes_read, size)
                yield store

        sides: list | None = [] if packets else None
        sink = DiskSink((schema.CONNECTION_COLUMNS, schema.HANDSHAKE_COLUMNS))
        tables = analyze_batches(batches(), sides, sink=sink, idle_timeout=idle_timeout, close_delay=close_delay)
        stats = reader.stats
        name = reader.name
    else:
        from ..tcp import analyze_batches

        df = read_packets(path, engine=engine, bpf=bpf, start=start, end=end)
        kept = [df] if packets else []
        sides = [] if packets else None
        tables = analyze_batches([df], sides, idle_timeout=idle_timeout, close_delay=close_delay)
        stats = dict(df.attrs.get("stats", {}))
        name = path
    stats["engine"] = engine
    stats.update(tables.stats)
    raw = tables.raw if captures is None else with_captures(tables.raw, reader.frame_map, captures)
    table = None
    if packets:
        streams = np.concatenate([s for s, _ in sides]) if sides else np.empty(0, dtype=np.int64)
        table = packet_table(kept, streams,
                             tables.directions(streams, np.concatenate([d for _, d in sides]) if sides else streams),
                             captures)
    return Report(name, stats=stats, packets=table, captures=captures, **raw)


def packet_table(pieces: list, streams: np.ndarray, directions: np.ndarray, captures: list[str] | None = None):
    """The packet table from its batches' DataFrames and each row's stream id and direction, in the declared
    columns and dtypes (with the capture columns for a merged trace's, ``captures``)."""
    import pandas as pd

    columns = (schema.PACKET_TABLE_COLUMNS if captures is None
               else schema.with_capture_columns(schema.PACKET_TABLE_COLUMNS))
    table = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else \
        (pieces[0] if pieces else schema.empty_frame(schema.PACKET_COLUMNS))
    table["stream"] = streams
    table["direction"] = directions
    return schema.conform(table, columns)


def raised(result):
    """``result``, or raised when it is the error a capture's analysis ended with."""
    if isinstance(result, BaseException):
        raise result
    return result


def with_captures(raw: dict, frame_map: FrameMap, captures: list[str]) -> dict:
    """The engine's tables with the capture columns (``schema.CAPTURE_COLUMNS``) of each row's frame: ``frame``;
    for connections and handshakes, the connection's ``first_frame``. Tables built or read a part at a time
    get them part by part."""
    conns = raw["connections"]
    streams = conns.values("stream")
    first_frame = np.zeros(int(streams.max()) + 1 if len(streams) else 0, dtype=np.int64)
    first_frame[streams] = conns.values("first_frame")
    frames = {"connections": lambda t: t.values("first_frame"), "handshakes": lambda t: first_frame[t.values("stream")],
              "retransmissions": lambda t: t.values("frame"), "events": lambda t: t.values("frame")}
    names = np.asarray(captures, dtype=object)
    capture, number = schema.CAPTURE_COLUMNS

    def adder(table: str, columns: tuple):
        def add(t: Table) -> Table:
            files, numbers = frame_map.locate(frames[table](t))
            return Table(columns, {**t.data, capture.name: names[files], number.name: numbers.astype(number.dtype)})
        return add

    out = {}
    for table, t in raw.items():
        columns = schema.with_capture_columns(t.columns)
        out[table] = t.with_columns(columns, adder(table, columns)) if hasattr(t, "with_columns") else \
            adder(table, columns)(t)
    return out
