"""Run the pipeline on a capture: sources -> decode -> TCP engine -> ``Report``.

>>> import analyzer
>>> report = analyzer.analyze("captures/demo.pcap")                  # doctest: +SKIP
"""
from __future__ import annotations

import os

import numpy as np
from collections.abc import Callable, Iterable

from .. import schema
from ..decode import ANALYZE_BATCH, PREFETCH, PacketReader, frame_selection, prefetched, read_packets
from .report import Report


def analyze(path_or_paths, engine: str = "native", packets: bool = False, batch_size: int = ANALYZE_BATCH,
            progress: Callable[[int, int], None] | None = None, *, bpf: str | None = None, start=None,
            end=None) -> Report | list[Report]:
    """Analyze one capture (returns a ``Report``) or several (returns a list, one per capture).

    ``bpf``, ``start``, ``end`` keep only some frames, as in ``read_packets`` (a BPF filter in tcpdump's
    syntax; epoch seconds or ``"+5"``, seconds after the first frame); frame numbers stay the file's.
    With the native engine, a thread reads and decodes the capture batch by batch, ``PREFETCH`` batches
    ahead, while this one runs the TCP engine on them (the compiled passes of both release the GIL)."""
    if isinstance(path_or_paths, (list, tuple)):
        return [analyze(p, engine, packets, batch_size, progress, bpf=bpf, start=start, end=end)
                for p in path_or_paths]
    path = os.fspath(path_or_paths)
    select = frame_selection(bpf, start, end)
    kept: list = []
    if engine == "native":
        reader = PacketReader(path, batch_size, select=select)
        # decoding starts now, while the engine loads. Without the packet table, the engine keeps no
        # reference to a store once it asks for the next one: PREFETCH + 2 stores are enough, reused
        stores = prefetched(reader.stores(recycle=0 if packets else PREFETCH + 2), PREFETCH)
        from ..tcp import analyze_batches

        import pyarrow.csv  # noqa: F401  (for write(); imported while the first batch is decoded)

        size = _size(path)

        def batches() -> Iterable:
            for store in stores:
                if packets:
                    from ..decode import to_frame

                    kept.append(to_frame(store))
                if progress:
                    progress(reader._source.bytes_read, size)
                yield store

        sides: list | None = [] if packets else None
        tables = analyze_batches(batches(), sides)
        stats = reader.stats
    else:
        from ..tcp import analyze_batches

        df = read_packets(path, engine=engine, bpf=bpf, start=start, end=end)
        kept = [df] if packets else []
        sides = [] if packets else None
        tables = analyze_batches([df], sides)
        stats = dict(df.attrs.get("stats", {}))
    stats["engine"] = engine
    stats.update(tables.stats)
    table = None
    if packets:
        import pandas as pd

        table = pd.concat(kept, ignore_index=True) if len(kept) > 1 else \
            (kept[0] if kept else schema.empty_frame(schema.PACKET_COLUMNS))
        streams = np.concatenate([s for s, _ in sides]) if sides else np.empty(0, dtype=np.int64)
        table["stream"] = streams
        table["direction"] = tables.directions(streams, np.concatenate([d for _, d in sides]) if sides else streams)
        table = schema.conform(table, schema.PACKET_TABLE_COLUMNS)
    return Report(path, stats=stats, packets=table, **tables.raw)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
