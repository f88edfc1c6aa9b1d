"""Reports: run the pipeline on a capture, hold the three tables, write them, summarise them.

>>> import analyzer
>>> report = analyzer.analyze("captures/demo.pcap")                  # doctest: +SKIP
>>> report.handshakes[["stream", "outcome", "handshake_rtt"]]         # doctest: +SKIP
>>> report.write("out", format="parquet")                             # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from . import schema
from .capture import ANALYZE_BATCH, PREFETCH, PacketReader, _prefetched, read_packets
from .table import Table

if TYPE_CHECKING:
    import pandas as pd

    AnyTable = Union[pd.DataFrame, Table]

FORMATS = ("csv", "parquet", "json")
TABLES = ("connections", "handshakes", "retransmissions")


def table_columns(name: str) -> tuple[schema.Column, ...]:
    return {"connections": schema.CONNECTION_COLUMNS, "handshakes": schema.HANDSHAKE_COLUMNS,
            "retransmissions": schema.RETRANSMISSION_COLUMNS, "packets": schema.PACKET_COLUMNS}[name]


class Report:
    """The analysis of one capture: three tables (four with ``packets``) and the reading stats.

    Tables may be given as DataFrames or as the engine's raw ``table.Table``; the attributes
    ``connections``, ``handshakes``, ``retransmissions`` and ``packets`` are always DataFrames (made on
    first access). ``write(format="csv")`` and ``summary()`` work on the raw form, without pandas."""

    def __init__(self, capture: str, connections: AnyTable, handshakes: AnyTable, retransmissions: AnyTable,
                 stats: dict | None = None, packets: AnyTable | None = None):
        self.capture = capture
        self.stats = {} if stats is None else stats
        self._tables: dict = {"connections": connections, "handshakes": handshakes,
                              "retransmissions": retransmissions}
        if packets is not None:
            self._tables["packets"] = packets

    def _frame(self, name: str) -> pd.DataFrame:
        t = self._tables[name]
        if isinstance(t, Table):
            t = self._tables[name] = t.to_pandas()
        return t

    connections = property(lambda self: self._frame("connections"),
                           lambda self, df: self._tables.__setitem__("connections", df))
    handshakes = property(lambda self: self._frame("handshakes"),
                          lambda self, df: self._tables.__setitem__("handshakes", df))
    retransmissions = property(lambda self: self._frame("retransmissions"),
                               lambda self, df: self._tables.__setitem__("retransmissions", df))

    @property
    def packets(self) -> pd.DataFrame | None:
        return self._frame("packets") if "packets" in self._tables else None

    @packets.setter
    def packets(self, df: pd.DataFrame | None) -> None:
        if df is None:
            self._tables.pop("packets", None)
        else:
            self._tables["packets"] = df

    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: self._frame(name) for name in self._tables}

    def column(self, table: str, name: str) -> np.ndarray:
        """One column as a numpy array, from whichever form the table is in (missing numbers as NaN)."""
        t = self._tables[table]
        if isinstance(t, Table):
            return t.values(name)
        s = t[name]
        if s.dtype == object or str(s.dtype) in ("category", "str", "string"):
            return s.to_numpy(dtype=object)
        return s.to_numpy(dtype=float, na_value=np.nan) if s.hasnans else s.to_numpy()

    def write(self, out_dir: str | os.PathLike, format: str = "csv") -> list[Path]:
        """Write each table as ``<table>.csv`` / ``.parquet`` / ``.jsonl`` into ``out_dir``."""
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        jobs = [(self._tables[name] if format == "csv" else self._frame(name),
                 out / f"{name}.{'jsonl' if format == 'json' else format}") for name in self._tables]
        if format == "csv" and len(jobs) > 1:
            _in_threads([lambda t=t, p=p: write_table(t, p, format) for t, p in jobs])
        else:
            for t, p in jobs:
                write_table(t, p, format)
        return [p for _, p in jobs]

    def summary(self) -> dict:
        """A machine-readable summary (what ``analyze --json`` prints)."""
        return summarise(self)


def _in_threads(calls: list[Callable[[], None]]) -> None:
    """Run ``calls`` at once, one thread each (Arrow's CSV writer releases the GIL); re-raise the first error."""
    import threading

    errors: list[BaseException] = []

    def guard(call):
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(c,)) for c in calls[1:]]
    for t in threads:
        t.start()
    guard(calls[0])
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def write_table(table: AnyTable, path: Path, format: str) -> None:
    """Write one table (a DataFrame, or a raw ``Table`` for CSV)."""
    if format == "csv":
        _write_csv(table, path)
    elif isinstance(table, Table):
        write_table(table.to_pandas(), path, format)
    elif format == "parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_json(path, orient="records", lines=True, date_format="iso", double_precision=15)


