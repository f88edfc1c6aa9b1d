"""Rows of ended connections kept on disk, so that memory follows the connections open at once, not every
connection ever seen (Zeek's conn.log writes a row when its connection ends and forgets it).

``DiskSink`` is the engine's row sink (``tcp.engine.RowSink``) used by ``analyze``: each group of rows
it gets is cut by stream range (``BUCKET`` streams a bucket) and appended to an unnamed temporary file
(``tempfile.TemporaryFile``: no path another user could plant or redirect, gone when closed or when the
process dies), each column an Arrow IPC record batch of its own. ``tables()`` gives ``SpilledTable``s: a bucket's pieces are
read together and sorted by stream, so the rows come in the same order as a whole-memory run's, one
bucket at a time (``chunks``) for the writers, one column at a time (``values``) for the summary and
stats, or whole (``to_pandas``) when the API asks for a DataFrame.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..errors import AnalyzerError
from ..table import NULLABLE, TEXT, Masked, Table, concat_tables
from ..tcp.engine import RowSink

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

BUCKET = 1 << 13  # streams per bucket: a bucket's rows are what a writer holds at once (~6 MB of connections)
FLUSH_ROWS = 1 << 12  # a bucket's rows are written once it has this many waiting
HELD_ROWS = 1 << 14  # ... and all buckets' when they have this many together
SPILL_CODEC = "lz4"  # rows are written compressed: a third of the bytes for the disk and page cache to take


class _Spill:
    """One unnamed temporary file of serialized single-column record batches: ``add`` appends one, ``read``
    reads one back."""

    def __init__(self) -> None:
        try:
            self._file = tempfile.TemporaryFile(prefix="tcp-analyzer-rows-")
        except OSError as exc:
            raise _failed(exc) from None
        self._end = 0
        self._dirty = False  # written since the last flush

    def add(self, column: pa.Array, name: str) -> tuple[int, int, int]:
        """Append ``column``; returns where it is: (offset, size in the file, size serialized)."""
        import pyarrow as pa

        data = pa.RecordBatch.from_arrays([column], names=[name]).serialize()
        packed = pa.compress(data, codec=SPILL_CODEC, asbytes=False)
        try:
            self._file.write(packed)
        except OSError as exc:  # a full disk
            raise _failed(exc) from None
        self._dirty = True
        at, self._end = self._end, self._end + packed.size
        return at, packed.size, data.size

    def flush(self) -> None:
        """Hand what is buffered to the file (before a read; before a fork, so that only one process does)."""
        if self._dirty:
            self._file.flush()
            self._dirty = False

    def read(self, fields: list[pa.Field], places: list[tuple[int, int, int]]) -> list[pa.Array]:
        """The columns at ``places`` (as ``add`` gave them, ``fields`` their types): one read of the span they
        cover (a piece's columns lie side by side)."""
        import pyarrow as pa

        self.flush()
        lo = min(at for at, _, _ in places)
        hi = max(at + size for at, size, _ in places)
        data = pa.py_buffer(os.pread(self._file.fileno(), hi - lo, lo))
        return [pa.ipc.read_record_batch(pa.decompress(data.slice(at - lo, size), raw, codec=SPILL_CODEC,
                                                       asbytes=False), _single(field)).column(0)
                for field, (at, size, raw) in zip(fields, places)]


def _failed(exc: OSError) -> AnalyzerError:
    return AnalyzerError(f"cannot keep the rows of ended connections in a temporary file in "
                         f"{tempfile.gettempdir()} (TMPDIR): {exc.strerror or exc}")


class _Piece(NamedTuple):
    bucket: int
    rows: int
    where: dict  # column name -> where ``_Spill.add`` put it


class SpilledTable:
    """A report table whose rows are on disk, in stream order when read: the ``table.Table`` interface
    (``columns``, ``len``, ``values``, ``to_pandas``, ``to_arrow``) plus ``chunks``, one bucket at a time.
    ``extra``: a function adding columns to each chunk (the capture columns of a merged trace), with the
    columns it gives."""

    def __init__(self, columns: tuple, spill: _Spill, pieces: list[_Piece], rows: int,
                 extra: tuple[tuple, Callable[[Table], Table]] | None = None):
        self.columns = columns if extra is None else extra[0]
        self._base = columns
        self._spill = spill
        self._pieces = pieces  # in the order written
        self._n = rows
        self._extra = extra

    def __len__(self) -> int:
        return self._n

    def with_columns(self, columns: tuple, add: Callable[[Table], Table]) -> SpilledTable:
        """The same rows, each chunk passed through ``add`` (which gives ``columns``)."""
        return SpilledTable(self._base, self._spill, self._pieces, self._n, (columns, add))

    def _buckets(self) -> Iterator[list[_Piece]]:
        """Each bucket's pieces, buckets in stream order."""
        by: dict[int, list[_Piece]] = {}
        for piece in self._pieces:
            by.setdefault(piece.bucket, []).append(piece)
        for bucket in sorted(by):
            yield by[bucket]

    def _column(self, pieces: list[_Piece], name: str):
        """Column ``name`` of ``pieces`` as one Arrow (chunked) array, in the order written."""
        import pyarrow as pa

        field = _schema(self._base).field(name)
        return pa.chunked_array([self._spill.read([field], [p.where[name]])[0] for p in pieces], field.type)

    def _sorted_arrows(self) -> Iterator[pa.Table]:
        """The rows as Arrow tables in stream order, one bucket at a time (before ``extra``)."""
        import pyarrow as pa

        schema = _schema(self._base)
        fields = list(schema)
        for pieces in self._buckets():
            parts = [self._spill.read(fields, [p.where[f.name] for f in fields]) for p in pieces]
            table = pa.Table.from_arrays([pa.chunked_array([part[k] for part in parts], f.type)
                                          for k, f in enumerate(fields)], schema=schema)
            streams = _numpy(_one(table.column("stream")), np.int64)[0]
            if np.any(streams[1:] < streams[:-1]):
                order = np.argsort(streams, kind="stable").astype(np.int64)
                table = table.take(pa.Array.from_buffers(pa.int64(), len(order), [None, pa.py_buffer(order)]))
            yield table

    def arrows(self) -> Iterator[pa.Table]:
        """The rows as Arrow tables in stream order, one bucket at a time: what was written, sorted, without a
        round trip through Python objects (the CSV writer's input); with ``extra``, through ``chunks``."""
        if self._extra is not None:
            yield from (chunk.to_arrow() for chunk in self.chunks())
            return
        yield from self._sorted_arrows()

    def chunks(self) -> Iterator[Table]:
        """The rows as ``Table``s in stream order, one bucket at a time (with ``extra``'s columns)."""
        for arrow in self._sorted_arrows():
            chunk = from_arrow(self._base, arrow)
            yield chunk if self._extra is None else self._extra[1](chunk)

    def values(self, name: str) -> np.ndarray:
        """One column in stream order, as ``Table.values`` gives it; only that column is read."""
        import pyarrow as pa

        if name not in {c.name for c in self._base}:  # a column ``extra`` adds
            return np.concatenate([c.values(name) for c in self.chunks()]) if self._n else \
                Table.empty(self.columns).values(name)
        column = next(c for c in self._base if c.name == name)
        out, at = None, 0  # (filled bucket by bucket: no list of parts beside the whole)
        for pieces in self._buckets():
            arrow = _one(self._column(pieces, name))
            if column.dtype in TEXT:  # each distinct text one object (millions of equal labels: one each)
                codes = arrow.dictionary_encode()
                labels = np.array(codes.dictionary.to_pylist() + [None], dtype=object)
                index, missing = _numpy(codes.indices, np.int32)
                part = labels[np.where(missing, -1, index)]
            else:
                part = from_arrow((column,), pa.Table.from_arrays([arrow], names=[name])).values(name)
            streams = _numpy(_one(self._column(pieces, "stream")), np.int64)[0]
            if np.any(streams[1:] < streams[:-1]):
                part = part[np.argsort(streams, kind="stable")]
            dtype = part.dtype if out is None else np.result_type(out, part)  # (ints, then a NaN: floats)
            if out is None:
                out = np.empty(self._n, dtype=dtype)
            elif out.dtype != dtype:
                out = out.astype(dtype)
            out[at:at + len(part)] = part
            at += len(part)
        return out if out is not None else Table.empty(self._base).values(name)

    def to_table(self) -> Table:
        """All rows as one in-memory ``Table``."""
        return concat_tables(self.columns, list(self.chunks()))

    def __reduce__(self):  # sent to another process (--jobs, a cluster): as the table it stands for
        table = self.to_table()
        return Table, (table.columns, table.data)

    def to_pandas(self) -> pd.DataFrame:
        return self.to_table().to_pandas()

    def to_arrow(self) -> pa.Table:
        return self.to_table().to_arrow()


class DiskSink(RowSink):
    """The engine's row sink on disk (see the module's doc): rows wait in memory by bucket until a bucket
    has ``FLUSH_ROWS`` of them, or all buckets together ``HELD_ROWS``, then each column of them is written
    as one record batch. ``tables()`` may be called once."""

    def __init__(self, columns: tuple[tuple, tuple]) -> None:
        self._columns = columns  # (connections columns, handshakes columns)
        self._spill = _Spill()
        self._pieces: tuple[list, list] = ([], [])
        self._rows = [0, 0]
        self._held: tuple[dict, dict] = ({}, {})  # bucket -> [Table] not written yet
        self._held_rows = [0, 0]

    def add(self, connections: Table, handshakes: Table) -> None:
        for k, table in enumerate((connections, handshakes)):
            if not len(table):
                continue
            streams = table.values("stream")
            if np.any(streams[1:] < streams[:-1]):  # (the engine gives them in stream order)
                order = np.argsort(streams, kind="stable")
                table = table.take(order)
                streams = streams[order]
            buckets = streams // BUCKET
            cuts = np.flatnonzero(np.diff(buckets)) + 1
            for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, len(streams)].tolist()):
                bucket = int(buckets[lo])
                part = table if hi - lo == len(table) else table.take(slice(lo, hi))
                self._held[k].setdefault(bucket, []).append(part)
                self._held_rows[k] += hi - lo
                if sum(map(len, self._held[k][bucket])) >= FLUSH_ROWS:
                    self._flush(k, bucket)
            self._rows[k] += len(table)
            if self._held_rows[k] >= HELD_ROWS:
                for bucket in list(self._held[k]):
                    self._flush(k, bucket)

    def _flush(self, k: int, bucket: int) -> None:
        parts = self._held[k].pop(bucket)
        table = concat_tables(parts[0].columns, parts)
        self._held_rows[k] -= len(table)
        arrow = table.to_arrow()
        where = {name: self._spill.add(arrow.column(name).combine_chunks(), name) for name in arrow.column_names}
        self._pieces[k].append(_Piece(bucket, len(table), where))

    def tables(self) -> tuple[SpilledTable, SpilledTable]:
        for k in (0, 1):
            for bucket in list(self._held[k]):
                self._flush(k, bucket)
        self._spill.flush()
        return tuple(SpilledTable(self._columns[k], self._spill, self._pieces[k], self._rows[k]) for k in (0, 1))


