"""Writing and reading report tables: CSV (through Arrow's writer), Parquet, JSON lines.

A run's tables replace the earlier run's in their folder as a whole (``replace_tables``): each is written
under a temporary name beside its final one and renamed when all are complete, so a full disk or an
interrupted run never leaves a half-written table under a table's name, nor a stale table of an earlier
run (another format, a ``packets`` table) beside the new ones. Several captures in Parquet make one
dataset per table, partitioned by capture (``write_partition``: ``out/connections/capture=a.pcap/``),
which pyarrow, Dask or DuckDB read as one table with a ``capture`` column.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Union
from urllib.parse import quote

import numpy as np

from .. import schema
from ..errors import AnalyzerError
from ..table import TEXT, Masked, Table

if TYPE_CHECKING:
    import pandas as pd

    AnyTable = Union[pd.DataFrame, Table]

FORMATS = ("csv", "parquet", "json")
SUFFIXES = {"csv": "csv", "parquet": "parquet", "json": "jsonl"}  # file suffix of each format
TABLE_NAMES = ("connections", "handshakes", "retransmissions", "events", "packets")
PARTITION_KEY = "capture"  # several captures in Parquet: out/<table>/capture=<name>/part-0.parquet
PART_FILE = "part-0.parquet"


class OutputError(AnalyzerError):
    """The tables could not be written (folder not writable, disk full)."""


def table_columns(name: str, merged: bool = False) -> tuple[schema.Column, ...]:
    """The declared columns of a table; ``merged``: with ``schema.CAPTURE_COLUMNS`` after them."""
    columns = {"connections": schema.CONNECTION_COLUMNS, "handshakes": schema.HANDSHAKE_COLUMNS,
               "retransmissions": schema.RETRANSMISSION_COLUMNS, "events": schema.EVENT_COLUMNS,
               "packets": schema.PACKET_TABLE_COLUMNS}[name]
    return schema.with_capture_columns(columns) if merged else columns


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


def _can_fork() -> bool:
    """Whether a forked copy of this process may write tables: fork exists, no other Python thread runs (one
    could hold a lock the copy would wait on forever: an application's, logging's), and this process may
    have children (a daemonic worker may not)."""
    import multiprocessing
    import threading

    return hasattr(os, "fork") and threading.active_count() == 1 and not multiprocessing.current_process().daemon


def _work(table: AnyTable) -> float:
    """A rough cost of writing ``table``: its cells, a text cell as four (the reasons, filters and details)."""
    columns = table.columns
    if not len(columns) or isinstance(columns[0], str):  # a DataFrame
        return float(len(table) * len(columns))
    return float(len(table) * sum(4 if c.dtype in TEXT else 1 for c in columns))


FORK_WORK = 1e6  # tables this heavy (``_work``, ~0.1 s to write) are worth a fork (~7 ms)
TAKE_WAIT_S = 2.0  # how long a writing process waits for the other to hand back the count of calls taken


def _in_two_processes(calls: list[Callable[[], None]], weights: list[float], where: Path) -> None:
    """Run ``calls`` in two processes at once, this one and a forked copy, each taking the next call not
    yet taken, heaviest ``weights`` first (so neither waits on a wrong guess of a table's cost). Building
    a table's text columns holds the GIL, so threads would take their turns; two processes use two cores.
    An error in the copy comes back as one ``OutputError``; on any error the copy is stopped before the
    caller removes the partial files."""
    import multiprocessing

    from .parallel import _Worker  # (here: parallel imports the report, which imports this module)

    order = sorted(range(len(calls)), key=lambda i: -weights[i])
    taken = multiprocessing.get_context("fork").Value("i", 0)  # calls taken so far, by either process

    def take_calls() -> None:
        lock = taken.get_lock()
        while True:
            # (held for two lines; not given back in time: the other process died holding it, which the
            # parent learns from its pipe, or it is alive and takes the rest itself)
            if not lock.acquire(timeout=TAKE_WAIT_S):
                return
            k = taken.value
            taken.value = k + 1
            lock.release()
            if k >= len(order):
                return
            calls[order[k]]()

    def copy(conn) -> None:
        try:
            take_calls()
        except OSError as exc:
            raise _output_error(where, exc) from None
        conn.send(("done",))

    worker = _Worker(f"{where}: table writer", copy)
    try:
        take_calls()
        worker.receive()
    except BaseException:
        worker.stop()
        raise
    worker.stop(done=True)
    worker.process.join()  # (it ends as soon as it said so)


def _output_error(where: Path, exc: OSError) -> OutputError:
    return OutputError(f"{where}: cannot write the tables: {exc.strerror or exc}")


def table_path(out_dir: str | os.PathLike, name: str, format: str) -> Path:
    return Path(out_dir) / f"{name}.{SUFFIXES[format]}"


def prepare_folder(out_dir: str | os.PathLike) -> Path:
    """Make ``out_dir`` if needed and check a file can be created in it (before a long analysis)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OutputError(f"{out}: cannot write tables there: {exc.strerror or exc}") from None
    return out


def remove_tables(out_dir: str | os.PathLike) -> None:
    """Delete the tables an earlier run left in ``out_dir`` (every table name, every format); nothing else."""
    for name in TABLE_NAMES:
        for format in FORMATS:
            path = table_path(out_dir, name, format)
            if path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)


