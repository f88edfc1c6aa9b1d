"""Plots: the time-sequence (Stevens / tcptrace) graph of one connection, its data RTT samples over time,
and the handshake RTT distribution.

The time-sequence graph shows one direction's data segments as vertical bars from seq to seq+len
(relative sequence numbers, as Wireshark shows them) against time since the connection's first
packet, the other direction's ACK line and ACK + receive window, its SACK blocks, every segment of
the ``retransmissions`` table in the colour of its kind, and the health findings of the ``events`` table:
the receiver's zero-window periods shaded, its duplicate ACKs and the ACKs of bytes the capture never saw
(capture gaps) marked on the ACK line, and the sender's segments after a gap ("previous segment not
captured"). Figures are built without pyplot (Agg canvas), so they work headless and never touch global
state.

Every marked segment or finding is its own artist with ``gid = "<kind>:<frame>"`` (written as the element id
in SVG output), so the frames drawn in each colour can be read back from the figure or the file:

>>> from analyzer.plot import plot_stream, marked_frames
>>> fig = plot_stream("trace.pcap", stream=0, out="stream0.svg")       # doctest: +SKIP
>>> marked_frames(fig)                                                  # doctest: +SKIP
{'retransmission': [8, 10], 'spurious_retransmission': [12, 13, 15]}
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from ..schema import TH_ACK, TH_FIN, TH_SYN
from .report import path_rtt

PLOT_FORMATS = (".png", ".svg", ".pdf")
DIRECTIONS = ("client->server", "server->client")
SEQ_MOD = 1 << 32

COLOURS = {
    "data": "tab:blue",
    "ack": "black",
    "window": "tab:olive",
    "sack": "tab:cyan",
    "retransmission": "tab:red",
    "fast_retransmission": "tab:orange",
    "spurious_retransmission": "tab:purple",
    "syn_retransmission": "tab:brown",
    "out_of_order": "tab:green",
    "duplicate": "tab:pink",
    "zero_window": "tab:gray",
    "duplicate_ack": "crimson",
    "capture_gap": "magenta",
    "lost_segment": "goldenrod",
    "rtt_sample": "tab:blue",
    "rtt_sample_resent": "tab:red",
}
"""One colour per drawn element; kinds are those of ``schema.RETRANSMISSION_KINDS`` and ``schema.EVENT_KINDS``."""
LEGEND_ORDER = ("data segment", "retransmission", "fast retransmission", "spurious retransmission",
                "syn retransmission", "out of order", "duplicate", "ACK", "ACK + window", "SACK block",
                "zero window", "duplicate ACK", "capture gap", "after a gap")
OTHER = {"client->server": "server->client", "server->client": "client->server"}


class StreamNotFound(LookupError):
    """The requested stream is not in the capture."""


# ---- helpers ---------------------------------------------------------------------------------------
def _centred(delta: np.ndarray) -> np.ndarray:
    """32-bit differences mapped to [-2**31, 2**31): wrap-safe distance between sequence numbers."""
    return ((delta.astype(np.int64) + (1 << 31)) % SEQ_MOD) - (1 << 31)


def _unwrapped(raw: np.ndarray, base: int) -> np.ndarray:
    """Sequence numbers relative to ``base``, unwrapped across 2**32 in packet order."""
    if not len(raw):
        return np.zeros(0, dtype=np.int64)
    rel = _centred(raw.astype(np.int64) - base)
    steps = _centred(np.diff(rel))
    return np.concatenate([[rel[0]], rel[0] + np.cumsum(steps)]).astype(np.int64)


def _new_figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _check_suffix(out: str | os.PathLike | None) -> None:
    suffix = Path(out).suffix.lower() if out is not None else ".png"
    if suffix not in PLOT_FORMATS:
        raise ValueError(f"{out}: unknown image type {suffix or '(none)'!r}; use {', '.join(PLOT_FORMATS)}")


def _save(fig: Figure, out: str | os.PathLike | None) -> None:
    if out is None:
        return
    _check_suffix(out)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def _load(source, packets: pd.DataFrame | None):
    """(report, packets, stream id of each packet) from a capture path or a Report, in one engine pass.

    A path is read once and analyzed here (the same engine ``analyze`` runs); a Report brings its
    tables, and its packets (or ``packets``, or the capture re-read) go through a fresh engine only to
    number their streams.
    """
    from ..decode import read_packets
    from ..tcp import Engine
    from .report import Report

    engine = Engine()
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        packets = read_packets(path) if packets is None else packets
        streams = engine.feed(packets).streams
        tables = engine.finish()
        report = Report(capture=path, connections=tables.connections, handshakes=tables.handshakes,
                        retransmissions=tables.retransmissions, events=tables.events,
                        stats=dict(packets.attrs.get("stats", {})), packets=packets)
        return report, packets, streams
    if packets is None:
        packets = source.packets if source.packets is not None else read_packets(source.capture)
    return source, packets, engine.feed(packets).streams


# ---- time-sequence graph -----------------------------------------------------------------------------
def plot_stream(source, stream: int, out: str | os.PathLike | None = None, *,
                direction: str = "client->server", packets: pd.DataFrame | None = None,
                time_range: tuple[float | None, float | None] | None = None,
                size: tuple[float, float] = (10, 6)) -> Figure:
    """Time-sequence graph of connection ``stream`` (one direction's data, the other's ACKs); returns the Figure.

    ``source`` is a capture path or a ``Report`` (with ``packets`` from ``analyze(..., packets=True)``,
    or pass ``packets``). ``out``: a .png, .svg or .pdf file to write (optional). ``time_range``:
    (start, end) in seconds since the connection's first packet, either None for open; only packets
    in it are drawn (sequence numbers stay relative to the whole connection).

    >>> fig = plot_stream("captures/demo.pcap", 0, "demo-0.png")                    # doctest: +SKIP
    >>> fig = plot_stream(report, 3, "s3.svg", direction="server->client")          # doctest: +SKIP
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    _check_suffix(out)  # before the (slow) analysis
    report, packets, streams = _load(source, packets)
    conns = report.connections
    row = conns[conns["stream"] == stream]
    if not len(row):
        raise StreamNotFound(f"{report.capture}: no stream {stream} (streams 0-{len(conns) - 1})")
    conn = row.iloc[0]
    pk = packets[streams == stream].sort_values("frame", kind="stable")
    from_client = ((pk["src"].astype(str) == str(conn["client"])) &
                   (pk["sport"].astype(np.int64) == int(conn["client_port"]))).to_numpy()
    sender = pk[from_client if direction == "client->server" else ~from_client]
    receiver = pk[~from_client if direction == "client->server" else from_client]
    t0 = float(pk["ts"].min()) if len(pk) else 0.0
    base = _base(sender)
    # relative numbers over the whole direction first (unwrapping needs every packet), then the window
    sender = sender.assign(seq_rel=_unwrapped(sender["seq_raw"].to_numpy(np.int64), base))
    receiver = receiver[(receiver["flags"].astype(np.int64) & TH_ACK) != 0]
    receiver = receiver.assign(ack_rel=_unwrapped(receiver["ack_raw"].to_numpy(np.int64), base))
    if time_range is not None:
        sender, receiver = (_within(df, t0, time_range) for df in (sender, receiver))

    fig = _new_figure(size)
    ax = fig.add_subplot()
    seq_rel, span = _draw_data(ax, sender, t0, report.retransmissions, stream, direction)
    scale = _receiver_wscale(report.handshakes, stream, direction)
    ack_lo_hi = _draw_acks(ax, receiver, t0, scale)
    _draw_findings(ax, report.events, stream, direction, sender, receiver, t0)
    _focus(ax, seq_rel, span, ack_lo_hi)
    src = f"{conn['client']}:{conn['client_port']}"
    dst = f"{conn['server']}:{conn['server_port']}"
    if direction == "server->client":
        src, dst = dst, src
    ax.set_title(f"stream {stream}: {src} \u2192 {dst} ({direction}), {Path(report.capture).name}")
    ax.set_xlabel("time since the connection's first packet (s)")
    ax.set_ylabel("relative sequence number")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        order = {name: i for i, name in enumerate(LEGEND_ORDER)}
        pairs = sorted(zip(handles, labels), key=lambda hl: order.get(hl[1], len(order)))
        ax.legend(*zip(*pairs), loc="upper left", fontsize="small")
    fig.tcp_stream = {"stream": stream, "direction": direction, "capture": report.capture,
                      "bytes": {"client->server": int(conn["client_bytes"]),
                                "server->client": int(conn["server_bytes"])}}
    _save(fig, out)
    return fig


