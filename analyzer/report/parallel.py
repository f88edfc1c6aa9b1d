"""``analyze --jobs N``: one capture's connections over N processes, or several captures at once.

One capture (``analyze_split``). This process reads and decodes the capture once, batch by batch, into
a ring of stores in shared memory (``ColumnStore.shared``: anonymous, so nothing on disk another user
could plant or read), and lists each connection group's rows there (``decode.rows_by_group``: a hash of
the 4-tuple, so both directions of a connection and every reuse of its ports are in one group). N
worker processes, forked when the ring is made (they start with this process's modules and compiled
kernels), run the TCP engine on their group's rows of each batch, read in place (``StoreRows``: only
the columns the engine reads are gathered), and say when the batch may be reused. At the end each
builds its tables and sends them back; their streams get their ids in the whole capture
(``merge.stream_maps``, from every worker's first frames; ``merge.renumber``) and ``merge.merge`` puts
the rows in the single-process order. Reading, decoding, the merge and writing stay in this process; the
engine's pass and the table building (most of the work) are split. A merged trace (``merge=True``) and a
pipe are read here like a file. With the packet table, each worker also sends the stream id (its own) and
side of each of its rows; this process knows where those rows are in the table (the groups' row lists of
each batch) and puts there their ids in the whole capture and their direction.

Several captures (``each_in_processes``): each in a process of its own, at most N at once.

A worker that fails sends its error back; one that dies (killed, out of memory) is seen as its pipe
closing: either way the capture fails with one line (``WorkerError``), and the other workers are stopped.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import TypeVar

import numpy as np

from ..decode import ANALYZE_BATCH, ColumnStore, FrameSelection, PacketReader, StoreRows, rows_by_group
from ..decode.store import shared_array
from ..errors import AnalyzerError
from .merge import GroupSides, first_frames, merge_counts, packet_streams, renumber, stream_maps
from .merge import merge as merge_tables
from .pipeline import packet_table, with_captures
from .report import Report

T = TypeVar("T")
R = TypeVar("R")

SLOTS_AHEAD = 4  # shared batch stores beyond one per worker: how far decoding may run ahead of the engines
# Rows of a shared batch: GROUP_ROWS a worker on average (the engine's cost per batch fed is paid by every
# worker: with ANALYZE_BATCH rows split N ways, 2 workers spent a quarter more time in it than with 65,536
# rows each), at most MAX_BATCH (a batch store is 163 bytes a row, and jobs + SLOTS_AHEAD of them are made).
GROUP_ROWS = 65_536
MAX_BATCH = 262_144
STOP_GRACE_S = 5.0  # a worker asked to stop (SIGTERM) has this long before it is killed
WORKER_NICENESS = 3  # engine workers yield the CPU to the process that decodes for them all (nice(2))


class WorkerError(AnalyzerError):
    """A worker process failed or died."""


class _Worker:
    """A forked process running ``work(conn)``, and this process's end of their pipe.

    The child ends with ``os._exit``: it never runs this process's exit handlers, and an error in
    ``work`` is sent back (an ``AnalyzerError`` as it is, anything else as one line), never printed."""

    def __init__(self, name: str, work: Callable[[Connection], None], others: Iterable[Connection] = ()):
        context = multiprocessing.get_context("fork")
        self.name = name
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_child, args=(child, work, [self.conn, *others]), name=name,
                                       daemon=True)
        self.process.start()
        child.close()

    def send(self, message) -> None:
        try:
            self.conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise self._died() from None

    def receive(self):
        """The next message; the worker's error raised here; ``WorkerError`` when it died."""
        try:
            kind, *body = self.conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            raise self._died() from None
        if kind == "error":
            raise self._error(body[0])
        return kind, *body

    def _error(self, sent) -> AnalyzerError:
        return sent if isinstance(sent, AnalyzerError) else WorkerError(f"{self.name} failed: {sent}")

    def _died(self) -> AnalyzerError:
        """Why the worker is gone: the error it sent before it ended, if it sent one; else how it ended."""
        try:
            while self.conn.poll():
                kind, *body = self.conn.recv()
                if kind == "error":
                    return self._error(body[0])
        except (EOFError, OSError):
            pass
        self.process.join(STOP_GRACE_S)
        return WorkerError(f"{self.name} {_ending(self.process.exitcode)}")

    def stop(self, done: bool = False) -> None:
        """Close the pipe and end the process: ``done``, it is ending by itself (it sent all it had to; not
        waited for: multiprocessing reaps it, as it starts the next one or at exit); else it is asked to
        stop, then forced."""
        if done:
            self.conn.close()
            return
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_GRACE_S)
            if self.process.is_alive():
                self.process.kill()
        self.process.join()
        self.conn.close()


