"""What the commands print: ``analyze``'s progress bar and summary; live events and the demo's tables.

rich (and pandas, for the live tables) are imported when something is shown, not when this module is:
``analyze`` starts without them.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:  # rich is imported when something is shown (not on the analyze path's start-up)
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.table import Table

EXIT_ERROR = 1  # some input could not be read, or the command failed (the codes are listed in cli.py)
PROGRESS_AFTER_S = 1.0  # show the bar only for work that takes longer than this


def fail(exc: BaseException, code: int = EXIT_ERROR) -> NoReturn:
    """End a command with the one-line message of ``exc`` on stderr and exit ``code`` (1 by default)."""
    import click

    click.echo(f"tcp-analyzer: {exc}", err=True)
    sys.exit(code)


def prepare_kernels(quiet: bool = False) -> None:
    """Compile the packet kernels now if this install has not yet (``analyzer.report.kernels``), saying so in
    one line on stderr, instead of a silent wait in the middle of the first analysis."""
    from ..jit import cache_ready

    if cache_ready():
        return
    from ..report.kernels import EXPECTED_SECONDS, warm

    if not quiet:
        print(f"tcp-analyzer: compiling the packet kernels once, about {EXPECTED_SECONDS} s", file=sys.stderr,
              flush=True)
    warm()


class Progress:
    """A byte-based progress bar on stderr, silent when stderr is not a terminal or work is quick. With
    ``summary``, the first update also imports what ``print_summary`` will need."""

    def __init__(self, enabled: bool = True, label: str = "", summary: bool = False):
        self.enabled = enabled and sys.stderr.isatty()
        self.label = label
        self._bar: RichProgress | None = None
        self._task = None
        self._start = time.monotonic()
        self._preload = summary  # until the first update

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, done: int, total: int) -> None:
        if self._preload:
            self._preload = False
            preload()  # the summary's modules, imported while the reader decodes the next batch
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._start < PROGRESS_AFTER_S:
                return
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task(self.label, total=total or None)
            self._bar.start()
        self._bar.update(self._task, completed=done)


def preload() -> None:
    """Import what ``print_summary`` uses (rich's console and tables)."""
    import rich.box  # noqa: F401
    import rich.console  # noqa: F401
    import rich.table  # noqa: F401 (imported for print_summary)


def _rtt(seconds) -> str:
    """Milliseconds with 3 decimals, or '-' when missing."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(value) else f"{value * 1000:.3f}"


def _ms(seconds) -> str:
    text = _rtt(seconds)
    return text if text == "-" else text + " ms"


def _frame(v) -> str:
    try:
        return "-" if v is None or math.isnan(float(v)) else str(int(v))
    except TypeError:  # pandas' NA
        return "-"


CAPTURE_LOSS_WARN = 0.1  # percent of data bytes the capture missed above which the summary warns


def _n(count: int, noun: str) -> str:
    """'1 connection', '2 connections', '1,500 frames'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _counts(title: str, label: str, counts: dict) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE, title_justify="left")
    table.add_column(label)
    table.add_column("count", justify="right")
    for k, v in counts.items():
        table.add_row(k, f"{v:,}")
    if not counts:
        table.add_row("(none)", "0")
    return table


