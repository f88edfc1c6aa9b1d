"""What ``analyze`` prints: a progress bar on stderr (terminals only) and a readable summary on stdout."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported when something is shown (not on the analyze path's start-up)
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.table import Table

PROGRESS_AFTER_S = 1.0  # show the bar only for work that takes longer than this


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
    import rich.table  # noqa: F401


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


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
    con.print(f"[bold]{s['capture']}[/bold]: {s['frames']:,} frames, {s['tcp_segments']:,} TCP segments, "
              f"{s['connections']:,} connections")
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
    if s["skipped_frames"]:
        con.print("Skipped frames: " + "; ".join(f"{v:,} {k}" for k, v in s["skipped_frames"].items()))
    for p in s["problems"]:
        con.print(f"[red]Problem:[/red] {p}")
    if dest is not None:
        con.print(f"Tables written to {dest}/")
