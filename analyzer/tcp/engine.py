"""The TCP engine: packet-table batches in, connections / handshakes / retransmissions tables out.

Per batch: 4-tuple ids come from a compiled hash-table pass (``flows.py``), then one compiled pass in frame
order (``sequence.analyze_batch``) updates the carried per-flow state and writes event rows (which carry
the packet fields the tables need, so no packet column is kept). A connection's connections and
handshakes rows are built, vectorized, when it ends (``sequence.ended``: over and silent for the close
delay, or silent for the idle timeout; the rest at ``finish()``), and its state is freed; the rows are the
same whatever the batch sizes.

Cost: every compiled function is cached on disk (``cache=True``; no numba typed containers, whose types
would be compiled again on each run) and releases the GIL (``nogil=True``), so reading the next batch
can overlap the analysis of this one in another thread. Columns are passed in the packet table's own
dtypes (no per-batch conversion copies).

Memory: state is kept per connection, not per packet, and only until the connection ends: the pages of
ended connections are handed back, and what their later rows need (4-tuple, sides) stays in three small
arrays. Memory follows the connections open at once; the rows of ended ones go to a ``RowSink`` (in memory
by default, on disk for the command line: ``analyzer.report.rows``).

    >>> engine = Engine()                                       # doctest: +SKIP
    >>> for batch in analyzer.iter_packets("capture.pcap"):     # doctest: +SKIP
    ...     new = engine.feed(batch)                           # rows decided in this batch
    >>> tables = engine.finish()                                # doctest: +SKIP
"""
from __future__ import annotations

import mmap
from collections import Counter
from functools import cached_property
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ..decode.store import CLOCK_COLUMN, running_clock
from ..schema import (CONNECTION_COLUMNS, EVENT_COLUMNS, HANDSHAKE_COLUMNS, PACKET_COLUMNS, RETRANSMISSION_COLUMNS,
                      TH_FIN, TH_SYN)
from ..table import LazyRows, Masked, Table, concat_tables, seconds
from .connections import completeness, conn_states, histories
from .flows import TupleTable, column_getter, readonly
from .handshake import handshake_columns, outcomes
from .health import EVENT_NAMES, FINDINGS_PER_PACKET, finding_rows, health_columns
from .retransmit import KIND_NAMES, directions, event_rows, kinds
from .sequence import analyze_batch, compact_records, ended, release
from .state import (EVENT, FINDING, NONE, PAGE, Finding, FlowState, Gathered, give_back_heap, grow, mapping_of,
                    raw, room)

if TYPE_CHECKING:
    import pandas as pd

# The sent-segment record pool is compacted (``sequence.compact_records``) after a batch that leaves it
# holding more than K + max(COMPACT_RECORDS_AT, K / 2), K being the records kept by the last compaction:
# the pool then stays proportional to the connections still open (plus a few records per finished one),
# not to the frames, with at most half again as much room for new records.
COMPACT_RECORDS_AT = 65_536
# When a connection ends (Zeek's defaults): silent this long once over (both FINs acknowledged, or reset),
# or this long in any case. A later packet on its 4-tuple is a new connection if it is a SYN; any other is
# counted under the old stream and not analyzed (``stats["late_packets"]``).
CLOSE_DELAY = 5.0  # seconds (Zeek's tcp_close_delay)
IDLE_TIMEOUT = 300.0  # seconds (Zeek's tcp_inactivity_timeout)
TRIM_EVERY = 8  # batches between two ``state.give_back_heap`` calls
# Ended connections are written out and freed this many at a time (and at the end): building their rows
# costs about as much for a few as for thousands (a call per column, ~5 ms), while the state they hold
# meanwhile is 3.8 KB each (8 MB for all). Freeing them batch by batch was a fifth of the 5M-frame run.
RETIRE_AT = 2048
TIME_WAIT = 60.0  # seconds a 4-tuple is kept after its connection ended over (2 MSL: Linux's TCP_TIMEWAIT_LEN)