def print_summary(s: dict, dest: Path | None = None, console: Console | None = None) -> None:
    """Print the summary dict of one capture as a few small tables."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    con = console or Console(highlight=False)
    left_out = f" ({s['filtered_out_frames']:,} more left out by the filter)" if s.get("filtered_out_frames") else ""
    con.print(f"[bold]{s['capture']}[/bold]: {_n(s['frames'], 'frame')}{left_out}, {_n(s['tcp_segments'], 'TCP segment')}, "
              f"{_n(s['connections'], 'connection')}")
    con.print(_counts("Handshakes", "outcome", s["handshakes"]))
    rtt = s["handshake_rtt_seconds"]
    if rtt:
        con.print(f"Handshake RTT over {rtt['n']:,} established without retries: min {_ms(rtt['min'])}, median {_ms(rtt['p50'])}, "
                  f"p90 {_ms(rtt['p90'])}, p99 {_ms(rtt['p99'])}, max {_ms(rtt['max'])}")
    con.print(_counts("Retransmissions", "kind", s["retransmissions"]))
    if s["top_retransmitting_connections"]:
        top = Table(title="Connections with most retransmitted bytes", box=box.SIMPLE, title_justify="left")
        for col in ("stream", "client", "server", "retransmissions", "bytes"):
            top.add_column(col, justify="right" if col in ("stream", "retransmissions", "bytes") else "left")
        for r in s["top_retransmitting_connections"]:
            top.add_row(str(r["stream"]), r["client"], r["server"], f"{r['retransmissions']:,}",
                        f"{r['retransmitted_bytes']:,}")
        con.print(top)
    if s.get("events"):
        con.print(_counts("Events (expert findings)", "event", s["events"]))
    loss = s.get("capture_loss") or {}
    if loss.get("missed_bytes") or loss.get("lost_segments") or loss.get("ack_lost_segments"):
        con.print(f"Capture loss: {loss['percent']:.3g}% of data bytes acknowledged but never captured "
                  f"({loss['missed_bytes']:,} of {loss['bytes']:,}); {_n(loss['lost_segments'], 'segment')} after a "
                  f"gap, {_n(loss['ack_lost_segments'], 'ACK')} of unseen data", soft_wrap=True)
        if loss["percent"] > CAPTURE_LOSS_WARN:
            con.print(f"[yellow]Warning:[/yellow] the capture itself dropped packets ({loss['percent']:.3g}% of the "
                      "data bytes); some 'retransmissions' may be the capture's gaps", soft_wrap=True)
    if s["skipped_frames"]:
        con.print("Skipped frames: " + "; ".join(f"{v:,} {k}" for k, v in s["skipped_frames"].items()))
    for p in s["problems"]:
        con.print(f"[red]Problem:[/red] {p}")
    if dest is not None:
        con.print(f"Tables written to {dest}/", soft_wrap=True)  # a long path is never cut in two


# -- live events and the demo's tables ---------------------------------------------------------------
_out: Console | None = None


def out() -> Console:
    """The console for live events and tables; piped output gets 120 columns, not rich's 80, so the
    handshake table is never squeezed."""
    global _out
    if _out is None:
        from rich.console import Console

        _out = Console(highlight=False, soft_wrap=True,
                       width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120)
    return _out


def print_handshake(row) -> None:
    out().print(f"handshake  stream {row.stream}  {row.client}:{row.client_port} -> {row.server}:{row.server_port}  "
                f"{row.outcome}  rtt {_ms(row.handshake_rtt)}  (SYN #{_frame(row.syn_frame)}, "
                f"SYN-ACK #{_frame(row.synack_frame)}, ACK #{_frame(row.ack_frame)})")


def print_retransmission(row) -> None:
    out().print(f"{row.kind:<24} frame {row.frame}  stream {row.stream}  {row.src}:{row.sport} -> "
                f"{row.dst}:{row.dport}  seq {row.seq} len {row.len}  ({row.reason})")


def print_batch(batch, each_retransmission: bool = True) -> None:
    """Print a live batch's new handshakes, and its retransmissions (one line each, or a count)."""
    if batch.handshakes is not None:
        for row in batch.handshakes.itertuples(index=False):
            print_handshake(row)
    rx = batch.retransmissions
    if rx is not None and len(rx):
        if each_retransmission:
            for row in rx.itertuples(index=False):
                print_retransmission(row)
        else:
            kinds = ", ".join(f"{n} {k}" for k, n in rx["kind"].value_counts().items())
            out().print(f"frames {batch.first_frame}-{batch.first_frame + batch.frames - 1}: {kinds}")


def print_handshake_table(hs) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="Handshakes (client port; frames; SYN retries; RTTs in ms)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("stream", "port", "outcome", "SYN", "SYN-ACK", "ACK", "retries", "server", "client", "total"):
        table.add_column(col, justify="left" if col == "outcome" else "right", no_wrap=col == "outcome")
    for r in hs.itertuples(index=False):
        table.add_row(str(r.stream), str(r.client_port), r.outcome, _frame(r.syn_frame), _frame(r.synack_frame),
                      _frame(r.ack_frame), str(r.syn_retries), _rtt(r.server_rtt), _rtt(r.client_rtt),
                      _rtt(r.handshake_rtt))
    out().print(table)


def print_retransmission_summary(rx, show: int = 10) -> None:
    if not len(rx):
        out().print("Retransmissions: none")
        return
    kinds = ", ".join(f"{n} {k}" for k, n in rx["kind"].value_counts().items())
    per_stream = ", ".join(f"stream {s}: {n}" for s, n in rx["stream"].value_counts().sort_index().items())
    out().print(f"Retransmissions: {len(rx)} ({kinds}); {per_stream}")
    for row in rx.head(show).itertuples(index=False):
        print_retransmission(row)
    if len(rx) > show:
        out().print(f"... {len(rx) - show} more in retransmissions.csv")
