"""The tables of a capture whose connections were analyzed in groups, merged into the single run's tables.

``analyze --jobs N`` and ``--scheduler`` split a capture's connections into groups
(``decode.ConnectionGroup``: a hash of the 4-tuple, so both directions of a connection and every reuse
of its ports fall in one group). Each group's engine numbers its own streams 0, 1, ... in order of first
frame. The merge gives the tables one process gives, byte for byte, for every table the engine makes:

- ``stream`` (Wireshark's tcp.stream) is the rank of the connection's first frame among the first frames
  of all groups' connections (``stream_maps``, from the table that has ``first_frame``). ``renumber``
  maps each group's ``stream`` columns and the "tcp.stream eq N" its text columns hold (Wireshark
  filters: the ``wireshark_filter`` column is made again from the new ids, as the engine makes it, which
  takes a third of the time of rewriting each text); on a Dask cluster it runs where the group's tables
  are, in parallel; with ``--jobs``, in the process that merges, each worker's tables as they come (no
  round trip: measured no slower).
- Row order (``order_column``): a table with a ``frame`` column is in frame order, any other with a
  ``stream`` column in stream order. A frame or a stream belongs to one group, so ``merge`` is a stable
  sort of all groups' rows on that column, each group's rows being in that order already (checked).
- The engine's counts (``merge_counts``) are summed; the label counts are put in the engine's order
  again and the capture loss percentage is computed from the summed bytes.
- The packet table (``packet_streams``): each group sends its rows' stream ids and sides
  (``GroupSides``), this process knows where its rows are in the table; ids are mapped as above and
  directions named as the engine names them.

    >>> firsts = [first_frames(t) for t in group_tables]       # doctest: +SKIP
    >>> parts = [renumber(t, m) for t, m in zip(group_tables, stream_maps(firsts))]  # doctest: +SKIP
    >>> tables = merge(parts)                                   # doctest: +SKIP
"""
from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

from ..errors import AnalyzerError
from ..table import STREAM_FILTER, TEXT, Masked, Table, wireshark_filters

STREAM = "stream"
FRAME = "frame"
FIRST_FRAME = "first_frame"
FILTER = "wireshark_filter"  # "tcp.stream eq S && frame.number == F" (table.wireshark_filters) in each row
_STREAM_FILTER = re.compile(r"(tcp\.stream eq )(\d+)")


class MergeError(AnalyzerError):
    """The groups' tables cannot be merged into the single run's (not in the order the merge relies on)."""


def order_column(table: Table) -> str | None:
    """The column a table's rows are in order of: ``frame``, else ``stream``; None when it has neither."""
    names = {c.name for c in table.columns}
    return FRAME if FRAME in names else STREAM if STREAM in names else None


def first_frames(tables: dict[str, Table]) -> np.ndarray:
    """The first frame of each of a group's streams (index: the group's stream id)."""
    for table in tables.values():
        names = {c.name for c in table.columns}
        if STREAM in names and FIRST_FRAME in names:
            streams = np.asarray(table.values(STREAM))
            if not np.array_equal(streams, np.arange(len(streams))):
                raise MergeError("a group's connections are not its streams 0, 1, ... in order")
            return np.asarray(table.values(FIRST_FRAME), dtype=np.int64)
    raise MergeError(f"no table has both {STREAM!r} and {FIRST_FRAME!r}: streams cannot be renumbered")