# the packet-table columns the compiled pass reads, in the schema's dtypes (one compiled signature)
_DTYPES = {c.name: np.dtype(c.dtype) for c in PACKET_COLUMNS if c.dtype not in ("category", "str", "string")}


class TcpTables:
    """The engine's result: four report tables and summary counts.

    ``raw`` holds the tables as built (numpy columns: ``table.Table``, ``table.LazyRows`` built a part at a
    time, ``report.rows.SpilledTable`` read back from disk); ``connections``, ``handshakes``,
    ``retransmissions`` and ``events`` are their DataFrames, made on first access."""

    def __init__(self, raw: dict[str, Table], stats: dict, client_side: np.ndarray | None = None):
        self.raw = raw
        self.stats = stats
        # per stream: 0 when the client sent the connection's first packet, else 1 (``BatchEvents.sides``)
        self.client_side = np.empty(0, dtype=np.int64) if client_side is None else client_side
        self.rtt_samples: pd.DataFrame | None = None  # with Engine(rtt_samples=True): every data RTT sample

    def directions(self, streams: np.ndarray, sides: np.ndarray) -> np.ndarray:
        """'client->server' or 'server->client' for packets given by stream and side (``BatchEvents``)."""
        return directions(sides, self.client_side[streams])

    @cached_property
    def connections(self) -> pd.DataFrame:
        return self.raw["connections"].to_pandas()

    @cached_property
    def handshakes(self) -> pd.DataFrame:
        return self.raw["handshakes"].to_pandas()

    @cached_property
    def retransmissions(self) -> pd.DataFrame:
        return self.raw["retransmissions"].to_pandas()

    @cached_property
    def events(self) -> pd.DataFrame:
        return self.raw["events"].to_pandas()


class BatchEvents:
    """What one ``Engine.feed`` call decided, for live display: ``handshakes`` that reached an outcome
    (established, refused, reset) in the batch, the batch's ``retransmissions`` rows, and ``streams``,
    the stream id of every packet of the batch. The tables are built on first access; read them
    before feeding the next batch.

    A row may change later: a ``retransmission`` or ``fast_retransmission`` becomes
    ``spurious_retransmission`` when a later packet (a D-SACK, or an ACK echoing the original's TSval)
    shows it was unnecessary. Rows read here keep the label known then; ``Engine.finish()`` has the final
    one, the same whatever the batch sizes."""

    def __init__(self, engine: "Engine", batch: int, chunk: np.ndarray | None, streams: np.ndarray,
                 sides: np.ndarray):
        self._engine, self._batch, self._chunk = engine, batch, chunk
        self.streams = streams
        self.sides = sides  # per packet: 0 when sent by its connection's first packet's sender, else 1

    @cached_property
    def handshakes(self) -> pd.DataFrame:
        engine = self._engine
        live = engine._live
        decided = live[engine._state.conv["hs_decided"][live] == self._batch]
        return engine._handshakes(decided).to_pandas()

    @cached_property
    def retransmissions(self) -> pd.DataFrame:
        return self._engine._retransmissions([self._chunk]).to_pandas()


class RowSink:
    """Where the engine puts the connections and handshakes rows of connections that have ended: kept in
    memory here; ``analyzer.report.rows`` has one on disk. ``add`` gets each group of rows as built (a
    stream appears once), ``tables`` gives them in stream order at the end."""

    def __init__(self) -> None:
        self._parts: list[tuple[Table, Table]] = []

    def add(self, connections: Table, handshakes: Table) -> None:
        self._parts.append((connections, handshakes))

    def tables(self) -> tuple[Table, Table]:
        return tuple(_in_stream_order([part[k] for part in self._parts], cols)
                     for k, cols in enumerate((CONNECTION_COLUMNS, HANDSHAKE_COLUMNS)))