def _base(sender: pd.DataFrame) -> int:
    """The direction's ISN (its SYN's seq), else first seq - 1 so the first byte is 1, as Wireshark shows it."""
    if not len(sender):
        return 0
    syn = sender[(sender["flags"].astype(np.int64) & TH_SYN) != 0]
    first = syn.iloc[0] if len(syn) else sender.iloc[0]
    return int(first["seq_raw"]) - (0 if len(syn) else 1)


def _receiver_wscale(handshakes: pd.DataFrame, stream: int, direction: str) -> int:
    """Shift of the receiver's advertised window: its own wscale, when both sides offered one (RFC 7323)."""
    hs = handshakes[handshakes["stream"] == stream]
    if not len(hs):
        return 0
    c, s = hs.iloc[0]["wscale_client"], hs.iloc[0]["wscale_server"]
    if pd.isna(c) or pd.isna(s):
        return 0
    return int(s if direction == "client->server" else c)


def _within(df: pd.DataFrame, t0: float, time_range: tuple[float | None, float | None]) -> pd.DataFrame:
    t = df["ts"].to_numpy(float) - t0
    start, end = time_range
    keep = np.ones(len(df), dtype=bool)
    if start is not None:
        keep &= t >= start
    if end is not None:
        keep &= t <= end
    return df[keep]


