"""Report tables in their raw form: numpy columns, built by the engine, turned into a DataFrame only when asked;
and the times: ``seconds`` (the one conversion of integer nanoseconds to float seconds) and ``with_times``
(the datetime64 columns the Python API shows beside float seconds).

A ``Table`` maps each declared column (``schema.Column``) to a numpy array, or to a ``Masked`` pair
(values, missing) for the nullable columns (``Int64``, ``Float64``, ``boolean``). ``to_pandas()`` gives the
DataFrame in the declared dtypes; ``to_arrow()`` gives an Arrow table with the same values, which is what
the CSV writer uses. So ``tcp-analyzer analyze`` goes from capture to CSV files without importing pandas
(a quarter of a second of its start-up); pandas is imported the first time a DataFrame is asked for.

    >>> t = Table(HANDSHAKE_COLUMNS, {...})        # doctest: +SKIP
    >>> t.to_pandas()["handshake_rtt"].dtype       # doctest: +SKIP
    Float64Dtype()
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .schema import Column

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

NULLABLE = {"Int64": np.int64, "Float64": np.float64, "boolean": np.bool_}
TEXT = ("str", "string", "category")
NS_PER_S = 1_000_000_000
VELTKAMP = 2.0**27 + 1  # splits a double into two halves of 26 bits whose products are exact (Dekker 1971)


def seconds(ns) -> np.ndarray:
    """Float seconds of integer nanoseconds, each the double nearest to ``ns / 10**9`` (ties never occur).

    ``ns / 1e9`` rounds twice (``ns`` to a double, then the quotient) and misses the nearest double on
    about a quarter of epoch times with nanoseconds, so a join with tshark's ``frame.time_epoch`` fails.
    Here ``ns = s * 10**9 + r`` exactly; ``q = s + r / 1e9`` is within one ulp of the exact value, and
    the exact remainder ``x - q`` (error-free sum and product, Knuth and Dekker) says whether the
    neighbour above or below is nearer. Python's ``int / int`` (correctly rounded) is the oracle in tests.

    >>> seconds(np.array([1_700_000_000_123_456_789]))[0] == 1_700_000_000_123_456_789 / 10**9
    True
    """
    ns = np.asarray(ns, dtype=np.int64)
    s, r = np.divmod(np.abs(ns).view(np.uint64), np.uint64(NS_PER_S))  # abs(INT64_MIN) wraps to 2**63: right
    s, r = s.astype(np.float64), r.astype(np.float64)  # s < 2**35: both exact
    frac = r / NS_PER_S  # correctly rounded: when s == 0 this is the answer
    q = s + frac
    sum_error = (s - (q - (q - s))) + (frac - (q - s))  # TwoSum: s + frac = q + sum_error exactly
    hi, lo = _two_product(frac, float(NS_PER_S))  # frac * 1e9 = hi + lo exactly
    x_minus_q = sum_error + ((r - hi) - lo) / NS_PER_S  # r - hi is exact (Sterbenz); to ~2**-106
    above = np.spacing(q)  # gap to the next double up; the gap down is the same, or half at a power of 2
    down = np.nextafter(q, 0.0)
    q = np.where(x_minus_q > above / 2, q + above, np.where(x_minus_q < (down - q) / 2, down, q))
    return np.copysign(q, ns)


STREAM_FILTER = "tcp.stream eq "  # Wireshark's display filter field for a stream id


def wireshark_filters(stream, frame) -> np.ndarray:
    """Each row's display filter that finds its frame in Wireshark, "tcp.stream eq S && frame.number == F"
    (the ``wireshark_filter`` column of the retransmissions and events tables)."""
    return np.asarray([f"{STREAM_FILTER}{s} && frame.number == {f}"
                       for s, f in zip(np.asarray(stream).tolist(), np.asarray(frame).tolist())], dtype=object)


def nanoseconds(secs) -> np.ndarray:
    """The integer nanoseconds nearest to float seconds (NaN gives INT64_MIN, which is NaT as a datetime64).

    Whole seconds and the fraction are split first (both exact), so the product stays below 2**53."""
    secs = np.asarray(secs, dtype=np.float64)
    missing = np.isnan(secs)
    whole = np.floor(np.where(missing, 0.0, secs))
    ns = whole.astype(np.int64) * NS_PER_S + np.rint((np.where(missing, 0.0, secs) - whole) * NS_PER_S).astype(np.int64)
    return np.where(missing, np.iinfo(np.int64).min, ns)


TIMES = {"ts": "time", "first_ts": "first_time", "last_ts": "last_time", "syn_ts": "syn_time",
         "synack_ts": "synack_time", "ack_ts": "ack_time", "first_syn_ts": "first_syn_time"}
"""Float-seconds columns and the ``datetime64[ns, UTC]`` column the Python API's DataFrames show beside each
(not written to files). From ``ts_ns`` where the table has it (exact); otherwise from the float, to the
nearest nanosecond (within 120 ns of the capture time for epoch times: a double holds about 16 digits)."""


def with_times(df: "pd.DataFrame") -> "pd.DataFrame":
    """``df`` with a UTC datetime column right after each seconds column of ``TIMES`` it has."""
    import pandas as pd

    if not any(name in TIMES and TIMES[name] not in df for name in df.columns):
        return df
    columns = {}
    for name in df.columns:
        columns[name] = df[name]
        if name in TIMES and TIMES[name] not in df:
            ns = (df["ts_ns"].to_numpy(np.int64) if name == "ts" and "ts_ns" in df
                  else nanoseconds(df[name].to_numpy(dtype=np.float64, na_value=np.nan)))
            columns[TIMES[name]] = pd.Series(pd.to_datetime(ns.view("datetime64[ns]"), utc=True), index=df.index)
    out = pd.DataFrame(columns)
    out.attrs = df.attrs
    return out


def _two_product(a: np.ndarray, b: float) -> tuple[np.ndarray, np.ndarray]:
    """``a * b`` as ``hi + lo`` exactly (Dekker's product, without a fused multiply-add)."""
    hi = a * b
    a_hi = a * VELTKAMP - (a * VELTKAMP - a)
    a_lo = a - a_hi
    b_hi = b * VELTKAMP - (b * VELTKAMP - b)
    b_lo = b - b_hi
    lo = ((a_hi * b_hi - hi) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return hi, lo


class Masked(NamedTuple):
    """A nullable column: ``values`` where ``missing`` is False; what ``values`` holds elsewhere is unused."""

    values: np.ndarray
    missing: np.ndarray


class Table:
    """A report table: ``data[name]`` for every column of ``columns``, all of the same length."""

    def __init__(self, columns: tuple[Column, ...], data: dict):
        self.columns = columns
        self.data = data
        first = data[columns[0].name] if columns else None
        self._n = 0 if first is None else len(first.values if isinstance(first, Masked) else first)

    @classmethod
    def empty(cls, columns: tuple[Column, ...]) -> "Table":
        data = {}
        for c in columns:
            if c.dtype in TEXT:
                data[c.name] = np.empty(0, dtype=object)
            elif c.dtype in NULLABLE:
                data[c.name] = Masked(np.empty(0, dtype=NULLABLE[c.dtype]), np.empty(0, dtype=bool))
            else:
                data[c.name] = np.empty(0, dtype=c.dtype)
        return cls(columns, data)

    def __len__(self) -> int:
        return self._n

    def take(self, rows) -> "Table":
        """The rows ``rows`` (indices or a slice), in that order."""
        return Table(self.columns, {name: Masked(v.values[rows], v.missing[rows]) if isinstance(v, Masked) else v[rows]
                                    for name, v in self.data.items()})

    def values(self, name: str) -> np.ndarray:
        """A column as one numpy array: missing numbers become NaN (as float), missing text None."""
        v = self.data[name]
        if isinstance(v, Masked):
            if not v.missing.any():
                return np.asarray(v.values)
            out = np.asarray(v.values, dtype=float if v.values.dtype != object else object).copy()
            out[v.missing] = np.nan if out.dtype == float else None
            return out
        return np.asarray(v)

    def to_pandas(self) -> "pd.DataFrame":
        """The DataFrame, columns in the declared order and dtypes (text as object columns)."""
        import pandas as pd

        from .schema import conform

        data = {}
        for c in self.columns:
            v = self.data[c.name]
            if isinstance(v, Masked):
                values = np.asarray(v.values, dtype=NULLABLE[c.dtype])
                if c.dtype == "Float64":
                    values = np.where(v.missing, 0.0, values)
                array = {"Int64": pd.arrays.IntegerArray, "Float64": pd.arrays.FloatingArray,
                         "boolean": pd.arrays.BooleanArray}[c.dtype]
                data[c.name] = array(values, np.asarray(v.missing, dtype=bool))
            elif getattr(v, "dtype", None) == object:
                data[c.name] = pd.Series(v, dtype=object)  # not pandas' inferred string dtype
            else:
                data[c.name] = v
        df = pd.DataFrame(data)
        if any(str(t) != ("object" if c.dtype in ("str", "string") else c.dtype)
               for c, t in zip(self.columns, df.dtypes)):
            df = conform(df, self.columns)
        return df

    def to_arrow(self) -> "pa.Table":
        """An Arrow table with the same values (missing values and NaN as nulls, text as UTF-8 strings).

        Built from the columns' buffers (``pa.Array.from_buffers``): ``pa.array`` would import pandas, which
        is what this form is meant to spare the analyze command."""
        import pyarrow as pa

        return pa.Table.from_arrays([_arrow_array(self.data[c.name], c.dtype) for c in self.columns],
                                    names=[c.name for c in self.columns])


def concat_tables(columns: tuple[Column, ...], parts: list[Table]) -> Table:
    """The rows of ``parts`` one after the other, as one table."""
    if not parts:
        return Table.empty(columns)
    if len(parts) == 1:
        return parts[0]

    def joined(chunks: list):
        if isinstance(chunks[0], Masked):
            return Masked(np.concatenate([c.values for c in chunks]), np.concatenate([c.missing for c in chunks]))
        return np.concatenate(chunks)

    return Table(columns, {c.name: joined([t.data[c.name] for t in parts]) for c in columns})


class LazyRows:
    """A report table built a part at a time (``build(lo, hi)``: a ``Table`` of rows lo..hi) from records
    kept anyway: its text columns (a reason, a filter per row) for all rows at once would take more memory
    than the records. The ``Table`` interface (``columns``, ``len``, ``values``, ``to_pandas``,
    ``to_arrow``) plus ``chunks`` (what the writers use) and ``with_columns``. ``fast``: columns that have a
    cheaper way than building the rows (``{name: function giving the whole column}``)."""

    ROWS = 1 << 14

    def __init__(self, columns: tuple[Column, ...], rows: int, build, fast: dict | None = None):
        self.columns = columns
        self._n = rows
        self._build = build
        self._fast = fast or {}

    def __len__(self) -> int:
        return self._n

    def chunks(self):
        for lo in range(0, self._n, self.ROWS):
            yield self._build(lo, min(self._n, lo + self.ROWS))

    def with_columns(self, columns: tuple[Column, ...], add) -> "LazyRows":
        """The same rows, each part passed through ``add`` (which gives ``columns``)."""
        build = self._build
        return LazyRows(columns, self._n, lambda lo, hi: add(build(lo, hi)), self._fast)

    def values(self, name: str) -> np.ndarray:
        if name in self._fast:
            return self._fast[name]()
        if not self._n:
            return Table.empty(self.columns).values(name)
        return np.concatenate([part.values(name) for part in self.chunks()])

    def to_table(self) -> Table:
        return concat_tables(self.columns, list(self.chunks()))

    def __reduce__(self):  # sent to another process (--jobs, a cluster): as the table it stands for
        table = self.to_table()
        return Table, (table.columns, table.data)

    def to_pandas(self) -> "pd.DataFrame":
        return self.to_table().to_pandas()

    def to_arrow(self) -> "pa.Table":
        return self.to_table().to_arrow()


def _arrow_array(v, dtype: str):
    import pyarrow as pa

    if dtype in TEXT:
        return _arrow_strings(np.asarray(v, dtype=object))
    if isinstance(v, Masked):
        values, valid = np.asarray(v.values, dtype=NULLABLE[dtype]), ~np.asarray(v.missing, dtype=bool)
    else:
        values, valid = np.asarray(v, dtype=NULLABLE.get(dtype, dtype)), None
    if values.dtype.kind == "f":
        valid = ~np.isnan(values) if valid is None else valid & ~np.isnan(values)
    n = len(values)
    if values.dtype == np.bool_:
        kind, data = pa.bool_(), np.packbits(values, bitorder="little")
    else:
        kind, data = pa.from_numpy_dtype(values.dtype), np.ascontiguousarray(values)
    nulls = 0 if valid is None else n - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(kind, n, [bitmap, pa.py_buffer(data)], null_count=nulls)


def _arrow_strings(values: np.ndarray):
    """A UTF-8 string array from an object array of ``str`` (anything else is a null)."""
    import pyarrow as pa

    items = values.tolist()
    n = len(items)
    try:
        text = "".join(items)  # TypeError when a value is missing (None or NaN)
        lengths = np.fromiter(map(len, items), dtype=np.int64, count=n)
        data = text.encode()
        if len(data) != len(text):  # not all ASCII: the length in bytes of the strings that are not
            wide = np.flatnonzero(~np.fromiter(map(str.isascii, items), dtype=bool, count=n))
            lengths[wide] = [len(items[i].encode()) for i in wide.tolist()]
        valid = None
    except TypeError:
        valid = np.fromiter((isinstance(x, str) for x in items), dtype=bool, count=n)
        encoded = [x.encode() if isinstance(x, str) else b"" for x in items]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=n)
        data = b"".join(encoded)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    large = offsets[-1] >= 2**31 - 1
    nulls = 0 if valid is None else n - int(np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), n,
                                 [bitmap, pa.py_buffer(offsets if large else offsets.astype(np.int32)),
                                  pa.py_buffer(data)], null_count=nulls)
