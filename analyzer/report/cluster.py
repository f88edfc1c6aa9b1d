"""``analyze --scheduler tcp://HOST:PORT``: the connection-group plan of ``parallel`` on a Dask cluster.

This process reads no capture: the cluster's workers do, so give paths they can reach (a shared file
system; a relative path is made absolute here, and messages name the capture as it was given). One capture is split into
connection groups (``groups``, by default one per worker thread of the cluster). Each group is a task
that reads every frame but decodes only its group's segments (``decode.ConnectionGroup``: the check sits
in the decode kernel right after the TCP ports, so the rest of another group's frame is not decoded),
runs the TCP engine and builds its tables, which stay on that worker. This process collects the groups'
first frames, gives each group its streams' ids in the whole capture (a second task, on the worker
that holds the tables), gathers the renumbered tables and merges them (``merge``). The packet table is
one more task that decodes every frame and says which rows are each group's; the groups send each of
their rows' stream and side (``merge.packet_streams``). Several captures: one task each, the whole
capture in it. A merge of captures and a pipe are read by the process that has them: not on a cluster.

Tasks are this module's functions: the workers need this package, in the same version.

    >>> report = analyze_on_cluster("tcp://10.0.0.5:8786", "/shared/big.pcap")   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..decode import ANALYZE_BATCH, PREFETCH, ConnectionGroup, PacketReader, frame_selection, prefetched, rows_by_group
from ..errors import AnalyzerError, CaptureError
from ..table import Table
from .merge import GroupSides, first_frames, merge, merge_counts, packet_streams, renumber, stream_maps
from .pipeline import analyze, packet_table, raised
from .report import Report

if TYPE_CHECKING:
    from distributed import Client

CONNECT_TIMEOUT_S = 30  # to reach the scheduler and get an answer
GROUP_COUNTS = ("tcp_segments",)  # reading stats a group counts for its own segments only: summed


class ClusterError(AnalyzerError):
    """The Dask cluster cannot be reached, or a task was lost with its worker."""


class _Group(NamedTuple):
    """What a group task leaves on its worker: its tables, the engine's counts, the reading stats (and, for
    the packet table, its rows' streams and sides)."""

    tables: dict[str, Table]
    counts: dict
    reading: dict
    sides: GroupSides | None = None


def connect(address: str) -> Client:
    """A client of the scheduler at ``address``; ``ClusterError`` after ``CONNECT_TIMEOUT_S`` without one."""
    from distributed import Client

    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def analyze_on_cluster(address: str, path_or_paths, *, groups: int | None = None,
                       **options) -> Report | list[Report]:
    """``analyze`` on the cluster at ``address``: one capture (a ``Report``) or several (a list)."""
    for path in path_or_paths if isinstance(path_or_paths, (list, tuple)) else [path_or_paths]:
        if not isinstance(path, (str, os.PathLike)) or os.fspath(path) == "-":
            raise ClusterError("a Dask cluster's workers read capture files: not standard input or a file object")
    with connect(address) as client:
        if isinstance(path_or_paths, (list, tuple)):
            return [raised(r) for r in analyze_each(client, list(path_or_paths), **options)]
        return analyze_split(client, str(path_or_paths), groups, **options)


def analyze_split(client: Client, path: str, groups: int | None = None, *, engine: str = "native",
                  packets: bool = False, bpf: str | None = None, start=None, end=None,
                  **engine_options) -> Report:
    """One capture, its connections in ``groups`` tasks (default: one per worker thread). ``engine_options``
    go to each task's ``Engine`` (``idle_timeout``, ``close_delay``)."""
    if engine != "native":
        return raised(next(analyze_each(client, [path], engine=engine, packets=packets, **engine_options)))
    frame_selection(bpf, start, end)  # a bad time bound fails here, before any task
    groups = groups or max(1, sum(client.nthreads().values()))
    where = os.path.abspath(path)
    try:
        parts = [client.submit(_group_pass, where, path, ConnectionGroup(k, groups), bpf, start, end, packets,
                               engine_options, pure=False)
                 for k in range(groups)]
        pieces = client.submit(_packet_table, where, path, bpf, start, end, groups, pure=False) if packets else None
        firsts = client.gather([client.submit(_first_frames, p, pure=False) for p in parts])
        mappings = stream_maps(firsts)
        maps = client.scatter(mappings)
        done: list[_Group] = client.gather([client.submit(_renumbered, p, m, pure=False)
                                            for p, m in zip(parts, maps)])
        pieces = pieces.result() if pieces is not None else None
    except AnalyzerError:
        raise
    except Exception as exc:  # noqa: BLE001 - a lost worker (KilledWorker), a cancelled task: one line
        raise ClusterError(f"{path}: the cluster could not finish: {type(exc).__name__}: {exc}") from None
    stats = dict(done[0].reading)
    for name in GROUP_COUNTS:
        stats[name] = sum(g.reading.get(name, 0) for g in done)
    stats["engine"] = "native"
    stats.update(merge_counts([g.counts for g in done]))
    table = None
    if pieces is not None:
        frames, positions = pieces
        table = packet_table(frames, *packet_streams(sum(map(len, frames)), positions, [g.sides for g in done],
                                                     mappings))
    return Report(path, stats=stats, packets=table, **merge([g.tables for g in done]))