def _draw_data(ax, sender: pd.DataFrame, t0: float, retransmissions: pd.DataFrame, stream: int,
               direction: str) -> tuple[np.ndarray, np.ndarray]:
    seq_rel = sender["seq_rel"].to_numpy(np.int64)
    flags = sender["flags"].to_numpy(np.int64)
    span = sender["payload_len"].to_numpy(np.int64) + ((flags & TH_SYN) != 0) + ((flags & TH_FIN) != 0)
    t = sender["ts"].to_numpy(float) - t0
    frames = sender["frame"].to_numpy(np.int64)
    rx = retransmissions[(retransmissions["stream"] == stream) & (retransmissions["direction"] == direction)]
    kind_of = dict(zip(rx["frame"].astype(np.int64), rx["kind"]))
    marked = np.array([f in kind_of for f in frames], dtype=bool)
    plain = (span > 0) & ~marked
    segs = np.stack([np.column_stack([t[plain], seq_rel[plain]]),
                     np.column_stack([t[plain], seq_rel[plain] + span[plain]])], axis=1)
    data = LineCollection(segs, colors=COLOURS["data"], linewidths=1.2, label="data segment", gid="data")
    data.frames = frames[plain]
    ax.add_collection(data)
    seen: set[str] = set()
    for i in np.flatnonzero(marked):
        kind = kind_of[frames[i]]
        top = seq_rel[i] + max(int(span[i]), 0)
        ax.plot([t[i], t[i]], [seq_rel[i], top], color=COLOURS.get(kind, "tab:gray"), linewidth=2,
                marker="_", markersize=5, gid=f"{kind}:{frames[i]}",
                label=kind.replace("_", " ") if kind not in seen else "_nolegend_")
        seen.add(kind)
    if not plain.any() and not marked.any():
        ax.text(0.5, 0.5, f"no data segments {direction}", transform=ax.transAxes, ha="center")
    return seq_rel, span


