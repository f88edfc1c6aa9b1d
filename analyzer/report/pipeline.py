"""Run the pipeline on a capture: sources -> decode -> TCP engine -> ``Report``.

>>> import analyzer
>>> report = analyzer.analyze("captures/demo.pcap")                  # doctest: +SKIP
>>> report = analyzer.analyze("big.pcap", jobs=2)                    # doctest: +SKIP
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from .. import schema
from ..decode import ANALYZE_BATCH, PREFETCH, PacketReader, frame_selection, prefetched, read_packets
from .report import Report


def analyze(path_or_paths, engine: str = "native", packets: bool = False, batch_size: int = ANALYZE_BATCH,
            progress: Callable[[int, int], None] | None = None, *, bpf: str | None = None, start=None,
            end=None, jobs: int = 1, scheduler: str | None = None) -> Report | list[Report]:
    """Analyze one capture (returns a ``Report``) or several (returns a list, one per capture).

    ``bpf``, ``start``, ``end`` keep only some frames, as in ``read_packets`` (a BPF filter in tcpdump's
    syntax; epoch seconds or ``"+5"``, seconds after the first frame); frame numbers stay the file's.
    With the native engine, a thread reads and decodes the capture batch by batch, ``PREFETCH`` batches
    ahead, while this one runs the TCP engine on them (the compiled passes of both release the GIL).

    ``jobs`` > 1: one capture's connections are analyzed in that many processes (``parallel``), several
    captures that many at once. ``scheduler`` (``tcp://host:port``): on that Dask cluster (``cluster``),
    the captures read by its workers. Either way the report is the one a single process gives."""
    if scheduler is not None:
        from .cluster import analyze_on_cluster

        return analyze_on_cluster(scheduler, path_or_paths, engine=engine, packets=packets, bpf=bpf, start=start,
                                  end=end, groups=jobs if jobs > 1 else None)
    if isinstance(path_or_paths, (list, tuple)):
        one = lambda p: analyze(p, engine, packets, batch_size, bpf=bpf, start=start, end=end)  # noqa: E731
        if jobs > 1 and len(path_or_paths) > 1:
            from .parallel import each_in_processes

            return [raised(r) for r in each_in_processes(one, list(path_or_paths), jobs)]
        return [analyze(p, engine, packets, batch_size, progress, bpf=bpf, start=start, end=end, jobs=jobs)
                for p in path_or_paths]
    path = os.fspath(path_or_paths)
    select = frame_selection(bpf, start, end)
    if engine == "native" and jobs > 1:
        from .parallel import analyze_split

        return analyze_split(path, jobs, packets=packets, select=select, progress=progress, batch_size=batch_size)
    kept: list = []
    if engine == "native":
        reader = PacketReader(path, batch_size, select=select)
        # decoding starts now, while the engine loads. Without the packet table, the engine keeps no
        # reference to a store once it asks for the next one: PREFETCH + 2 stores are enough, reused
        stores = prefetched(reader.stores(recycle=0 if packets else PREFETCH + 2), PREFETCH)
        from ..tcp import analyze_batches

        import pyarrow.csv  # noqa: F401  (for write(); imported while the first batch is decoded)

        size = file_size(path)

        def batches() -> Iterable:
            for store in stores:
                if packets:
                    from ..decode import to_frame

                    kept.append(to_frame(store))
                if progress:
                    progress(reader._source.bytes_read, size)
                yield store

        tables = analyze_batches(batches())
        stats = reader.stats
    else:
        from ..tcp import analyze_batches

        df = read_packets(path, engine=engine, bpf=bpf, start=start, end=end)
        kept = [df] if packets else []
        tables = analyze_batches([df])
        stats = dict(df.attrs.get("stats", {}))
    stats["engine"] = engine
    stats.update(tables.stats)
    return Report(path, stats=stats, packets=packet_table(kept) if packets else None, **tables.raw)


def packet_table(pieces: list):
    """The packet table from its batches' DataFrames, in the declared columns and dtypes."""
    import pandas as pd

    table = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else \
        (pieces[0] if pieces else schema.empty_frame(schema.PACKET_COLUMNS))
    return schema.conform(table, schema.PACKET_COLUMNS)


def raised(result):
    """``result``, or raised when it is the error a capture's analysis ended with."""
    if isinstance(result, BaseException):
        raise result
    return result


def file_size(path: str) -> int:
    """The size of the file at ``path`` (for a progress bar), 0 when unknown."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