def _ending(code: int | None) -> str:
    """How a process ended, from its exit code (negative: the signal that killed it)."""
    if code is None:
        return "stopped answering"
    if code < 0:
        return "was killed by signal " + (signal.Signals(-code).name if -code in signal.valid_signals() else str(-code))
    return f"exited with code {code}"


def _child(conn: Connection, work: Callable[[Connection], None], parent_ends: list[Connection]) -> None:
    for end in parent_ends:  # the parent's ends of this pipe and the other workers' (copies made by fork)
        end.close()
    code = 0
    try:
        work(conn)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which says it in one line
        code = 1
        try:
            conn.send(("error", exc if isinstance(exc, AnalyzerError) else f"{type(exc).__name__}: {exc}"))
        except BaseException:  # noqa: BLE001 - the parent is gone: nothing more to say
            pass
    finally:
        os._exit(code)


# -- one capture, its connections over N processes ------------------------------------------------
def analyze_split(path, jobs: int, *, packets: bool = False, select: FrameSelection | None = None,
                  progress: Callable[[int, int], None] | None = None, batch_size: int = ANALYZE_BATCH,
                  merge: bool = False, **engine_options) -> Report:
    """Analyze one capture (with ``merge``, the captures ``path`` names as one trace) with ``jobs`` engine
    processes; the same ``Report`` as one process gives. Batches have ``batch_size`` rows or more (about
    ``GROUP_ROWS`` a worker). ``engine_options`` go to each worker's ``Engine`` (``idle_timeout``,
    ``close_delay``)."""
    batch_size = max(batch_size, min(GROUP_ROWS * jobs, MAX_BATCH))
    reader = PacketReader(path, batch_size, select=select, merge=merge)  # a capture that cannot be read fails here
    slots = [(ColumnStore.shared(batch_size), shared_array((jobs, batch_size), np.int64))
             for _ in range(jobs + SLOTS_AHEAD)]
    workers: list[_Worker] = []
    parts: list = []
    try:
        for k in range(jobs):
            workers.append(_Worker(f"{reader.name}: worker {k + 1} of {jobs}",
                                   lambda conn, g=k: _group_engine(conn, slots, g, packets, engine_options),
                                   [w.conn for w in workers]))
        kept, positions = _feed(reader, workers, slots, packets, progress)
        for w in workers:
            w.send(("end",))
        import pyarrow.csv  # noqa: F401  (for write(); imported while the workers build their tables)

        parts = [_after_frees(w)[1:] for w in workers]
    finally:
        for w in workers:
            w.stop(done=len(parts) == jobs)
    maps = stream_maps([first_frames(t) for t, _, _ in parts])
    tables = merge_tables([renumber(t, mapping) for (t, _, _), mapping in zip(parts, maps)])
    stats = reader.stats
    stats["engine"] = "native"
    stats.update(merge_counts([counts for _, counts, _ in parts]))
    captures = reader.captures
    table = None
    if packets:
        rows = sum(len(piece) for piece in kept)
        table = packet_table(kept, *packet_streams(rows, positions, [sides for _, _, sides in parts], maps), captures)
    if captures is not None:
        tables = with_captures(tables, reader.frame_map, captures)
    return Report(reader.name, stats=stats, packets=table, captures=captures, **tables)


