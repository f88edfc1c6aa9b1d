"""The TCP engine: packet-table batches in, connections / handshakes / retransmissions tables out.

Per batch: 4-tuple ids come from a compiled hash-table pass (``flows.py``), then one compiled pass in frame
order (``sequence.analyze_batch``) updates the carried per-flow state and writes event rows (which carry
the packet fields the tables need, so no packet column is kept). Tables are built from that state at
``finish()``, vectorized, so a batched run gives the same rows as a whole-file run.

Cost: every compiled function is cached on disk (``cache=True``; no numba typed containers, whose types
would be compiled again on each run) and releases the GIL (``nogil=True``), so reading the next batch
can overlap the analysis of this one in another thread. Columns are passed in the packet table's own
dtypes (no per-batch conversion copies).

Memory: state is kept per connection, not per packet; connections that are over are moved out to a
temporary file between batches and brought back if a packet of theirs comes (``spill.py``), so memory
follows the connections open at once, not all the connections of the capture.

    >>> engine = Engine()                                       # doctest: +SKIP
    >>> for batch in analyzer.iter_packets("capture.pcap"):     # doctest: +SKIP
    ...     new = engine.feed(batch)                           # rows decided in this batch
    >>> tables = engine.finish()                                # doctest: +SKIP
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Iterable

import numpy as np

from ..schema import CONNECTION_COLUMNS, HANDSHAKE_COLUMNS, PACKET_COLUMNS, RETRANSMISSION_COLUMNS, TH_ACK, TH_FIN, TH_SYN
from ..table import Masked, Table
from .connections import completeness, conn_states, histories
from .flows import TupleTable, column_getter, readonly
from .handshake import handshake_columns, outcomes
from .retransmit import KIND_NAMES, event_rows
from .sequence import (E_CONV, E_N, E_SENDER_LO, E_SPUR, E_SPUR_A, E_SPUR_B, E_SPUR_C, E_SPUR_FRAME, RF_A, RF_B,
                       RF_C, RF_EV, RF_FRAME, RF_HOW, RF_N, analyze_batch, compact_records,
                       records_to_keep)
from .spill import Spill
from .state import (C_CLIENT_DIR, C_COMPLETENESS, C_FIRST_FRAME, C_FIRST_LO, C_FIRST_TS, C_HIST_LEN, C_HS_DECIDED,
                    C_LAST_FRAME, C_LAST_TS, C_REUSED, C_TUPLE, C_VLAN, CT_BATCH, CT_EVENTS, CT_PENDING, CT_REFINED,
                    CT_RESTORE, CT_STOP, NONE,
                    D_BYTES, D_DUPS, D_KA, D_OOO, D_PKTS, D_RETX, D_RETX_BYTES, D_ZSTATE, D_ZWP, RECORD_WALK,
                    FlowState, grow, room)

if TYPE_CHECKING:
    import pandas as pd

# The sent-segment record pool is compacted (``sequence.compact_records``) after a batch that leaves it
# holding more than K + max(COMPACT_RECORDS_AT, K / 2), K being the records kept by the last compaction:
# the pool then stays proportional to the connections still open (plus a few records per finished one),
# not to the frames, with at most half again as much room for new records.
COMPACT_RECORDS_AT = 65_536
# Connections that are over and had no packet in a batch are moved out of memory (``spill.py``) once
# there are this many of them: memory then follows the connections still open, not all connections.
EVICT_AT = 1024

# the packet-table columns the compiled pass reads, in the schema's dtypes (one compiled signature)
_DTYPES = {c.name: np.dtype(c.dtype) for c in PACKET_COLUMNS if c.dtype not in ("category", "str", "string")}


class TcpTables:
    """The engine's result: three report tables and summary counts.

    ``raw`` holds the tables as built (``table.Table``, numpy columns); ``connections``, ``handshakes`` and
    ``retransmissions`` are their DataFrames, made on first access."""

    def __init__(self, raw: dict[str, Table], stats: dict):
        self.raw = raw
        self.stats = stats

    @cached_property
    def connections(self) -> pd.DataFrame:
        return self.raw["connections"].to_pandas()

    @cached_property
    def handshakes(self) -> pd.DataFrame:
        return self.raw["handshakes"].to_pandas()

    @cached_property
    def retransmissions(self) -> pd.DataFrame:
        return self.raw["retransmissions"].to_pandas()


class BatchEvents:
    """What one ``Engine.feed`` call decided, for live display: ``handshakes`` that reached an outcome
    (established, refused, reset) in the batch, the batch's ``retransmissions`` rows, and ``streams``,
    the stream id of every packet of the batch. The tables are built on first access; read them
    before feeding the next batch.

    A row may change later: a ``retransmission`` or ``fast_retransmission`` becomes
    ``spurious_retransmission`` when a later packet (a D-SACK, or an ACK echoing the original's TSval)
    shows it was unnecessary. Rows read here keep the label known then; ``Engine.finish()`` has the final
    one, the same whatever the batch sizes."""

    def __init__(self, engine: "Engine", batch: int, chunk: np.ndarray | None, streams: np.ndarray):
        self._engine, self._batch, self._chunk = engine, batch, chunk
        self.streams = streams

    @cached_property
    def handshakes(self) -> pd.DataFrame:
        st = self._engine._state
        decided = np.flatnonzero((st.conv[: st.conversations, C_HS_DECIDED] == self._batch)
                                 & (st.evicted[: st.conversations] == 0))
        return self._engine._handshakes(decided).to_pandas()

    @cached_property
    def retransmissions(self) -> pd.DataFrame:
        return self._engine._retransmissions([self._chunk]).to_pandas()


class Engine:
    """Feed packet-table batches in capture order; call ``finish()`` for the tables."""

    def __init__(self) -> None:
        self._tuples = TupleTable()
        self._state = FlowState()
        # every event row so far (row = global event index), with its packet's fields; the compiled pass
        # writes a batch's rows straight after the earlier ones. Grown by doubling, in pages of its own.
        self._events = np.empty((0, E_N), dtype=np.int64)
        self._refines = np.empty((0, RF_N), dtype=np.int64)  # work array for a batch's refinement rows
        self._packets = 0
        self._records_kept = 0  # records left by the last compaction of the sent-segment pool
        self._spill = Spill()  # finished connections' state, out of memory until needed

    def feed(self, packets) -> BatchEvents:
        """Analyze one batch (rows in frame order): a ``ColumnStore`` from the reader, or a packet-table
        DataFrame. Per-flow state carries over to the next batch."""
        st = self._state
        n = len(packets)
        if n == 0:
            return BatchEvents(self, -1, None, np.empty(0, dtype=np.int64))
        get = column_getter(packets)
        col = lambda name: readonly(get(name), _DTYPES[name])  # noqa: E731  (the schema's dtype: one signature)
        flags = col("flags")
        plen = col("payload_len")
        n_seqsp = int(np.count_nonzero((plen > 0) | ((flags & (TH_SYN | TH_FIN)) != 0)))
        tuples_before = len(self._tuples)
        tid, is_lo = self._tuples.assign(get("src"), get("sport"), get("dst"), get("dport"))
        new_conversations = (len(self._tuples) - tuples_before
                             + int(np.count_nonzero((flags & (TH_SYN | TH_ACK)) == TH_SYN)))
        if st.reserve(conversations=new_conversations, tuples=len(self._tuples), records=n_seqsp):
            self._spill.release(st)  # larger copies: hand the evicted connections' pages back again
        stream = np.empty(n, dtype=np.int64)
        # only segments that occupy sequence space get event rows; each refinement frees a waiting
        # retransmission: at most those waiting now plus this batch's rows
        first = int(st.counter[CT_EVENTS])
        self._events = room(self._events, first, first + n_seqsp)
        self._refines = room(self._refines, 0, int(st.counter[CT_PENDING]) + n_seqsp)
        refine = self._refines
        frame = col("frame")
        args = (tid, is_lo, frame, col("ts_ns"), flags, col("seq_raw"), col("ack_raw"), col("window"), plen,
                col("ip_id"), col("tsval"), col("tsecr"), col("sack_count"), col("sack1_le"), col("sack1_re"),
                col("sack2_le"), col("sack2_re"), col("mss"), col("wscale"), col("sack_permitted"),
                col("tfo_cookie_len"), col("vlan"))
        start, n_ev = 0, 0
        while True:
            got = analyze_batch(*args, st.conv, st.dirs, st.holes, st.pend, st.history, st.tuple_conv,
                                st.records, st.n_records, st.counter, st.evicted, start, stream,
                                self._events[first + n_ev:first + n_seqsp], refine)
            n_ev += got
            st.counter[CT_EVENTS] += got
            if st.counter[CT_STOP] == NONE:
                break
            # a packet of an evicted connection: put its state back and go on from that packet
            start = int(st.counter[CT_STOP])
            self._spill.restore(st, np.array([st.counter[CT_RESTORE]], dtype=np.int64))
        batch = int(st.counter[CT_BATCH])
        st.counter[CT_BATCH] += 1
        self._packets += n
        chunk = self._events[first:first + n_ev]
        if st.counter[CT_REFINED]:
            self._refine(refine[: int(st.counter[CT_REFINED])])
        if int(st.n_records[0]) > self._records_kept + max(COMPACT_RECORDS_AT, self._records_kept // 2):
            self._compact()
        self._evict(int(frame[0]))
        return BatchEvents(self, batch, chunk, stream)

    def _evict(self, batch_first_frame: int) -> None:
        """Move out the connections that are over and had no packet in this batch, once there are
        EVICT_AT of them (``spill.py``)."""
        st = self._state
        live = np.flatnonzero(st.evicted[:st.conversations] == 0)
        live = live[st.conv[live, C_LAST_FRAME] < batch_first_frame]
        if len(live) < EVICT_AT:
            return
        keep = np.empty(len(live), dtype=np.int64)
        records_to_keep(st.conv, st.dirs, st.tuple_conv, live, keep)
        over = keep < RECORD_WALK
        if np.count_nonzero(over) >= EVICT_AT:
            self._spill.evict(st, live[over], keep[over])

    def finish(self) -> TcpTables:
        """Build the final tables from the carried state."""
        self._spill.restore_all(self._state)
        conns = self._connections()
        hs = self._handshakes(np.arange(self._state.conversations))
        rx = self._retransmissions([self._events[: int(self._state.counter[CT_EVENTS])]])
        kinds = _counts(rx.values("kind"))
        stats = {
            "packets": self._packets,
            "connections": len(conns),
            "handshakes": _counts(hs.values("outcome")),
            "retransmissions": {k: kinds.get(k, 0) for k in KIND_NAMES.values()},
            "retransmitted_bytes": int(conns.values("retransmitted_bytes").sum()),
            "keep_alives": int(conns.values("keep_alives").sum()),
            "zero_window_probes": int(conns.values("zero_window_probes").sum()),
        }
        return TcpTables({"connections": conns, "handshakes": hs, "retransmissions": rx}, stats)

    def _refine(self, rf: np.ndarray) -> None:
        """Mark event rows (of this or an earlier batch) shown unnecessary by later evidence."""
        rows, ev = rf[:, RF_EV], self._events
        ev[rows, E_SPUR] = rf[:, RF_HOW]
        ev[rows, E_SPUR_FRAME] = rf[:, RF_FRAME]
        ev[rows, E_SPUR_A] = rf[:, RF_A]
        ev[rows, E_SPUR_B] = rf[:, RF_B]
        ev[rows, E_SPUR_C] = rf[:, RF_C]

    # ---- table builders ----------------------------------------------------------------------
    def _compact(self) -> None:
        """Compact the sent-segment record pool in place; give memory back if it is far larger than needed."""
        st = self._state
        n = int(st.n_records[0])
        kept = compact_records(st.conv, st.conversations, st.dirs, st.tuple_conv, st.records, st.n_records,
                               st.evicted, np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.int64))
        self._records_kept = kept
        size = 2 * (kept + max(COMPACT_RECORDS_AT, kept // 2))
        if len(st.records) > 2 * size:
            st.records = grow(st.records, size, kept)

    def _sides(self, idx: np.ndarray):
        """(client addr, client port, server addr, server port, client direction) per connection."""
        conv = self._state.conv[idx]
        lo_a, lo_p, hi_a, hi_p = self._tuples.endpoints(conv[:, C_TUPLE])
        client_is_lo = (conv[:, C_FIRST_LO] == 1) == (conv[:, C_CLIENT_DIR] == 0)
        client = np.where(client_is_lo, lo_a, hi_a)
        cport = np.where(client_is_lo, lo_p, hi_p)
        server = np.where(client_is_lo, hi_a, lo_a)
        sport = np.where(client_is_lo, hi_p, lo_p)
        return client, cport, server, sport, conv[:, C_CLIENT_DIR]

    def _per_side(self, idx: np.ndarray, column: int) -> tuple[np.ndarray, np.ndarray]:
        """(client value, server value) of a direction column for connections ``idx``."""
        d = self._state.dirs
        cd = self._state.conv[idx, C_CLIENT_DIR]
        return d[2 * idx + cd, column], d[2 * idx + 1 - cd, column]

    def _handshakes(self, idx: np.ndarray) -> Table:
        if len(idx) == 0:
            return Table.empty(HANDSHAKE_COLUMNS)
        client, cport, server, sport, _ = self._sides(idx)
        _, server_pkts = self._per_side(idx, D_PKTS)
        cols = {"stream": idx, "client": client, "client_port": cport, "server": server, "server_port": sport}
        cols.update(handshake_columns(self._state.conv[idx], server_pkts))
        return _table(cols, HANDSHAKE_COLUMNS)

    def _retransmissions(self, chunks: list[np.ndarray | None]) -> Table:
        """Rows of the given batches, with the current client of each connection."""
        chunks = [c for c in chunks if c is not None and len(c)]
        if not chunks:
            return Table.empty(RETRANSMISSION_COLUMNS)
        ev = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        conv = self._state.conv[ev[:, E_CONV]]
        lo_a, lo_p, hi_a, hi_p = self._tuples.endpoints(conv[:, C_TUPLE])
        sender_lo = ev[:, E_SENDER_LO] == 1
        cols = event_rows(ev, np.where(sender_lo, lo_a, hi_a), np.where(sender_lo, lo_p, hi_p),
                          np.where(sender_lo, hi_a, lo_a), np.where(sender_lo, hi_p, lo_p), conv[:, C_CLIENT_DIR])
        return _table(cols, RETRANSMISSION_COLUMNS)

    def _connections(self) -> Table:
        st = self._state
        idx = np.arange(st.conversations)
        if len(idx) == 0:
            return Table.empty(CONNECTION_COLUMNS)
        conv = st.conv[idx]
        client, cport, server, sport, cd = self._sides(idx)
        side = {name: self._per_side(idx, c) for name, c in
                [("pkts", D_PKTS), ("bytes", D_BYTES), ("retx", D_RETX), ("retx_bytes", D_RETX_BYTES),
                 ("ooo", D_OOO), ("ka", D_KA), ("zwp", D_ZWP), ("dups", D_DUPS), ("z", D_ZSTATE)]}
        hist = histories(st.history[idx], conv[:, C_HIST_LEN], cd)
        total = lambda name: side[name][0] + side[name][1]  # noqa: E731
        return _table({
            "stream": idx, "client": client, "client_port": cport, "server": server, "server_port": sport,
            "vlan": Masked(conv[:, C_VLAN].copy(), conv[:, C_VLAN] < 0),
            "first_frame": conv[:, C_FIRST_FRAME], "last_frame": conv[:, C_LAST_FRAME],
            "first_ts": conv[:, C_FIRST_TS] / 1e9, "last_ts": conv[:, C_LAST_TS] / 1e9,
            "duration": (conv[:, C_LAST_TS] - conv[:, C_FIRST_TS]) / 1e9,
            "client_pkts": side["pkts"][0], "server_pkts": side["pkts"][1],
            "client_bytes": side["bytes"][0], "server_bytes": side["bytes"][1],
            "handshake": outcomes(conv, side["pkts"][1]),
            "retransmissions": total("retx"), "retransmitted_bytes": total("retx_bytes"),
            "out_of_order": total("ooo"), "duplicates": total("dups"),
            "keep_alives": total("ka"), "zero_window_probes": total("zwp"),
            "conn_state": conn_states(side["z"][0], side["z"][1], side["bytes"][0], side["bytes"][1], hist),
            "history": hist,
            "completeness": completeness(conv[:, C_COMPLETENESS], side["pkts"][0] + side["pkts"][1]),
            "reused_ports": conv[:, C_REUSED] == 1,
        }, CONNECTION_COLUMNS)


def _table(cols: dict, columns) -> Table:
    """The table of ``cols`` (arrays in the table's dtypes, ``Masked`` for nullable ones), declared columns only."""
    return Table(columns, {c.name: cols[c.name] for c in columns})


def _counts(labels: np.ndarray) -> dict[str, int]:
    """{label: count}, most frequent first (ties by label)."""
    if not len(labels):
        return {}
    values, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    return {v: c for c, v in sorted(zip(counts.tolist(), values.tolist()), key=lambda t: (-t[0], t[1]))}


def analyze_batches(batches: Iterable) -> TcpTables:
    """Run the engine over packet-table batches and return the tables.

    >>> tables = analyze_batches(analyzer.iter_packets("capture.pcap"))   # doctest: +SKIP
    >>> tables.handshakes[["stream", "outcome", "handshake_rtt"]]        # doctest: +SKIP
    """
    engine = Engine()
    for batch in batches:
        engine.feed(batch)
    return engine.finish()