def replace_tables(out_dir: str | os.PathLike, tables: dict[str, AnyTable], format: str) -> list[Path]:
    """Write ``tables`` ({name: table}) into ``out_dir``, replacing the earlier run's tables as a whole.

    On error (disk full, folder gone) the partial files are removed, and so are the earlier tables
    (they are not this run's); the error is raised as one ``OutputError`` line."""
    out = prepare_folder(out_dir)
    return _replace(out, {table_path(out, name, format): t for name, t in tables.items()}, format,
                    lambda: remove_tables(out))


def partition_folder(out_dir: str | os.PathLike, table: str, name: str) -> Path:
    """The folder of partition ``capture=name`` of the dataset of ``table`` (hive style; the name
    URL-quoted as pyarrow's ``segment_encoding="uri"`` reads it back)."""
    return Path(out_dir) / table / f"{PARTITION_KEY}={quote(name, safe='')}"


def write_partition(out_dir: str | os.PathLike, name: str, tables: dict[str, AnyTable]) -> list[Path]:
    """Write ``tables`` as partition ``capture=name`` of one Parquet dataset per table, ``out_dir/<table>/``,
    replacing that partition's earlier files as a whole (as ``replace_tables``)."""
    folders = {t: prepare_folder(partition_folder(out_dir, t, name)) for t in tables}
    return _replace(Path(out_dir), {folders[t] / PART_FILE: table for t, table in tables.items()}, "parquet",
                    lambda: remove_partition(out_dir, name))


def remove_partition(out_dir: str | os.PathLike, name: str) -> None:
    """Delete partition ``capture=name`` of every table's dataset in ``out_dir`` (our part files only)."""
    for table in TABLE_NAMES:
        _remove_part(partition_folder(out_dir, table, name))


def clear_datasets(out_dir: str | os.PathLike) -> None:
    """Delete every partition an earlier run left in the datasets of ``out_dir`` (our part files only);
    ``OutputError`` when they cannot be deleted."""
    try:
        for table in TABLE_NAMES:
            folder = Path(out_dir) / table
            if folder.is_dir() and not folder.is_symlink():
                for part in folder.glob(f"{PARTITION_KEY}=*"):
                    _remove_part(part)
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot remove the earlier tables: {exc.strerror or exc}") from None


def _remove_part(folder: Path) -> None:
    if folder.is_dir() and not folder.is_symlink():
        (folder / PART_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: someone else's files are there too
            folder.rmdir()


def _replace(where: Path, finals: dict[Path, AnyTable], format: str, remove_earlier: Callable[[], None]
             ) -> list[Path]:
    """Write each table to a temporary name beside its final path; when all are written, remove the
    earlier tables and rename them into place. On error, remove the partial and the earlier files."""
    token = os.urandom(4).hex()  # a name nobody can guess and plant first
    parts = {final: final.parent / f".{final.stem}.{token}.part" for final in finals}
    calls = [lambda t=t, p=parts[final]: write_table(t, p, format) for final, t in finals.items()]
    try:
        weights = [_work(t) for t in finals.values()]
        if len(calls) > 1 and sum(weights) >= FORK_WORK and _can_fork():
            _in_two_processes(calls, weights, where)
        elif format == "csv" and len(calls) > 1:
            _in_threads(calls)
        else:
            for call in calls:
                call()
        remove_earlier()
        for final, part in parts.items():
            os.replace(part, final)
    except BaseException as exc:
        for part in parts.values():
            part.unlink(missing_ok=True)
        remove_earlier()
        if isinstance(exc, OSError):
            raise _output_error(where, exc) from None
        raise
    return list(finals)


def write_table(table: AnyTable, path: Path, format: str) -> None:
    """Write one table: a DataFrame, a raw ``Table``, or a ``rows.SpilledTable`` (its rows on disk, written
    a chunk at a time in stream order: only one chunk is in memory)."""
    chunked = hasattr(table, "chunks")
    if format == "csv":
        _write_csv(table, path)
    elif format == "json":
        _write_jsonl(table, path)
    elif chunked or isinstance(table, Table):
        _write_parquet(table, path)
    else:
        table.to_parquet(path, index=False)


def _write_parquet(table, path: Path) -> None:
    """A raw, lazily built or on-disk table as Parquet, through the DataFrame in the declared dtypes (the
    pandas metadata lets ``pandas.read_parquet`` give them back); one row group per chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunks = table.chunks() if hasattr(table, "chunks") else [table]
    writer = None
    try:
        for chunk in chunks:
            arrow = pa.Table.from_pandas(schema.conform(chunk.to_pandas(), table.columns), preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, arrow.schema)
            writer.write_table(arrow)
        if writer is None:
            schema.empty_frame(table.columns).to_parquet(path, index=False)
    finally:
        if writer is not None:
            writer.close()


WRITE_ROWS = 1 << 14  # rows of an in-memory table converted at a time when it is written


def _chunks(table) -> Iterable[Table]:
    """A raw table's rows a part at a time (only one part's Arrow or text copy exists at once), or a spilled
    table's chunks."""
    if hasattr(table, "chunks"):
        return table.chunks()
    if len(table) <= WRITE_ROWS:
        return [table]
    return (table.take(slice(lo, lo + WRITE_ROWS)) for lo in range(0, len(table), WRITE_ROWS))