def _feed(reader: PacketReader, workers: list[_Worker], slots: list[tuple[ColumnStore, np.ndarray]], packets: bool,
          progress: Callable[[int, int], None] | None) -> tuple[list, list[list[np.ndarray]]]:
    """Decode the capture into the shared stores, list each group's rows and announce the batch to every
    worker; a store is reused once every worker is done with it. Returns, when ``packets``, the packet-table
    pieces and, per group, its rows' places in the whole table (one array a batch)."""
    free = deque(range(len(slots)))
    readers = [0] * len(slots)  # workers yet to be done with each store
    where = {id(store): k for k, (store, _) in enumerate(slots)}
    matrices = [store.mats for store, _ in slots]

    def empty_store() -> ColumnStore:
        while not free:
            for w in _ready(workers):
                _, k = w.receive()
                readers[k] -= 1
                if readers[k] == 0:
                    free.append(k)
        k = free.popleft()
        slots[k][0].n = 0
        return slots[k][0]

    size = reader.size
    sent, kept, placed = 0, [], 0
    positions: list[list[np.ndarray]] = [[] for _ in workers]
    for store in reader.stores(new_store=empty_store):
        k = where[id(store)]
        if store.mats is not matrices[k]:
            raise WorkerError(f"{reader.name}: a batch outgrew its shared store")
        if packets:
            kept.append(reader.frame(store.copy()))
        if store.n:
            groups = rows_by_group(store, len(workers), slots[k][1])
            tail, sent = store.addresses[sent:store.address_count], store.address_count
            for w, rows in zip(workers, groups):
                w.send(("batch", k, store.n, len(rows), tail))
            if packets:
                for places, rows in zip(positions, groups):
                    places.append(rows + placed)
                placed += store.n
            readers[k] = len(workers)
        else:
            free.append(k)
        if progress:
            progress(reader.bytes_read, size)
    return kept, positions


def _after_frees(worker: _Worker) -> tuple:
    """The worker's next message after the "free" ones not yet read."""
    while (message := worker.receive())[0] == "free":
        pass
    return message


def _ready(workers: list[_Worker]) -> list[_Worker]:
    by_conn = {w.conn: w for w in workers}
    return [by_conn[c] for c in wait(list(by_conn))]


def _group_engine(conn: Connection, slots: list[tuple[ColumnStore, np.ndarray]], group: int, packets: bool,
                  engine_options: dict) -> None:
    """A worker: the engine over its connection group's rows of each announced batch, then its tables (and,
    with ``packets``, ``merge.GroupSides``: each of its rows' stream and side)."""
    from ..tcp import Engine

    os.nice(WORKER_NICENESS)
    engine, addresses = Engine(**engine_options), []  # one growing address list: the engine's fast path
    scratch = ColumnStore(slots[0][0].capacity)  # the engine keeps nothing of a batch once fed: reused
    streams: list[np.ndarray] = []
    sides: list[np.ndarray] = []
    while True:
        kind, *body = conn.recv()
        if kind == "end":
            break
        k, n, count, tail = body
        addresses.extend(tail)
        store, rows = slots[k]
        store.n = n
        got = engine.feed(StoreRows(store, rows[group, :count], addresses, scratch))
        conn.send(("free", k))
        if packets:
            streams.append(got.streams.copy())
            sides.append(got.sides)
    tables = engine.finish()
    rows = GroupSides.of(streams, sides, tables.client_side) if packets else None
    conn.send(("tables", tables.raw, tables.stats, rows))


# -- several captures at once ----------------------------------------------------------------------
def each_in_processes(call: Callable[[T], R], items: list[T], jobs: int, name: Callable[[T], str] = str
                      ) -> Iterator[R | AnalyzerError]:
    """``call(item)`` for every item, each in a forked process of its own, at most ``jobs`` at once. Yields
    the results in the order of ``items``: the value, or the ``AnalyzerError`` it raised, or a
    ``WorkerError`` saying how its process died (named ``name(item)``)."""
    waiting = deque(enumerate(items))
    running: dict[Connection, tuple[int, _Worker]] = {}
    done: dict[int, R | AnalyzerError] = {}
    try:
        for index in range(len(items)):
            while index not in done:
                while waiting and len(running) < jobs:
                    i, item = waiting.popleft()
                    w = _Worker(f"{name(item)}: worker", lambda conn, x=item: conn.send(("done", call(x))),
                                [c for c in running])
                    running[w.conn] = (i, w)
                for c in wait(list(running)):
                    i, w = running.pop(c)
                    try:
                        done[i] = w.receive()[1]
                        w.stop(done=True)
                    except AnalyzerError as exc:
                        done[i] = exc
                        w.stop()
            yield done.pop(index)
    finally:
        for _, w in running.values():
            w.stop()
