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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import schema
from .capture import DEFAULT_BATCH, PacketReader, read_packets

FORMATS = ("csv", "parquet", "json")
TABLES = ("connections", "handshakes", "retransmissions")


def table_columns(name: str) -> tuple[schema.Column, ...]:
    return {"connections": schema.CONNECTION_COLUMNS, "handshakes": schema.HANDSHAKE_COLUMNS,
            "retransmissions": schema.RETRANSMISSION_COLUMNS, "packets": schema.PACKET_COLUMNS}[name]


@dataclass
class Report:
    """The analysis of one capture: three tables (four with ``packets``) and the reading stats."""

    capture: str
    connections: pd.DataFrame
    handshakes: pd.DataFrame
    retransmissions: pd.DataFrame
    stats: dict = field(default_factory=dict)
    packets: pd.DataFrame | None = None

    def tables(self) -> dict[str, pd.DataFrame]:
        out = {name: getattr(self, name) for name in TABLES}
        if self.packets is not None:
            out["packets"] = self.packets
        return out

    def write(self, out_dir: str | os.PathLike, format: str = "csv") -> list[Path]:
        """Write each table as ``<table>.csv`` / ``.parquet`` / ``.jsonl`` into ``out_dir``."""
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, df in self.tables().items():
            path = out / f"{name}.{ 'jsonl' if format == 'json' else format}"
            write_table(df, path, format)
            written.append(path)
        return written

    def summary(self) -> dict:
        """A machine-readable summary (what ``analyze --json`` prints)."""
        return summarise(self)


def write_table(df: pd.DataFrame, path: Path, format: str) -> None:
    if format == "csv":
        _write_csv(df, path)
    elif format == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True, date_format="iso", double_precision=15)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    """CSV through Arrow's writer (about ten times faster than ``DataFrame.to_csv``).

    Missing values are empty fields, booleans ``true``/``false``, floats in shortest round-trip form.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.cast(pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                                  for f in table.schema]))
    with open(path, "wb") as f:
        f.write((",".join(df.columns) + "\n").encode())
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="needed"))


def read_table(path: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read a written table back with its declared dtypes (tests and notebooks use this)."""
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


def analyze(path_or_paths, engine: str = "native", packets: bool = False, batch_size: int = DEFAULT_BATCH,
            progress: Callable[[int, int], None] | None = None) -> Report | list[Report]:
    """Analyze one capture (returns a ``Report``) or several (returns a list, one per capture)."""
    if isinstance(path_or_paths, (list, tuple)):
        return [analyze(p, engine, packets, batch_size, progress) for p in path_or_paths]
    from .tcp import analyze_batches

    path = os.fspath(path_or_paths)
    kept: list[pd.DataFrame] = []
    if engine == "native":
        reader = PacketReader(path, batch_size, prefetch=True)
        size = _size(path)

        def batches() -> Iterable[pd.DataFrame]:
            for df in reader:
                if packets:
                    kept.append(df)
                if progress:
                    progress(reader._source.bytes_read, size)
                yield df

        tables = analyze_batches(batches())
        stats = reader.stats
    else:
        df = read_packets(path, engine=engine)
        kept = [df] if packets else []
        tables = analyze_batches([df])
        stats = dict(df.attrs.get("stats", {}))
    stats["engine"] = engine
    stats.update(tables.stats)
    table = None
    if packets:
        table = pd.concat(kept, ignore_index=True) if len(kept) > 1 else \
            (kept[0] if kept else schema.empty_frame(schema.PACKET_COLUMNS))
        table = schema.conform(table, schema.PACKET_COLUMNS)
    return Report(capture=path, connections=tables.connections, handshakes=tables.handshakes,
                  retransmissions=tables.retransmissions, stats=stats, packets=table)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _percentiles(values: pd.Series) -> dict:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if not len(v):
        return {}
    q = np.percentile(v, [50, 90, 99])
    return {"n": int(len(v)), "min": float(v.min()), "p50": float(q[0]), "p90": float(q[1]),
            "p99": float(q[2]), "max": float(v.max())}


def summarise(report: Report, top: int = 5) -> dict:
    """Counts a person wants first: outcomes, RTT percentiles, retransmissions by kind, worst flows."""
    hs, rx, conns = report.handshakes, report.retransmissions, report.connections
    worst = []
    if len(conns) and "retransmitted_bytes" in conns:
        w = conns.sort_values(["retransmitted_bytes", "stream"], ascending=[False, True]).head(top)
        w = w[pd.to_numeric(w["retransmitted_bytes"]).fillna(0) > 0]
        for r in w.itertuples(index=False):
            worst.append({"stream": int(r.stream), "client": f"{r.client}:{r.client_port}",
                          "server": f"{r.server}:{r.server_port}",
                          "retransmissions": int(r.retransmissions),
                          "retransmitted_bytes": int(r.retransmitted_bytes)})
    # RTT percentiles use clean handshakes only (Karn): with a retried SYN or SYN-ACK the sample
    # includes a retransmission timeout, not just the path.
    est = hs[(hs["outcome"] == "established") & (hs["syn_retries"] == 0) & (hs["synack_retries"] == 0)] \
        if len(hs) else hs
    return {
        "capture": report.capture,
        "frames": int(report.stats.get("frames", 0)),
        "tcp_segments": int(report.stats.get("tcp_segments", 0)),
        "connections": int(len(conns)),
        "handshakes": {str(k): int(v) for k, v in hs["outcome"].value_counts().sort_index().items()}
        if len(hs) else {},
        "handshake_rtt_seconds": _percentiles(est["handshake_rtt"]) if len(est) else {},
        "retransmissions": {str(k): int(v) for k, v in rx["kind"].value_counts().sort_index().items()}
        if len(rx) else {},
        "top_retransmitting_connections": worst,
        "skipped_frames": dict(report.stats.get("skipped", {})),
        "problems": list(report.stats.get("problems", [])),
    }


def summary_json(reports: list[Report]) -> str:
    return json.dumps([summarise(r) for r in reports], indent=2)
