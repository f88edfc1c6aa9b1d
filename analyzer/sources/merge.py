"""Several capture files as one trace in time order, as ``mergecap`` makes it, and where each frame came from.

``MergedSource(paths)`` reads each file with its own ``FrameSource`` and yields ``FrameBatch`` objects of
the merged trace; frame numbers continue across files. It has the ``FrameSource`` interface the reader
uses (``format``, ``problems``, ``bytes_read``, ``file_size``, ``big_endian``, ``batches``), plus
``captures`` (the file names) and ``frames`` (a ``FrameMap``: merged frame -> file and frame in it).

The order, exactly: the next frame is the next one of the file whose next frame is earliest; at equal
times, the file given first; a file's own frames keep their order. This is mergecap's rule (it takes the
earliest of the files' next frames), except that mergecap 4.0 gives a tie to the file given *last*: a
rotated set (tcpdump -C/-G, dumpcap's ring buffer) whose part ends and the next part starts in the same
microsecond would come out in a different order from the capture it was cut from. Computed in batches:
a frame's *merge time* is the latest time of its file up to it (the running maximum; equal to its own time
in a file in time order), and the frames go out sorted by (merge time, file, position), which is the same
order (a file's next frame can only be taken once no other file's next frame is earlier, and its later
frames with an earlier time follow it at once). A batch goes out once every file still being read has
pending frames past it.

Files that cannot be opened, or stop at damage, are one line each in ``problems`` (naming the file and the
offset); the frames of the others, and those before the damage, are merged and kept. Memory: one read
buffer per file the merge is in (a file is opened when the merge reaches its first frame and let go at its
end: a rotated set has one or two open at a time) and a ``FrameMap`` of 18 bytes per run of frames from
one file.

>>> src = MergedSource(["part0.pcap", "part1.pcap"])       # doctest: +SKIP
>>> for batch in src.batches(65_536): ...                   # doctest: +SKIP
>>> src.frames.locate(np.array([1, 500]))                   # doctest: +SKIP
(array([0, 1]), array([1, 12]))
"""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import AnalyzerError, CaptureError, NoCaptures
from .files import STDIN, FrameSource, capture_name, sniff_capture
from .frames import FrameBatch

PART_BATCH = 262_144  # frames per batch asked of each file (its 2 MB read pieces usually hold fewer)
PEEK_BYTES = 1 << 16  # read to find a file's first frame before the merge reaches it
NEVER = int(np.iinfo(np.int64).min)  # a time before any other
RUN = np.dtype([("frame", np.int64), ("file_frame", np.int64), ("file", np.uint16)])  # 18 bytes, packed
MAX_FILES = int(np.iinfo(np.uint16).max)