def _write_csv(table: AnyTable, path: Path) -> None:
    """CSV through Arrow's writer (about ten times faster than ``DataFrame.to_csv``).

    Missing values are empty fields, booleans ``true``/``false``, floats in shortest round-trip form.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if isinstance(table, Table):
        arrow, names = table.to_arrow(), [c.name for c in table.columns]
    else:
        arrow, names = pa.Table.from_pandas(table, preserve_index=False), list(table.columns)
        arrow = arrow.cast(pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                                      for f in arrow.schema]))
    with open(path, "wb") as f:
        f.write((",".join(names) + "\n").encode())
        pacsv.write_csv(arrow, f, pacsv.WriteOptions(include_header=False, quoting_style="needed"))


def read_table(path: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read a written table back with its declared dtypes (tests and notebooks use this)."""
    import pandas as pd

    path = Path(path)
    cols = table_columns(name)
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix == ".jsonl":
        df = pd.read_json(path, orient="records", lines=True, dtype=False)
    else:
        df = pd.read_csv(path, dtype={c.name: object for c in cols if c.dtype in ("str", "string", "category")},
                         keep_default_na=False, na_values={c.name: [""] for c in cols
                                                          if c.dtype not in ("str", "string", "category")})
    return schema.conform(df, cols) if len(df.columns) else schema.empty_frame(cols)


def analyze(path_or_paths, engine: str = "native", packets: bool = False, batch_size: int = ANALYZE_BATCH,
            progress: Callable[[int, int], None] | None = None) -> Report | list[Report]:
    """Analyze one capture (returns a ``Report``) or several (returns a list, one per capture).

    With the native engine, a thread reads and decodes the capture batch by batch, ``PREFETCH`` batches
    ahead, while this one runs the TCP engine on them (the compiled passes of both release the GIL)."""
    if isinstance(path_or_paths, (list, tuple)):
        return [analyze(p, engine, packets, batch_size, progress) for p in path_or_paths]
    path = os.fspath(path_or_paths)
    kept: list = []
    if engine == "native":
        reader = PacketReader(path, batch_size)
        # decoding starts now, while the engine loads. Without the packet table, the engine keeps no
        # reference to a store once it asks for the next one: PREFETCH + 2 stores are enough, reused
        stores = _prefetched(reader.stores(recycle=0 if packets else PREFETCH + 2), PREFETCH)
        from .tcp import analyze_batches

        import pyarrow.csv  # noqa: F401  (for write(); imported while the first batch is decoded)

        size = _size(path)

        def batches() -> Iterable:
            for store in stores:
                if packets:
                    from .decode import to_frame

                    kept.append(to_frame(store))
                if progress:
                    progress(reader._source.bytes_read, size)
                yield store

        tables = analyze_batches(batches())
        stats = reader.stats
    else:
        from .tcp import analyze_batches

        df = read_packets(path, engine=engine)
        kept = [df] if packets else []
        tables = analyze_batches([df])
        stats = dict(df.attrs.get("stats", {}))
    stats["engine"] = engine
    stats.update(tables.stats)
    table = None
    if packets:
        import pandas as pd

        table = pd.concat(kept, ignore_index=True) if len(kept) > 1 else \
            (kept[0] if kept else schema.empty_frame(schema.PACKET_COLUMNS))
        table = schema.conform(table, schema.PACKET_COLUMNS)
    return Report(path, stats=stats, packets=table, **tables.raw)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _percentiles(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return {}
    q = np.percentile(v, [50, 90, 99])
    return {"n": int(len(v)), "min": float(v.min()), "p50": float(q[0]), "p90": float(q[1]),
            "p99": float(q[2]), "max": float(v.max())}


def _label_counts(labels: np.ndarray) -> dict[str, int]:
    """{label: count} in label order."""
    if not len(labels):
        return {}
    values, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    return {str(k): int(n) for k, n in zip(values.tolist(), counts.tolist())}


def summarise(report: Report, top: int = 5) -> dict:
    """Counts a person wants first: outcomes, RTT percentiles, retransmissions by kind, worst flows."""
    col = report.column
    worst = []
    if len(col("connections", "stream")):
        rbytes = np.nan_to_num(col("connections", "retransmitted_bytes").astype(float))
        order = np.lexsort((col("connections", "stream"), -rbytes))[:top]
        order = order[rbytes[order] > 0]
        c = {name: col("connections", name)[order].tolist() for name in
             ("stream", "client", "client_port", "server", "server_port", "retransmissions", "retransmitted_bytes")}
        for i in range(len(order)):
            worst.append({"stream": int(c["stream"][i]), "client": f"{c['client'][i]}:{c['client_port'][i]}",
                          "server": f"{c['server'][i]}:{c['server_port'][i]}",
                          "retransmissions": int(c["retransmissions"][i]),
                          "retransmitted_bytes": int(c["retransmitted_bytes"][i])})
    # RTT percentiles use clean handshakes only (Karn): with a retried SYN or SYN-ACK the sample
    # includes a retransmission timeout, not just the path.
    outcome = col("handshakes", "outcome")
    clean = (outcome == "established") & (np.asarray(col("handshakes", "syn_retries"), dtype=float) == 0) \
        & (np.asarray(col("handshakes", "synack_retries"), dtype=float) == 0)
    return {
        "capture": report.capture,
        "frames": int(report.stats.get("frames", 0)),
        "tcp_segments": int(report.stats.get("tcp_segments", 0)),
        "connections": int(len(col("connections", "stream"))),
        "handshakes": _label_counts(outcome),
        "handshake_rtt_seconds": _percentiles(col("handshakes", "handshake_rtt")[clean]) if clean.any() else {},
        "retransmissions": _label_counts(col("retransmissions", "kind")),
        "top_retransmitting_connections": worst,
        "skipped_frames": dict(report.stats.get("skipped", {})),
        "problems": list(report.stats.get("problems", [])),
    }


def summary_json(reports: list[Report]) -> str:
    return json.dumps([summarise(r) for r in reports], indent=2)