class Engine:
    """Feed packet-table batches in capture order; call ``finish()`` for the tables. With ``rtt_samples``,
    every data RTT sample is kept too (``TcpTables.rtt_samples``, for plots: one row per ACK that has one).
    ``close_delay`` and ``idle_timeout`` (seconds) say when a connection ends (CLOSE_DELAY, IDLE_TIMEOUT);
    ``sink`` receives the rows of ended connections (a ``RowSink``, in memory, by default)."""

    def __init__(self, rtt_samples: bool = False, close_delay: float = CLOSE_DELAY,
                 idle_timeout: float = IDLE_TIMEOUT, sink: RowSink | None = None) -> None:
        self._rtt_samples = rtt_samples
        self._close_delay = round(close_delay * 1e9)
        self._idle_timeout = round(idle_timeout * 1e9)
        self._late_window = self._close_delay + round(TIME_WAIT * 1e9)
        self._sink = RowSink() if sink is None else sink
        self._tuples = TupleTable()
        self._state = FlowState()
        # every event row so far (row = global event index), with its packet's fields; the compiled pass
        # writes a batch's rows straight after the earlier ones. Grown by doubling, in pages of its own.
        self._events = np.empty(0, dtype=EVENT)
        self._findings = np.empty(0, dtype=FINDING)  # every events-table row so far, the same way
        self._packets = 0
        self._records_kept = 0  # records left by the last compaction of the sent-segment pool
        self._live = np.empty(0, dtype=np.int64)  # the connections that have not ended, in stream order
        # per stream, what is still needed once a connection has ended (its records are freed): its sides,
        # and whether it has event or findings rows; the 4-tuple's endpoints only for those that have
        self._small = np.zeros(0, dtype=[("first_lo", "i1"), ("client_dir", "i1"), ("rows", "u1")])
        self._kept_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (streams, lo, hi) as they end
        self._kept_sorted = (np.empty(0, dtype=np.int64),) * 3  # the same, joined and sorted when read
        self._ending = np.empty(0, dtype=np.int64)  # 4-tuples of freed connections, not forgotten yet
        self._ended: list[np.ndarray] = []  # connections that have ended, not written out and freed yet
        self._ended_conns = 0

    def feed(self, packets) -> BatchEvents:
        """Analyze one batch (rows in frame order): a ``ColumnStore`` from the reader, or a packet-table
        DataFrame. Per-flow state carries over to the next batch; connections that ended are written out."""
        st = self._state
        count = st.count
        n = len(packets)
        if n == 0:
            return BatchEvents(self, -1, None, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int8))
        get = column_getter(packets)
        col = lambda name: readonly(get(name), _DTYPES[name])  # noqa: E731  (the schema's dtype: one signature)
        flags = col("flags")
        plen = col("payload_len")
        n_seqsp = int(np.count_nonzero((plen > 0) | ((flags & (TH_SYN | TH_FIN)) != 0)))
        tuples_before = self._tuples.added
        tid, is_lo = self._tuples.assign(get("src"), get("sport"), get("dst"), get("dport"))
        new_conversations = self._tuples.added - tuples_before + int(np.count_nonzero(plen >= 0))
        known = st.conversations
        st.reserve(conversations=new_conversations, tuples=len(self._tuples), records=n_seqsp)
        stream = np.empty(n, dtype=np.int64)
        # a packet gives at most one event row (a capture copy, a label), plus one for an earlier copy of
        # its bytes when it turns out to be their late original (segments that occupy sequence space only)
        first = int(count["events"])
        self._events = room(self._events, first, first + n + n_seqsp)
        found = int(count["findings"])
        self._findings = room(self._findings, found, found + FINDINGS_PER_PACKET * n)
        frame = col("frame")
        ts = col("ts_ns")
        clock = self._clock(get, ts)
        sacks = [readonly(np.stack([col(f"sack{b}_{edge}") for b in range(1, 5)]), np.uint32) for edge in ("le", "re")]
        got = analyze_batch(tid, is_lo, frame, ts, clock, flags, col("seq_raw"), col("ack_raw"), col("window"), plen,
                            col("ip_id"), col("tsval"), col("tsecr"), col("sack_count"), *sacks, col("mss"),
                            col("wscale"), col("sack_permitted"), col("tfo_cookie_len"), col("vlan"), st.conv,
                            st.dirs, st.pend, st.tuple_conv, st.tuple_last, st.records, st.counter, st.gone, stream,
                            self._events, st.ua, self._findings, self._rtt_samples, self._close_delay,
                            self._idle_timeout, self._late_window)
        count = st.count  # (the compiled pass updated the array)
        count["events"] += got
        batch = int(count["batch"])
        count["batch"] += 1
        self._packets += n
        chunk = self._events[first:first + got]
        self._live = np.concatenate([self._live, np.arange(known, st.conversations, dtype=np.int64)])
        if len(self._small) < st.conversations:
            self._small = grow(self._small, max(st.conversations, 2 * len(self._small)), len(self._small))
            self._small[known:] = 0
        self._small["rows"][chunk["conv"]] = 1
        self._small["rows"][self._findings["conv"][found:int(count["findings"])]] = 1
        count["clock"] = clock[-1]
        self._end(int(clock[-1]))
        if batch % TRIM_EVERY == TRIM_EVERY - 1:
            give_back_heap()
        sides = (is_lo != (self._conv_meta(stream, ("first_lo",))["first_lo"] == 1)).astype(np.int8)
        if int(count["records"]) > self._records_kept + max(COMPACT_RECORDS_AT, self._records_kept // 2):
            self._compact()
        return BatchEvents(self, batch, chunk, stream, sides)

    def _clock(self, get, ts: np.ndarray) -> np.ndarray:
        """The capture's clock at each packet (``decode.store.CLOCK_COLUMN``): the decoder's column, else (a
        packet-table DataFrame) the running maximum of the packets' times, carried from the last batch."""
        try:
            return readonly(get(CLOCK_COLUMN), np.int64)
        except KeyError:
            return readonly(running_clock(ts, self._state.count["clock"]), np.int64)

    def _end(self, now: int) -> None:
        """Find the connections that have ended by ``now`` (the capture's clock at the batch's end); write them
        out and free their state once ``RETIRE_AT`` are waiting."""
        st = self._state
        out = np.empty(len(self._live), dtype=np.bool_)
        ended(st.conv, st.dirs, st.tuple_conv, st.gone, self._live, now, self._close_delay, self._idle_timeout, out)
        if out.any():
            self._ended.append(self._live[out])
            self._live = self._live[~out]
        if self._ended_count >= RETIRE_AT:
            self._retire_ended()
        self._forget_tuples(now)

    @property
    def _ended_count(self) -> int:
        """Connections that have ended and wait to be written out and freed."""
        return sum(map(len, self._ended))

    def _retire_ended(self) -> None:
        """Write out and free the connections that have ended."""
        if self._ended:
            self._retire(np.sort(np.concatenate(self._ended)))
            self._ended = []

    def _forget_tuples(self, now: int) -> None:
        """Forget the 4-tuples whose connection has ended for good: after an idle end, or ``TIME_WAIT`` after
        one that was over (the pass treats them so already: this only frees their places). The tuple
        table then holds the tuples in use, not every one ever seen."""
        st = self._state
        t = self._ending
        if not len(t):
            return
        c = st.tuple_conv[t]
        gone = np.where(c >= 0, st.gone[np.maximum(c, 0)], 0)
        free = (gone == 2) | ((gone == 1) & (now - st.tuple_last[t] > self._late_window))
        if free.any():
            done = t[free]
            self._tuples.forget(done)
            st.tuple_conv[done] = NONE
        self._ending = t[(gone != 0) & ~free]  # (a tuple taken by a new connection comes back when it ends)

    def _retire(self, cs: np.ndarray) -> None:
        """Rows of connections ``cs`` to the sink, what their later rows need kept, their state freed."""
        st = self._state
        t = st.conv["tuple"][cs]
        self._ending = np.concatenate([self._ending, t[st.tuple_conv[t] == cs]])
        self._sink.add(self._connections(cs), self._handshakes(cs))
        self._keep_meta(cs)
        release(st.dirs, st.pend, st.ua, st.counter, cs)
        st.freed[cs] = 1
        self._ended_conns += len(cs)
        self._hand_back(cs)

    def _keep_meta(self, cs: np.ndarray) -> None:
        """Keep what the rows of ended connections ``cs`` still need (``_conv_meta``)."""
        st = self._state
        conv = Gathered(st.conv, cs)
        for name in ("first_lo", "client_dir"):
            self._small[name][cs] = conv[name]
        with_rows = self._small["rows"][cs] == 1
        if with_rows.any():
            self._kept_parts.append((cs[with_rows], *self._tuples.keys(conv["tuple"][with_rows])))

    def _kept(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(streams, lo, hi) of ended connections with rows, sorted by stream (joined once per read, not
        once per batch)."""
        if self._kept_parts:
            streams, lo, hi = (np.concatenate([p[k] for p in (self._kept_sorted, *self._kept_parts)]) for k in range(3))
            order = np.argsort(streams, kind="stable")
            self._kept_sorted = (streams[order], lo[order], hi[order])
            self._kept_parts = []
        return self._kept_sorted

    def _hand_back(self, cs: np.ndarray) -> None:
        """Give the system the pages of ``conv`` and ``dirs`` holding (a part of) connections ``cs`` that now
        hold ended connections only: they then read as zeros, and nothing reads them again."""
        st = self._state
        for arr, per in ((st.conv, 1), (st.dirs, 2)):
            mm = mapping_of(arr)
            if mm is None or not hasattr(mm, "madvise") or not len(cs):
                continue
            size = arr.strides[0] * per  # bytes of one connection
            pages = np.unique(np.concatenate([cs * size // PAGE, ((cs + 1) * size - 1) // PAGE]))
            pages = pages[(pages + 1) * PAGE <= len(mm)]
            first = pages * PAGE // size  # the connections each page holds (a part of): first ... last
            last = np.minimum(((pages + 1) * PAGE - 1) // size, len(st.freed) - 1)
            freed = np.ones(len(pages), dtype=bool)
            for k in range(PAGE // size + 2):  # (work in the pages touched, not in all connections ever seen)
                freed &= st.freed[np.minimum(first + k, last)] != 0
            free = pages[freed]
            if not len(free):
                continue
            edges = np.flatnonzero(np.diff(free) != 1)  # runs of consecutive pages: one call each
            for lo, hi in zip(np.r_[free[0], free[edges + 1]].tolist(), np.r_[free[edges], free[-1]].tolist()):
                mm.madvise(mmap.MADV_DONTNEED, lo * PAGE, (hi - lo + 1) * PAGE)

    def finish(self) -> TcpTables:
        """Build the final tables: the live connections' rows join those of the ended ones."""
        self._retire_ended()
        if len(self._live):
            self._sink.add(self._connections(self._live), self._handshakes(self._live))
        conns, hs = self._sink.tables()
        rx = self._retransmissions_table()
        ev = self._events_table()
        kinds = _counts(rx.values("kind"))
        found = _counts(ev.values("event"))
        stats = {
            "packets": self._packets,
            "connections": len(conns),
            "handshakes": _counts(hs.values("outcome")),
            "retransmissions": {k: kinds.get(k, 0) for k in KIND_NAMES.values()},
            "retransmitted_bytes": int(conns.values("retransmitted_bytes").sum()),
            "keep_alives": int(conns.values("keep_alives").sum()),
            "zero_window_probes": int(conns.values("zero_window_probes").sum()),
            "events": found,
            "capture_loss": self._capture_loss(conns, found),
            "late_packets": int(self._state.count["late"]),
        }
        tables = TcpTables({"connections": conns, "handshakes": hs, "retransmissions": rx, "events": ev}, stats,
                           self._client_dirs())
        if self._rtt_samples:
            tables.rtt_samples = self._samples_table()
        give_back_heap()
        return tables

    def _client_dirs(self) -> np.ndarray:
        """Per stream: 0 when the client sent the connection's first packet, else 1 (int8)."""
        n = self._state.conversations
        out = self._small["client_dir"][:n].copy()
        out[self._live] = self._state.conv["client_dir"][self._live]
        return out

    def _findings_of(self, sample: bool) -> np.ndarray:
        rows = self._findings[: int(self._state.count["findings"])]
        return rows[(rows["what"] == Finding.RTT_SAMPLE) == sample] if self._rtt_samples else rows

    def _samples_table(self) -> pd.DataFrame:
        """The RTT samples: the ACK's frame and time, the stream, the direction of the data it measures, the
        RTT in seconds, the acknowledged frame, and whether that segment was sent once (Karn)."""
        import pandas as pd

        rows = self._findings_of(True)
        cd = self._conv_meta(rows["conv"], ("client_dir",))["client_dir"]
        return pd.DataFrame({"frame": rows["frame"], "ts": seconds(rows["ts"]), "stream": rows["conv"],
                             "direction": directions(1 - rows["dir"], cd), "rtt": rows["a"] / 1e9,
                             "acks_frame": rows["b"], "karn": rows["c"] == 1})

    def _capture_loss(self, conns: Table, found: dict) -> dict:
        """Did the capture itself drop packets? Wireshark's lost-segment and ACKed-unseen counts, and the
        bytes the receivers acknowledged that the capture never saw over all data bytes (as Zeek's
        capture_loss, in bytes)."""
        missed = int(conns.values("client_missed_bytes").sum() + conns.values("server_missed_bytes").sum())
        seen = int(conns.values("client_bytes").sum() + conns.values("server_bytes").sum())
        return {"lost_segments": int(found.get("lost_segment", 0)),
                "ack_lost_segments": int(found.get("ack_lost_segment", 0)),
                "missed_bytes": missed, "bytes": seen + missed,
                "percent": round(100.0 * missed / (seen + missed), 4) if seen + missed else 0.0}

    # ---- table builders ----------------------------------------------------------------------
    def _compact(self) -> None:
        """Compact the sent-segment record pool in place; give memory back if it is far larger than needed."""
        st = self._state
        n = int(st.count["records"])
        kept = compact_records(st.conv, self._live, st.dirs, st.tuple_conv, st.records, st.counter,
                               np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.int64))
        self._records_kept = kept
        size = 2 * (kept + max(COMPACT_RECORDS_AT, kept // 2))
        if len(st.records) > 2 * size:
            st.records = grow(st.records, size, kept)

    def _sides(self, idx: np.ndarray):
        """(client addr, client port, server addr, server port, client direction) per connection."""
        conv = Gathered(self._state.conv, idx)
        lo_a, lo_p, hi_a, hi_p = self._tuples.endpoints(*self._tuples.keys(conv["tuple"]))
        client_is_lo = (conv["first_lo"] == 1) == (conv["client_dir"] == 0)
        client = np.where(client_is_lo, lo_a, hi_a)
        cport = np.where(client_is_lo, lo_p, hi_p)
        server = np.where(client_is_lo, hi_a, lo_a)
        sport = np.where(client_is_lo, hi_p, lo_p)
        return client, cport, server, sport, conv["client_dir"]

    def _per_side(self, idx: np.ndarray, field: str) -> tuple[np.ndarray, np.ndarray]:
        """(client value, server value) of a direction field for connections ``idx``."""
        d = self._state.dirs[field]
        cd = self._state.conv["client_dir"][idx]
        return d[2 * idx + cd], d[2 * idx + 1 - cd]

    def _handshakes(self, idx: np.ndarray) -> Table:
        if len(idx) == 0:
            return Table.empty(HANDSHAKE_COLUMNS)
        client, cport, server, sport, _ = self._sides(idx)
        _, server_pkts = self._per_side(idx, "pkts")
        cols = {"stream": idx, "client": client, "client_port": cport, "server": server, "server_port": sport}
        cols.update(handshake_columns(Gathered(self._state.conv, idx), server_pkts))
        return _table(cols, HANDSHAKE_COLUMNS)

    def _retransmissions(self, chunks: list[np.ndarray | None]) -> Table:
        """Rows of the given batches, with the current client of each connection."""
        chunks = [c for c in chunks if c is not None and len(c)]
        if not chunks:
            return Table.empty(RETRANSMISSION_COLUMNS)
        ev = chunks[0] if len(chunks) == 1 else np.concatenate([raw(c) for c in chunks]).view(EVENT)
        if len(ev) > 1 and np.any(ev["frame"][1:] < ev["frame"][:-1]):  # a row written for an earlier frame
            ev = ev[np.argsort(ev["frame"], kind="stable")]
        conv = self._conv_meta(ev["conv"])
        lo_a, lo_p, hi_a, hi_p = self._tuples.endpoints(conv["lo"], conv["hi"])
        sender_lo = ev["sender_lo"] == 1
        cols = event_rows(ev, np.where(sender_lo, lo_a, hi_a), np.where(sender_lo, lo_p, hi_p),
                          np.where(sender_lo, hi_a, lo_a), np.where(sender_lo, hi_p, lo_p), conv["client_dir"])
        return _table(cols, RETRANSMISSION_COLUMNS)

    def _conv_meta(self, streams: np.ndarray, names=("lo", "hi", "first_lo", "client_dir")) -> dict:
        """Fields ``names`` of each stream: 4-tuple endpoints (``TupleTable.keys``; of an ended connection,
        only when it has event or findings rows), first_lo, client_dir. From the live records, or from
        what ``_keep_meta`` kept once the connection ended (its records freed, its tuple id given to others)."""
        st = self._state
        gone = st.freed[streams] != 0
        live = Gathered(st.conv, streams[~gone])
        ended = streams[gone]
        out = {}
        for name in names:
            if name in ("lo", "hi"):
                values = np.empty(len(streams), dtype=np.int64)
                values[~gone] = self._tuples.keys(live["tuple"])[0 if name == "lo" else 1]
                kept = self._kept()
                values[gone] = kept[1 if name == "lo" else 2][np.searchsorted(kept[0], ended)] if len(ended) else 0
            else:
                values = np.empty(len(streams), dtype=np.int8)
                values[~gone] = live[name]
                values[gone] = self._small[name][ended]
            out[name] = values
        return out

    def _events_table(self) -> LazyRows:
        """The events table: one row per frame per finding, in frame order (built a part at a time)."""
        rows = self._findings_of(False)
        client_dir = self._conv_meta(rows["conv"], ("client_dir",))["client_dir"]

        def build(lo: int, hi: int) -> Table:
            cols = finding_rows(rows[lo:hi], client_dir[lo:hi])
            cols["direction"] = directions(rows["dir"][lo:hi], client_dir[lo:hi])
            return _table(cols, EVENT_COLUMNS)

        return LazyRows(EVENT_COLUMNS, len(rows), build, {"event": lambda: EVENT_NAMES[rows["what"]]})

    def _retransmissions_table(self) -> LazyRows:
        """The retransmissions table, in frame order (built a part at a time)."""
        ev = self._events[: int(self._state.count["events"])]
        if len(ev) > 1 and np.any(ev["frame"][1:] < ev["frame"][:-1]):  # a row written for an earlier frame
            ev = ev[np.argsort(ev["frame"], kind="stable")]
        return LazyRows(RETRANSMISSION_COLUMNS, len(ev), lambda lo, hi: self._retransmissions([ev[lo:hi]]),
                        {"kind": lambda: kinds(ev)})

    def _connections(self, idx: np.ndarray) -> Table:
        st = self._state
        if len(idx) == 0:
            return Table.empty(CONNECTION_COLUMNS)
        conv = Gathered(st.conv, idx)
        client, cport, server, sport, cd = self._sides(idx)
        side = {name: self._per_side(idx, name)
                for name in ("pkts", "bytes", "retx", "retx_bytes", "ooo", "ka", "zwp", "dups", "zstate")}
        hist = histories(conv["history"], conv["hist_len"], cd)
        total = lambda name: side[name][0] + side[name][1]  # noqa: E731
        return _table({
            "stream": idx, "client": client, "client_port": cport, "server": server, "server_port": sport,
            "vlan": Masked(conv["vlan"], conv["vlan"] < 0),
            "first_frame": conv["first_frame"], "last_frame": conv["last_frame"],
            "first_ts": seconds(conv["first_ts"]), "last_ts": seconds(conv["last_ts"]),
            "duration": (conv["last_ts"] - conv["first_ts"]) / 1e9,
            "client_pkts": side["pkts"][0], "server_pkts": side["pkts"][1],
            "client_bytes": side["bytes"][0], "server_bytes": side["bytes"][1],
            "handshake": outcomes(conv, side["pkts"][1]),
            "retransmissions": total("retx"), "retransmitted_bytes": total("retx_bytes"),
            "out_of_order": total("ooo"), "duplicates": total("dups"),
            "keep_alives": total("ka"), "zero_window_probes": total("zwp"),
            "conn_state": conn_states(side["zstate"][0], side["zstate"][1], side["bytes"][0], side["bytes"][1],
                                      hist),
            "history": hist,
            "completeness": completeness(conv["completeness"], side["pkts"][0] + side["pkts"][1]),
            "reused_ports": conv["reused"] == 1,
            **health_columns(self._state.dirs, idx, cd, side["bytes"], self._per_side(idx, "retx_bytes")),
        }, CONNECTION_COLUMNS)


def _in_stream_order(parts: list[Table], columns) -> Table:
    """The rows of ``parts`` (each with a ``stream`` column) as one table sorted by stream."""
    table = concat_tables(columns, [p for p in parts if len(p)])
    return table.take(np.argsort(table.values("stream"), kind="stable")) if len(table) else table


def _table(cols: dict, columns) -> Table:
    """The table of ``cols`` (arrays in the table's dtypes, ``Masked`` for nullable ones), declared columns only."""
    return Table(columns, {c.name: cols[c.name] for c in columns})


def _counts(labels: np.ndarray) -> dict[str, int]:
    """{label: count}, most frequent first (ties by label). (A Counter over the objects: a fixed-width text
    array of millions of labels would take several times their memory.)"""
    counted = Counter(labels.tolist())
    pairs = [(str(k), n) for k, n in counted.items()]
    return {v: c for v, c in sorted(pairs, key=lambda t: (-t[1], t[0]))}


def analyze_batches(batches: Iterable, packet_sides: list | None = None, **options) -> TcpTables:
    """Run the engine over packet-table batches and return the tables. With a list ``packet_sides``, append
    each batch's (streams, sides) to it (``TcpTables.directions`` names the sides). ``options`` go to
    ``Engine`` (``close_delay``, ``idle_timeout``, ``sink``).

    >>> tables = analyze_batches(analyzer.iter_packets("capture.pcap"))   # doctest: +SKIP
    >>> tables.handshakes[["stream", "outcome", "handshake_rtt"]]        # doctest: +SKIP
    """
    engine = Engine(**options)
    for batch in batches:
        got = engine.feed(batch)
        if packet_sides is not None:
            packet_sides.append((got.streams.copy(), got.sides))
    return engine.finish()