def analyze_each(client: Client, paths: list[str], **options) -> Iterator[Report | AnalyzerError]:
    """Each capture whole in a task of its own; the reports (or the error of each that failed) in order."""
    futures = [client.submit(_whole, os.path.abspath(p), p, options, pure=False) for p in paths]
    for path, future in zip(paths, futures):
        try:
            yield future.result()
        except AnalyzerError as exc:
            yield exc
        except Exception as exc:  # noqa: BLE001 - as in analyze_split
            yield ClusterError(f"{path}: the cluster could not finish: {type(exc).__name__}: {exc}")


# -- tasks (run on the workers) ----------------------------------------------------------------------
def _group_pass(where: str, path: str, group: ConnectionGroup, bpf, start, end, packets: bool = False,
                engine_options: dict | None = None) -> _Group:
    """Read the capture at ``where``, decode the group's segments, run the engine: the group's tables (and
    with ``packets``, its rows' streams and sides)."""
    from ..tcp import analyze_batches

    sides: list | None = [] if packets else None
    with _named(where, path):
        reader = PacketReader(where, ANALYZE_BATCH, select=frame_selection(bpf, start, end), group=group)
        tables = analyze_batches(prefetched(reader.stores(recycle=PREFETCH + 2), PREFETCH), sides,
                                 **(engine_options or {}))
    reading = reader.stats
    reading["problems"] = _renamed(reading["problems"], where, path)
    rows = GroupSides.of([s for s, _ in sides], [d for _, d in sides], tables.client_side) if packets else None
    raw = {name: t.to_table() if hasattr(t, "to_table") else t for name, t in tables.raw.items()}  # (in memory)
    return _Group(raw, tables.stats, reading, rows)


def _whole(where: str, path: str, options: dict) -> Report:
    """``analyze`` of the whole capture at ``where``, naming it ``path``."""
    with _named(where, path):
        report = analyze(where, **options)
    report.capture = path
    report.stats["problems"] = _renamed(report.stats.get("problems", []), where, path)
    return report


def _first_frames(group: _Group) -> np.ndarray:
    return first_frames(group.tables)


def _renumbered(group: _Group, mapping: np.ndarray) -> _Group:
    return group._replace(tables=renumber(group.tables, mapping))


def _packet_table(where: str, path: str, bpf, start, end, groups: int) -> tuple[list, list[list[np.ndarray]]]:
    """The packet table's batches, decoded as one process decodes them (every frame, batch by batch), and
    where each group's rows are in it (per group, one array a batch)."""
    from ..decode import to_frame

    frames, positions, placed = [], [[] for _ in range(groups)], 0
    with _named(where, path):
        reader = PacketReader(where, ANALYZE_BATCH, select=frame_selection(bpf, start, end))
        for store in reader.stores():
            frames.append(to_frame(store))
            for places, rows in zip(positions, rows_by_group(store, groups)):
                places.append(rows + placed)
            placed += store.n
    return frames, positions


@contextlib.contextmanager
def _named(where: str, path: str) -> Iterator[None]:
    """A ``CaptureError`` about ``where`` raised as one about ``path``, the name the user gave."""
    try:
        yield
    except CaptureError as exc:
        raise CaptureError(path if exc.path == where else exc.path, exc.offset, exc.problem) from None


def _renamed(problems: list[str], where: str, path: str) -> list[str]:
    return [path + p[len(where):] if p.startswith(where + " ") else p for p in problems]
