"""The ``Report`` of one capture: its tables (DataFrames or raw numpy tables), stats, writing and summary.

>>> import analyzer
>>> report = analyzer.analyze("captures/demo.pcap")                  # doctest: +SKIP
>>> report.handshakes[["stream", "outcome", "handshake_rtt"]]         # doctest: +SKIP
>>> report.write("out", format="parquet")                             # doctest: +SKIP
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from .. import schema
from ..table import Table, with_times
from .writers import FORMATS, replace_tables, table_columns, write_partition

if TYPE_CHECKING:
    import pandas as pd

    AnyTable = Union[pd.DataFrame, Table]

TABLES = ("connections", "handshakes", "retransmissions", "events")


class Report:
    """The analysis of one capture: three tables (four with ``packets``) and the reading stats.

    Tables may be given as DataFrames or as the engine's raw ``table.Table``; the attributes
    ``connections``, ``handshakes``, ``retransmissions`` and ``packets`` are always DataFrames (made on
    first access). The three report tables show a UTC datetime column beside each float-seconds one
    (``time`` beside ``ts``, ``syn_time`` beside ``syn_ts``...: ``table.with_times``); the files do not
    have them. ``write(format="csv")`` and ``summary()`` work on the raw form, without pandas.

    A merged trace's report has ``captures`` (the files, in the order given) and every table the capture
    columns (``schema.CAPTURE_COLUMNS``); ``captures`` is None otherwise."""

    def __init__(self, capture: str, connections: AnyTable, handshakes: AnyTable, retransmissions: AnyTable,
                 stats: dict | None = None, packets: AnyTable | None = None, events: AnyTable | None = None,
                 captures: list[str] | None = None):
        self.capture = capture
        self.captures = captures
        self.stats = {} if stats is None else stats
        self._tables: dict = {"connections": connections, "handshakes": handshakes,
                              "retransmissions": retransmissions,
                              "events": events if events is not None else Table.empty(
                                  schema.EVENT_COLUMNS if captures is None else
                                  schema.with_capture_columns(schema.EVENT_COLUMNS))}
        if packets is not None:
            self._tables["packets"] = packets

    def _frame(self, name: str) -> pd.DataFrame:
        t = self._tables[name]
        if isinstance(t, Table) or hasattr(t, "chunks"):  # raw, or on disk (``rows.SpilledTable``)
            t = t.to_pandas()
        if name in TABLES:
            t = with_times(t)
        self._tables[name] = t
        return t

    connections = property(lambda self: self._frame("connections"),
                           lambda self, df: self._tables.__setitem__("connections", df))
    handshakes = property(lambda self: self._frame("handshakes"),
                          lambda self, df: self._tables.__setitem__("handshakes", df))
    retransmissions = property(lambda self: self._frame("retransmissions"),
                               lambda self, df: self._tables.__setitem__("retransmissions", df))
    events = property(lambda self: self._frame("events"), lambda self, df: self._tables.__setitem__("events", df))

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
        if isinstance(t, Table) or hasattr(t, "chunks"):
            return t.values(name)
        s = t[name]
        if s.dtype == object or str(s.dtype) in ("category", "str", "string"):
            return s.to_numpy(dtype=object)
        return s.to_numpy(dtype=float, na_value=np.nan) if s.hasnans else s.to_numpy()

    def write(self, out_dir: str | os.PathLike, format: str = "csv", partition: str | None = None) -> list[Path]:
        """Write each table as ``<table>.csv`` / ``.parquet`` / ``.jsonl`` into ``out_dir``, replacing the
        tables of an earlier run there as a whole (``writers.replace_tables``); ``OutputError`` when they
        cannot be written. With ``partition`` (Parquet only), each table goes to partition
        ``capture=<partition>`` of its dataset instead, ``out_dir/<table>/capture=<partition>/``."""
        if format not in FORMATS:
            raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        tables = {name: self._written(name, format) for name in self._tables}
        if partition is None:
            return replace_tables(out_dir, tables, format)
        if format != "parquet":
            raise ValueError("partitions are written in Parquet only")
        return write_partition(out_dir, partition, tables)

    def raw_tables(self) -> dict[str, AnyTable]:
        """Every table in the form it is held (the engine's ``Table``, or a DataFrame), without conversion."""
        return dict(self._tables)

    def _written(self, name: str, format: str) -> AnyTable:
        """A table as written: the raw form where there is one (CSV, JSON), else its declared columns."""
        t = self._tables[name]
        if isinstance(t, Table) or hasattr(t, "chunks"):  # raw, or on disk (``rows.SpilledTable``)
            return t
        return schema.conform(self._frame(name), table_columns(name, merged=self.captures is not None))

    def summary(self) -> dict:
        """A machine-readable summary (what ``analyze --json`` prints)."""
        return summarise(self)


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
    counted = Counter(np.asarray(labels, dtype=object).tolist())
    return dict(sorted((str(k), int(n)) for k, n in counted.items()))


def path_rtt(outcome, retries: Iterable) -> np.ndarray:
    """Which handshakes' RTT measures the path (Karn): established, with neither the SYN nor the SYN-ACK
    retried; a retried one's sample includes a retransmission timeout (a 1 s SYN-ACK retry is not 1 s of path).
    ``retries``: the syn_retries and synack_retries columns, taken one at a time (a generator may read each
    when it is needed: a table may have millions of rows)."""
    clean = np.asarray(outcome, dtype=object) == "established"
    for column in retries:
        clean &= np.asarray(column, dtype=float) == 0
    return clean


def summarise(report: Report, top: int = 5) -> dict:
    """Counts a person wants first: outcomes, RTT percentiles, retransmissions by kind, worst flows."""
    col = report.column
    # (a table may have millions of rows: a column is read whole, and let go before the next one)
    worst = []
    rbytes = np.nan_to_num(col("connections", "retransmitted_bytes").astype(float))
    connections = len(rbytes)
    hit = np.flatnonzero(rbytes > 0)
    hit_bytes = rbytes[hit]
    del rbytes
    if len(hit):
        order = hit[np.lexsort((col("connections", "stream")[hit], -hit_bytes))][:top]
        c = {name: col("connections", name)[order].tolist() for name in
             ("stream", "client", "client_port", "server", "server_port", "retransmissions", "retransmitted_bytes")}
        for i in range(len(order)):
            worst.append({"stream": int(c["stream"][i]), "client": f"{c['client'][i]}:{c['client_port'][i]}",
                          "server": f"{c['server'][i]}:{c['server_port'][i]}",
                          "retransmissions": int(c["retransmissions"][i]),
                          "retransmitted_bytes": int(c["retransmitted_bytes"][i])})
    outcome = col("handshakes", "outcome")
    outcomes = _label_counts(outcome)
    clean = path_rtt(outcome, (col("handshakes", name) for name in ("syn_retries", "synack_retries")))
    del outcome
    return {
        "capture": report.capture,
        **({"captures": list(report.captures)} if report.captures is not None else {}),
        "frames": int(report.stats.get("frames", 0)),
        "filtered_out_frames": int(report.stats.get("filtered_out", 0)),
        "tcp_segments": int(report.stats.get("tcp_segments", 0)),
        "connections": int(connections),
        "handshakes": outcomes,
        "handshake_rtt_seconds": _percentiles(col("handshakes", "handshake_rtt")[clean]) if clean.any() else {},
        "retransmissions": _label_counts(col("retransmissions", "kind")),
        "events": _label_counts(col("events", "event")),
        "capture_loss": dict(report.stats.get("capture_loss", {})),
        "top_retransmitting_connections": worst,
        "skipped_frames": dict(report.stats.get("skipped", {})),
        "problems": list(report.stats.get("problems", [])),
    }