def stream_maps(firsts: list[np.ndarray]) -> list[np.ndarray]:
    """For each group, the stream id of each of its streams in the whole capture: the rank of its first
    frame among all groups' first frames (a frame belongs to one connection, so there are no ties)."""
    every = np.concatenate(firsts) if firsts else np.empty(0, dtype=np.int64)
    rank = np.empty(len(every), dtype=np.int64)
    rank[np.argsort(every, kind="stable")] = np.arange(len(every))
    bounds = np.cumsum([0, *map(len, firsts)])
    return [rank[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def renumber(tables: dict[str, Table], mapping: np.ndarray) -> dict[str, Table]:
    """A group's tables with its stream ids replaced by ``mapping[id]``, in ``stream`` columns and in the
    "tcp.stream eq N" of text columns."""
    if np.array_equal(mapping, np.arange(len(mapping))):
        return tables
    out = {}
    for name, table in tables.items():
        data = dict(table.data)
        if STREAM in data:
            data[STREAM] = mapping[np.asarray(data[STREAM])]
        for c in table.columns:
            if c.name == FILTER and STREAM in data and FRAME in data:
                data[c.name] = wireshark_filters(data[STREAM], data[FRAME])
            elif c.dtype in TEXT and not isinstance(data[c.name], Masked):
                data[c.name] = _renumber_text(data[c.name], table.data.get(STREAM), mapping)
        out[name] = Table(table.columns, data)
    return out


def _renumber_text(values: np.ndarray, streams: np.ndarray | None, mapping: np.ndarray) -> np.ndarray:
    """``values`` with each "tcp.stream eq N" made "tcp.stream eq mapping[N]". The usual text, one filter
    naming the row's own stream, is done by a prefix swap; any other by a regular expression."""
    texts = values.tolist()
    try:
        mentioned = STREAM_FILTER in "\n".join(texts)  # one C-level pass; TypeError when a value is missing
    except TypeError:
        mentioned = STREAM_FILTER in "\n".join(v for v in texts if isinstance(v, str))
    if not mentioned:
        return values
    own = [-1] * len(texts) if streams is None else np.asarray(streams).tolist()
    new = mapping[np.asarray(own)].tolist() if streams is not None else own
    out = []
    for v, old, now in zip(texts, own, new):
        if not isinstance(v, str) or STREAM_FILTER not in v:
            out.append(v)
            continue
        head = f"{STREAM_FILTER}{old} "
        if v.startswith(head) and v.count(STREAM_FILTER) == 1:
            out.append(f"{STREAM_FILTER}{now} {v[len(head):]}")
        else:
            out.append(_STREAM_FILTER.sub(lambda m: m.group(1) + str(mapping[int(m.group(2))]), v))
    return np.asarray(out, dtype=object)


def merge(parts: list[dict[str, Table]]) -> dict[str, Table]:
    """The groups' (renumbered) tables as one set: each table's rows of every group, in the table's
    order (``order_column``)."""
    if not parts:
        raise MergeError("no groups to merge")
    return {name: _merge_table(name, [p[name] for p in parts]) for name in parts[0]}


def _merge_table(name: str, tables: list[Table]) -> Table:
    columns = tables[0].columns
    if any(t.columns != columns for t in tables):
        raise MergeError(f"the groups' {name} tables have different columns")
    data = {c.name: _concat([t.data[c.name] for t in tables]) for c in columns}
    key = order_column(tables[0])
    if key is None or len(tables) == 1:
        return Table(columns, data)
    for t in tables:
        k = np.asarray(t.values(key))
        if len(k) > 1 and np.any(k[1:] < k[:-1]):
            raise MergeError(f"a group's {name} table is not in {key} order: its rows cannot be merged")
    order = np.argsort(np.asarray(data[key]), kind="stable")
    return Table(columns, {n: _take(v, order) for n, v in data.items()})


def _concat(columns: list):
    if isinstance(columns[0], Masked):
        return Masked(np.concatenate([c.values for c in columns]), np.concatenate([c.missing for c in columns]))
    return np.concatenate([np.asarray(c) for c in columns])


def _take(column, order: np.ndarray):
    if isinstance(column, Masked):
        return Masked(column.values[order], column.missing[order])
    return column[order]


LABEL_COUNTS = ("handshakes", "events")  # engine counts {label: n}, most frequent first, ties by label
CAPTURE_LOSS = "capture_loss"  # {..., "missed_bytes", "bytes", "percent"}: the percent is not a sum


def merge_counts(counts: list[dict]) -> dict:
    """The engine's counts of the whole capture from the groups': numbers summed, dicts key by key; the
    label counts (``LABEL_COUNTS``) in the engine's order (``tcp.engine._counts``) and the capture loss
    percentage of the summed bytes (``Engine._capture_loss``): the stats one process gives, key order too."""
    out = _summed(counts)
    for key in LABEL_COUNTS:
        if isinstance(out.get(key), dict):
            out[key] = dict(sorted(out[key].items(), key=lambda item: (-item[1], item[0])))
    loss = out.get(CAPTURE_LOSS)
    if isinstance(loss, dict) and "missed_bytes" in loss and "bytes" in loss:
        missed, total = loss["missed_bytes"], loss["bytes"]
        loss["percent"] = round(100.0 * missed / total, 4) if total else 0.0
    return out


def _summed(counts: list[dict]) -> dict:
    out: dict = {}
    for c in counts:
        for k, v in c.items():
            if isinstance(v, dict):
                out[k] = _summed([out.get(k, {}), v])
            elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    return out


class GroupSides(NamedTuple):
    """A group's packet-table rows, in order: each one's stream id (the group's) and side (the engine's
    ``BatchEvents.sides``), and each stream's client side (``TcpTables.client_side``)."""

    streams: np.ndarray
    sides: np.ndarray
    client_side: np.ndarray

    @classmethod
    def of(cls, streams: list[np.ndarray], sides: list[np.ndarray], client_side: np.ndarray) -> "GroupSides":
        """From the ``streams`` and ``sides`` of each batch fed."""
        cat = lambda parts, dtype: np.concatenate(parts) if parts else np.empty(0, dtype=dtype)  # noqa: E731
        return cls(cat(streams, np.int64), cat(sides, np.int8), np.asarray(client_side, dtype=np.int64))


def packet_streams(rows: int, positions: list, groups: list[GroupSides],
                   maps: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The packet table's ``stream`` (ids in the whole capture) and ``direction`` columns, ``rows`` long:
    group ``g``'s rows are at ``positions[g]`` (an array, or a list of them, in the group's row order)."""
    from ..tcp.retransmit import directions

    stream = np.full(rows, -1, dtype=np.int64)
    side = np.zeros(rows, dtype=np.int8)
    client = np.zeros(rows, dtype=np.int64)
    for places, group, mapping in zip(positions, groups, maps):
        places = np.concatenate([np.empty(0, dtype=np.int64), *places]) if isinstance(places, list) else places
        if len(places) != len(group.streams):
            raise MergeError(f"a group analyzed {len(group.streams)} packets, {len(places)} were its own")
        stream[places] = mapping[group.streams]
        side[places] = group.sides
        client[places] = group.client_side[group.streams]
    if np.any(stream < 0):
        raise MergeError("some packets were analyzed by no group")
    return stream, directions(side, client)