def natural_key(name: str) -> list:
    """Sort key putting ``trace2`` before ``trace10`` (tcpdump -C names its parts trace, trace1, trace2...)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def capture_files(paths: list[str]) -> list[str]:
    """The files to merge: each path as given, a folder replaced by the capture files directly in it
    (by their first bytes: pcap, pcapng, or gzip of either), in natural name order. A folder holding no
    capture, or a file named twice, raises ``NoCaptures``."""
    out: list[str] = []
    for path in map(os.fspath, paths):
        if path != STDIN and os.path.isdir(path):
            names = sorted((e.name for e in os.scandir(path) if e.is_file()), key=natural_key)
            found = [os.path.join(path, n) for n in names if sniff_capture(os.path.join(path, n))]
            if not found:
                raise NoCaptures(f"{path}: no capture file in this folder (pcap, pcapng or gzip of either)")
            out += found
        else:
            out.append(path)
    seen: dict[str, str] = {}
    for path in out:  # the same file twice (or two named alike in the capture column): which one is meant?
        keys = {capture_name(path), path if path == STDIN else os.path.realpath(path)}
        clash = keys & seen.keys()
        if clash:
            raise NoCaptures(f"{path}: given twice (as {seen[clash.pop()]}): each capture can be merged once")
        seen.update(dict.fromkeys(keys, path))
    if len(out) > MAX_FILES:
        raise NoCaptures(f"{len(out)} captures to merge; at most {MAX_FILES}")
    return out


class FrameMap:
    """Merged frame number -> (file index, frame number in that file), run-length encoded.

    A run is a stretch of consecutive merged frames from one file: a rotated set has one per file, two
    captures of the same link taken at once about one per change of side. Runs are appended by the reading
    thread while another looks frames up: ``locate`` reads the count first, then the array, and entries
    are written before the count is raised, so it sees only complete runs."""

    def __init__(self) -> None:
        self._runs = np.empty(64, dtype=RUN)
        self._n = 0
        self._lock = threading.Lock()  # appends only (lookups need no lock)

    def __len__(self) -> int:
        return self._n

    def add(self, first_frame: int, files: np.ndarray, file_frames: np.ndarray) -> None:
        """Record a batch: merged frames ``first_frame``, ``first_frame + 1``... come from ``files`` (index
        per frame), where their numbers are ``file_frames``."""
        if not len(files):
            return
        new = np.flatnonzero(np.diff(files) != 0) + 1
        starts = np.concatenate([[0], new]) if len(new) else np.zeros(1, dtype=np.int64)
        with self._lock:
            n = self._n
            if n and self._continues(n, first_frame, int(files[0]), int(file_frames[0])):
                starts = starts[1:]
            if n + len(starts) > len(self._runs):
                grown = np.empty(max(2 * len(self._runs), n + len(starts)), dtype=RUN)
                grown[:n] = self._runs[:n]
                self._runs = grown
            runs = self._runs[n:n + len(starts)]
            runs["frame"] = first_frame + starts
            runs["file_frame"] = file_frames[starts]
            runs["file"] = files[starts]
            self._n = n + len(starts)

    def _continues(self, n: int, frame: int, file: int, file_frame: int) -> bool:
        last = self._runs[n - 1]
        return int(last["file"]) == file and int(last["file_frame"]) + frame - int(last["frame"]) == file_frame

    def locate(self, frames) -> tuple[np.ndarray, np.ndarray]:
        """(file index, frame number in that file) of each merged frame number in ``frames``."""
        n = self._n
        runs = self._runs[:n]
        frames = np.asarray(frames, dtype=np.int64)
        at = np.maximum(np.searchsorted(runs["frame"], frames, side="right") - 1, 0)
        hit = runs[at]
        return hit["file"].astype(np.int64), hit["file_frame"] + frames - hit["frame"]


class _Part:
    """One file being merged: its reader, once opened, and the frames read but not yet merged.

    Before the merge reaches it, a file is only looked at (``peek``: its format, size and first frame's
    time, from a small read), so a rotated set of a thousand files has one or two of them open at a time.
    A file read to its end keeps its problems and byte count and lets go of its reader and buffer."""

    def __init__(self, index: int, path):
        self.index, self.path = index, path
        self.source: FrameSource | None = None
        self.batches: Iterator[FrameBatch] | None = None
        self.first = NEVER  # time of the file's first frame: its frames' merge times are all at or after it
        self.format, self.size = "", None
        self.problems: list[str] = []  # once read to its end
        self.bytes_read = 0
        self.batch: FrameBatch | None = None
        self.key = np.empty(0, dtype=np.int64)  # merge time of each frame of ``batch``
        self.at = 0  # first frame of ``batch`` not yet merged
        self.done = False  # read to its end
        self.high = NEVER  # the file's latest time so far
        self.merged = 0  # frames of this file merged so far (= the last one's number in the file)

    def peek(self) -> None:
        """Read the file's header and first frame (``CaptureError`` when it is not a capture). Standard input
        can be read only once: it is opened for the merge at once."""
        if os.fspath(self.path) == STDIN:
            self.open()
            self.format, self.size = self.source.format, None
            return
        src = FrameSource(self.path, chunk_bytes=PEEK_BYTES)
        batches = src.batches(1)
        try:
            self.format, self.size = src.format, src.file_size()
            first = next(batches, None)
            self.first = NEVER if first is None else int(first.ts_ns[0])  # none: read (its damage) at once
        finally:
            batches.close()
            src.close()

    @property
    def opened(self) -> bool:
        return self.source is not None

    def open(self) -> None:
        self.source = FrameSource(self.path)
        self.batches = self.source.batches(PART_BATCH)

    @property
    def pending(self) -> int:
        return len(self.key) - self.at

    @property
    def read(self) -> int:
        return self.source.bytes_read if self.source is not None else self.bytes_read

    def refill(self) -> None:
        """Read the file's next batch once every pending frame is merged (its bytes are then no longer
        needed: the source reuses its buffer)."""
        if self.pending or self.done:
            return
        self.batch = next(self.batches, None)
        if self.batch is None:
            self.close()
            return
        ts = self.batch.ts_ns.copy()
        ts[0] = max(int(ts[0]), self.high)
        self.key = np.maximum.accumulate(ts)
        self.high, self.at = int(self.key[-1]), 0

    def close(self) -> None:
        """Done with the file: keep what it said, let go of its reader."""
        self.done, self.batch, self.key, self.at = True, None, np.empty(0, dtype=np.int64), 0
        if self.source is not None:
            self.batches.close()
            self.source.close()  # (a generator never started does not run its own clean-up)
            self.problems, self.bytes_read = list(self.source.problems), self.source.bytes_read
            self.source = self.batches = None


class MergedSource:
    """Reads several pcap or pcapng files (each plain or gzip) as one trace in time order (module doc)."""

    def __init__(self, paths: list[str]):
        if not paths:
            raise NoCaptures("no capture to merge")
        self.captures = [capture_name(p) for p in paths]
        self.name = merged_name(self.captures)
        self.frames = FrameMap()
        self._open_problems: list[str] = []
        self._parts: list[_Part] = []
        for k, path in enumerate(paths):
            part = _Part(k, path)
            try:
                part.peek()
            except CaptureError as exc:
                self._open_problems.append(str(exc))
                continue
            self._parts.append(part)
        if not self._parts:
            raise AnalyzerError("; ".join(self._open_problems))
        self.format = "+".join(sorted({p.format for p in self._parts}))
        self.big_endian: bool | np.ndarray = False  # the byte order of the last batch's files
        self.merged = 0  # frames merged so far

    @property
    def problems(self) -> list[str]:
        return self._open_problems + [line for p in self._parts
                                      for line in (p.source.problems if p.opened else p.problems)]

    @property
    def bytes_read(self) -> int:
        return sum(p.read for p in self._parts)

    def file_size(self) -> int | None:
        sizes = [p.size for p in self._parts]
        return None if None in sizes else sum(sizes)

    def batches(self, batch_size: int | Callable[[], int] = 262_144) -> Iterator[FrameBatch]:
        """Yield batches of the merged trace of at most ``batch_size`` frames (a number, or a function
        asked before each batch). A batch must be decoded before the next is asked for."""
        limit = batch_size if callable(batch_size) else (lambda: batch_size)
        try:
            while True:
                for part in self._parts:
                    if part.opened:
                        part.refill()
                # the next frame any file not read to its end may hold: at or after (merge time, file) of its
                # last pending frame, or of its first frame when it is not open yet
                waiting = [(int(p.key[-1]) if p.opened else p.first, p.index, p) for p in self._parts if not p.done]
                bound = min(waiting, key=lambda w: w[:2], default=None)
                if bound is not None and not bound[2].opened:
                    bound[2].open()  # the merge has reached this file
                    continue
                live = [p for p in self._parts if p.pending]
                if not live:
                    return
                counts = self._ready(live, None if bound is None else bound[:2], max(1, limit()))
                yield self._merge(live, counts)
        finally:
            for part in self._parts:
                part.close()

    def _ready(self, live: list[_Part], bound: tuple[int, int] | None, most: int) -> list[int]:
        """How many pending frames of each live file go out now: those sorted at or before ``bound`` (the
        next frame a file not read to its end may hold: None when all are), at most ``most`` in all."""
        if bound is None:
            counts = [p.pending for p in live]
        else:
            bound, first = bound
            counts = [int(np.searchsorted(p.key[p.at:], bound, side="right" if p.index <= first else "left"))
                      for p in live]
        if sum(counts) <= most:
            return counts
        keys = np.concatenate([p.key[p.at:p.at + c] for p, c in zip(live, counts)])
        owner = np.repeat(np.arange(len(live)), counts)
        chosen = owner[np.argsort(keys, kind="stable")[:most]]
        return np.bincount(chosen, minlength=len(live)).tolist()

    def _merge(self, live: list[_Part], counts: list[int]) -> FrameBatch:
        """The next merged batch: ``counts[i]`` frames of ``live[i]``, in merge order."""
        used = [(p, c) for p, c in zip(live, counts) if c]
        first = self.merged + 1
        if len(used) == 1:
            part, c = used[0]
            b, lo = part.batch, part.at
            batch = FrameBatch(data=b.data, offsets=b.offsets[lo:lo + c], caplens=b.caplens[lo:lo + c],
                               wirelens=b.wirelens[lo:lo + c], ts_ns=b.ts_ns[lo:lo + c],
                               linktypes=b.linktypes[lo:lo + c], interfaces=b.interfaces[lo:lo + c],
                               first_frame=first)
            files = np.full(c, part.index, dtype=np.int64)
            self.big_endian = part.source.big_endian
        else:
            batch, files = self._gather(used, first)
        file_frames = np.empty(len(files), dtype=np.int64)
        for part, c in used:
            file_frames[files == part.index] = np.arange(part.merged + 1, part.merged + c + 1)
            part.at += c
            part.merged += c
        self.frames.add(first, files, file_frames)
        self.merged += len(files)
        return batch

    def _gather(self, used: list[tuple[_Part, int]], first: int) -> tuple[FrameBatch, np.ndarray]:
        """Frames of several files as one batch (their bytes copied together), sorted by merge time."""
        data, fields, keys, files, orders = [], {k: [] for k in ("offsets", "caplens", "wirelens", "ts_ns",
                                                                    "linktypes", "interfaces")}, [], [], []
        base = 0
        for part, c in used:
            b, lo = part.batch, part.at
            start = int(b.offsets[lo])
            end = int((b.offsets[lo:lo + c] + b.caplens[lo:lo + c]).max())
            data.append(b.data[start:end])
            for name, values in fields.items():
                values.append(getattr(b, name)[lo:lo + c])
            fields["offsets"][-1] = fields["offsets"][-1] - start + base
            base += end - start
            keys.append(part.key[lo:lo + c])
            files.append(np.full(c, part.index, dtype=np.int64))
            orders.append(np.full(c, part.source.big_endian, dtype=bool))
        order = np.argsort(np.concatenate(keys), kind="stable")  # files in index order: ties by file, position
        cols = {name: np.concatenate(values)[order] for name, values in fields.items()}
        big = np.concatenate(orders)[order]
        self.big_endian = bool(big[0]) if (big == big[0]).all() else big
        return FrameBatch(data=np.concatenate(data), first_frame=first, **cols), np.concatenate(files)[order]


def merged_name(captures: list[str]) -> str:
    """How a merged trace is named in summaries: its files, or the first and last of many."""
    if len(captures) <= 3:
        return " + ".join(captures)
    return f"{captures[0]} + ... + {captures[-1]} ({len(captures)} files)"