def _focus(ax, seq_rel: np.ndarray, span: np.ndarray, ack_lo_hi: tuple[int, int] | None) -> None:
    """Fit the y axis to the data and ACKs; the window line, often far above, is clipped."""
    ax.autoscale_view()
    lo = [int(seq_rel.min())] if len(seq_rel) else []
    hi = [int((seq_rel + span).max())] if len(seq_rel) else []
    if ack_lo_hi:
        lo.append(ack_lo_hi[0])
        hi.append(ack_lo_hi[1])
    if lo:
        pad = max(1.0, 0.04 * (max(hi) - min(lo)))
        ax.set_ylim(min(lo) - pad, max(hi) + pad)


def _draw_acks(ax, acks: pd.DataFrame, t0: float, wscale: int) -> tuple[int, int] | None:
    """Draw the receiver's ACK line, ACK + window and SACK blocks; returns the ACK range drawn."""
    if not len(acks):
        return None
    t = acks["ts"].to_numpy(float) - t0
    ack_rel = acks["ack_rel"].to_numpy(np.int64)
    syn = (acks["flags"].to_numpy(np.int64) & TH_SYN) != 0
    window = acks["window"].to_numpy(np.int64) << np.where(syn, 0, wscale)  # never scaled in a SYN
    ax.step(t, ack_rel, where="post", color=COLOURS["ack"], linewidth=1.0, label="ACK", gid="ack")
    ax.step(t, ack_rel + window, where="post", color=COLOURS["window"], linewidth=0.8, linestyle="--",
            label="ACK + window", gid="window")
    lo_hi = (int(ack_rel.min()), int(ack_rel.max()))
    if "sack_count" not in acks or not (acks["sack_count"].to_numpy() > 0).any():
        return lo_hi
    segs = []
    ack_raw = acks["ack_raw"].to_numpy(np.int64)
    for i in range(1, 5):
        le, re = acks[f"sack{i}_le"].to_numpy(np.int64), acks[f"sack{i}_re"].to_numpy(np.int64)
        has = acks["sack_count"].to_numpy() >= i
        lo = ack_rel[has] + _centred(le[has] - ack_raw[has])
        hi = ack_rel[has] + _centred(re[has] - ack_raw[has])
        segs += [[(x, a), (x, b)] for x, a, b in zip(t[has], lo, hi)]
    ax.add_collection(LineCollection(segs, colors=COLOURS["sack"], linewidths=3, alpha=0.6, label="SACK block",
                                     gid="sack"))
    return lo_hi


def _draw_findings(ax, events: pd.DataFrame, stream: int, direction: str, sender: pd.DataFrame,
                   receiver: pd.DataFrame, t0: float) -> None:
    """The ``events`` findings of this graph: the receiver's zero-window periods (shaded up to its next
    packet with an open window), duplicate ACKs and capture gaps on its ACK line, and the sender's segments
    after a gap."""
    ev = events[events["stream"] == stream]
    mine = ev[ev["direction"] == direction]
    theirs = ev[ev["direction"] == OTHER[direction]]
    ack_at = dict(zip(receiver["frame"].astype(np.int64), receiver["ack_rel"]))
    seq_at = dict(zip(sender["frame"].astype(np.int64), sender["seq_rel"]))
    t_rx = receiver["ts"].to_numpy(float) - t0
    open_at = t_rx[receiver["window"].to_numpy(np.int64) > 0]
    first = True
    for frame, ts in zip(theirs["frame"][theirs["event"] == "zero_window"].astype(np.int64),
                         theirs["ts"][theirs["event"] == "zero_window"].astype(float)):
        t = ts - t0
        later = open_at[open_at > t]
        ax.axvspan(t, later[0] if len(later) else t, color=COLOURS["zero_window"], alpha=0.25, linewidth=0,
                   gid=f"zero_window:{frame}", label="zero window" if first else "_nolegend_")
        first = False
    for kind, rows, at, marker, label in (("duplicate_ack", theirs, ack_at, "x", "duplicate ACK"),
                                          ("capture_gap", theirs, ack_at, "D", "capture gap"),
                                          ("lost_segment", mine, seq_at, "v", "after a gap")):
        sel = rows[rows["event"] == kind]
        first = True
        for frame, ts in zip(sel["frame"].astype(np.int64), sel["ts"].astype(float)):
            if frame not in at:
                continue
            ax.plot([ts - t0], [at[frame]], linestyle="none", marker=marker, markersize=5, color=COLOURS[kind],
                    gid=f"{kind}:{frame}", label=label if first else "_nolegend_")
            first = False