def _write_csv(table: AnyTable, path: Path) -> None:
    """CSV through Arrow's writer (about ten times faster than ``DataFrame.to_csv``).

    Missing values are empty fields, booleans ``true``/``false``, floats in shortest round-trip form.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if hasattr(table, "arrows"):  # (on disk: as written there)
        arrows, names = table.arrows(), [c.name for c in table.columns]
    elif hasattr(table, "chunks") or isinstance(table, Table):
        arrows, names = (c.to_arrow() for c in _chunks(table)), [c.name for c in table.columns]
    else:
        arrow = pa.Table.from_pandas(table, preserve_index=False)
        arrows = [arrow.cast(pa.schema([pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                                        for f in arrow.schema]))]
        names = list(table.columns)
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    with open(path, "wb") as f:
        f.write((",".join(names) + "\n").encode())
        for arrow in arrows:
            pacsv.write_csv(arrow, f, options)


def _write_jsonl(table: AnyTable, path: Path) -> None:
    """JSON lines, one object per row: floats in shortest round-trip form (``repr``; pandas' ``to_json``
    keeps at most 15 digits, too few for epoch seconds with nanoseconds), missing values as null."""
    if hasattr(table, "chunks") or isinstance(table, Table):
        names, parts = [c.name for c in table.columns], _chunks(table)
    else:
        names, parts = list(table.columns), [table]
    keys = [json.dumps(n) + ":" for n in names]
    with open(path, "w", encoding="utf-8") as f:
        for part in parts:
            columns = [_json_texts(part.data[n] if isinstance(part, Table) else part[n]) for n in names]
            for row in zip(*columns):
                f.write("{" + ",".join(k + v for k, v in zip(keys, row)) + "}\n")


def _json_texts(column) -> list[str]:
    """Each value of a column (a numpy array, a ``Masked`` pair or a pandas Series) as JSON text."""
    values, missing = _values_and_missing(column)
    if values.dtype.kind == "f":
        missing = missing | np.isnan(values)
        texts = list(map(repr, values.tolist()))
    elif values.dtype.kind == "b":
        texts = np.where(values, "true", "false").tolist()
    elif values.dtype.kind in "iu":
        texts = values.astype(str).tolist()
    else:
        texts = [json.dumps(v if isinstance(v, str) else str(v)) for v in values.tolist()]
    for i in np.flatnonzero(missing).tolist():
        texts[i] = "null"
    return texts


def _values_and_missing(column) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing) of a raw column or a pandas Series; text and categories as an object array."""
    if isinstance(column, Masked):
        return np.asarray(column.values), np.asarray(column.missing, dtype=bool)
    if not hasattr(column, "isna"):
        values = np.asarray(column)
        if values.dtype != object:
            return values, np.zeros(len(values), dtype=bool)
        return values, np.fromiter((v is None for v in values.tolist()), dtype=bool, count=len(values))
    missing = column.isna().to_numpy(dtype=bool)
    numeric = column.dtype if isinstance(column.dtype, np.dtype) else getattr(column.dtype, "numpy_dtype", None)
    if numeric is not None and numeric.kind in "biuf":  # numpy, or pandas' nullable Int64 / Float64 / boolean
        return column.to_numpy(dtype=numeric, na_value=numeric.type(0)), missing
    return column.astype(object).to_numpy(), missing


def read_table(path: str | os.PathLike, name: str) -> pd.DataFrame:
    """Read a written table back with its declared dtypes (tests and notebooks use this); a merged trace's
    table has its capture columns."""
    import pandas as pd

    path = Path(path)
    cols = table_columns(name, merged=True)
    if path.suffix == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix == ".jsonl":
        df = pd.read_json(path, orient="records", lines=True, dtype=False, precise_float=True)
    else:
        df = pd.read_csv(path, dtype={c.name: object for c in cols if c.dtype in ("str", "string", "category")},
                         keep_default_na=False, na_values={c.name: [""] for c in cols
                                                          if c.dtype not in ("str", "string", "category")})
    cols = table_columns(name, merged=schema.CAPTURE_COLUMNS[0].name in df.columns)
    return schema.conform(df, cols) if len(df.columns) else schema.empty_frame(cols)