def from_arrow(columns: tuple, arrow: pa.Table) -> Table:
    """The ``Table`` of an Arrow table written by ``Table.to_arrow`` (the same values back: missing numbers of
    nullable columns as ``Masked``, of float columns as NaN; text as object arrays with None). Read from
    the buffers: pyarrow's ``to_numpy`` would import pandas, which the analyze command does without."""
    if not arrow.num_rows:
        return Table.empty(columns)
    data = {}
    for c in columns:
        col = _one(arrow.column(c.name))
        if c.dtype in TEXT:
            data[c.name] = np.array(col.to_pylist(), dtype=object)
            continue
        values, missing = _numpy(col, NULLABLE.get(c.dtype, c.dtype))
        if c.dtype in NULLABLE:
            data[c.name] = Masked(values, missing)
        elif missing.any():  # (float columns: NaN was written as a null)
            data[c.name] = np.where(missing, np.nan, values)
        else:
            data[c.name] = values
    return Table(columns, data)


def _one(column) -> pa.Array:
    """A chunked column as one array."""
    import pyarrow as pa

    return column.chunk(0) if column.num_chunks == 1 else pa.concat_arrays(column.chunks)


def _numpy(array: pa.Array, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing) of a fixed-width or boolean Arrow array, from its buffers (a copy)."""
    dtype = np.dtype(dtype)
    n, at = len(array), array.offset
    validity, data = array.buffers()[:2]
    if dtype == np.bool_:
        values = np.unpackbits(np.frombuffer(data, np.uint8), count=at + n, bitorder="little")[at:].astype(bool)
    else:
        values = np.frombuffer(data, dtype=dtype, count=at + n)[at:].copy()
    if validity is None or array.null_count == 0:
        return values, np.zeros(n, dtype=bool)
    valid = np.unpackbits(np.frombuffer(validity, np.uint8), count=at + n, bitorder="little")[at:].astype(bool)
    return values, ~valid


_SCHEMAS: dict = {}
_SINGLE: dict = {}


def _single(field: pa.Field) -> pa.Schema:
    """The schema of a one-column record batch of ``field`` (made once)."""
    if field not in _SINGLE:
        import pyarrow as pa

        _SINGLE[field] = pa.schema([field])
    return _SINGLE[field]


def _schema(columns: tuple) -> pa.Schema:
    """The Arrow schema ``Table.to_arrow`` gives for ``columns`` (of an empty table)."""
    key = tuple((c.name, c.dtype) for c in columns)
    if key not in _SCHEMAS:
        _SCHEMAS[key] = Table.empty(columns).to_arrow().schema
    return _SCHEMAS[key]