SEGMENT_MARKS = ("retransmission", "fast_retransmission", "spurious_retransmission", "syn_retransmission",
                 "out_of_order", "duplicate")
FINDING_MARKS = ("zero_window", "duplicate_ack", "capture_gap", "lost_segment")


def _marks(fig: Figure, kinds: tuple[str, ...]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for ax in fig.axes:
        for artist in (*ax.get_lines(), *ax.patches, *ax.collections):
            kind, _, frame = (artist.get_gid() or "").partition(":")
            if kind in kinds and frame.isdigit():
                out.setdefault(kind, []).append(int(frame))
    return {k: sorted(v) for k, v in sorted(out.items())}


def marked_frames(fig: Figure) -> dict[str, list[int]]:
    """The frames drawn as marked segments (the retransmissions table's kinds), read back from the figure's
    artists (their gid)."""
    return _marks(fig, SEGMENT_MARKS)


def finding_marks(fig: Figure) -> dict[str, list[int]]:
    """The frames of the events-table findings drawn on a time-sequence graph, by kind."""
    return _marks(fig, FINDING_MARKS)


# ---- data RTT samples --------------------------------------------------------------------------------
def plot_rtt_samples(source, stream: int, out: str | os.PathLike | None = None, *,
                     packets: pd.DataFrame | None = None, size: tuple[float, float] = (10, 4.5)) -> Figure:
    """The data RTT samples of connection ``stream`` over time, one series per direction of the data:
    Wireshark's ``tcp.analysis.ack_rtt`` (a segment to the first ACK exactly covering it); samples of
    segments sent more than once (Karn's rule: ambiguous) in their own colour. ``source`` is a capture path
    or a ``Report``. Each series is one artist, gid ``rtt_samples:<direction>:<sent once|resent>``, whose
    ``frames`` attribute lists the ACK frame of each sample.

    >>> fig = plot_rtt_samples("trace.pcap", 3, "rtt3.png")                         # doctest: +SKIP
    """
    from ..decode import read_packets
    from ..tcp import Engine

    _check_suffix(out)
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else source.capture
    if packets is None:
        packets = source.packets if not isinstance(source, (str, os.PathLike)) and source.packets is not None \
            else read_packets(path)
    engine = Engine(rtt_samples=True)
    engine.feed(packets)
    tables = engine.finish()
    conns = tables.connections
    if not (conns["stream"] == stream).any():
        raise StreamNotFound(f"{path}: no stream {stream} (streams 0-{len(conns) - 1})")
    conn = conns[conns["stream"] == stream].iloc[0]
    samples = tables.rtt_samples[tables.rtt_samples["stream"] == stream]
    t0 = float(conn["first_ts"])
    fig = _new_figure(size)
    ax = fig.add_subplot()
    for direction, marker in zip(DIRECTIONS, ("o", "s")):
        for karn, colour, what in ((True, "rtt_sample", "sent once"), (False, "rtt_sample_resent", "resent")):
            sel = samples[(samples["direction"] == direction) & (samples["karn"] == karn)]
            if not len(sel):
                continue
            (line,) = ax.plot(sel["ts"].to_numpy(float) - t0, sel["rtt"].to_numpy(float) * 1e3, linestyle="none",
                              marker=marker, markersize=3.5, color=COLOURS[colour], alpha=0.8 if karn else 1.0,
                              gid=f"rtt_samples:{direction}:{what}", label=f"{direction} data, {what} (n={len(sel)})")
            line.frames = sel["frame"].to_numpy(np.int64)  # the ACK of each sample, in drawing order
    if not len(samples):
        ax.text(0.5, 0.5, "no RTT samples: no ACK covers a data segment exactly", transform=ax.transAxes,
                ha="center")
    else:
        ax.legend(fontsize="small")
    ax.set_title(f"stream {stream}: {conn['client']}:{conn['client_port']} \u2194 {conn['server']}:"
                 f"{conn['server_port']}, data RTT samples, {Path(path).name}")
    ax.set_xlabel("time since the connection's first packet (s)")
    ax.set_ylabel("RTT (ms): segment to its ACK")
    ax.grid(True, alpha=0.3)
    _save(fig, out)
    return fig


# ---- handshake RTT distribution ----------------------------------------------------------------------
def plot_rtt(reports, out: str | os.PathLike | None = None, *, size: tuple[float, float] = (10, 4.5)) -> Figure:
    """Histogram and ECDF of ``handshake_rtt`` (ms) over established connections, one series per report.

    As the summary does (Karn, ``report.path_rtt``), handshakes whose SYN or SYN-ACK was retried are left
    out, and counted in the title: their RTT includes a retransmission timeout, not just the path.
    ``reports``: a Report, a list of them, or a handshakes DataFrame.

    >>> fig = plot_rtt(analyzer.analyze("captures/demo.pcap"), "rtt.png")          # doctest: +SKIP
    """
    if isinstance(reports, pd.DataFrame) or not isinstance(reports, (list, tuple)):
        reports = [reports]
    fig = _new_figure(size)
    hist, ecdf = fig.subplots(1, 2)
    total = retried = 0
    for rep in reports:
        hs, name = (rep, "handshakes") if isinstance(rep, pd.DataFrame) else (rep.handshakes, Path(rep.capture).name)
        retries = [hs[c] if c in hs else np.zeros(len(hs)) for c in ("syn_retries", "synack_retries")]
        clean = path_rtt(hs["outcome"], retries)
        retried += int(np.count_nonzero((hs["outcome"] == "established").to_numpy(bool) & ~clean))
        ms = pd.to_numeric(hs["handshake_rtt"][clean], errors="coerce").dropna().to_numpy(float) * 1e3
        total += len(ms)
        if not len(ms):
            continue
        label = f"{name} (n={len(ms)})"
        hist.hist(ms, bins=min(50, max(5, int(np.sqrt(len(ms))) * 2)), alpha=0.6, label=label, gid=f"rtt_hist:{name}")
        xs = np.sort(ms)
        ecdf.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=label, gid=f"rtt_ecdf:{name}")
    hist.set_xlabel("handshake RTT (ms): SYN to the client's ACK")
    hist.set_ylabel("connections")
    ecdf.set_xlabel("handshake RTT (ms)")
    ecdf.set_ylabel("fraction of connections \u2264 x")
    ecdf.set_ylim(0, 1.02)
    for ax in (hist, ecdf):
        ax.grid(True, alpha=0.3)
        if total:
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no established handshakes without retries", transform=ax.transAxes, ha="center")
    left_out = f" ({retried} with a retried SYN or SYN-ACK left out)" if retried else ""
    fig.suptitle(f"Handshake RTT over {total} established connections without retries{left_out}")
    _save(fig, out)
    return fig
