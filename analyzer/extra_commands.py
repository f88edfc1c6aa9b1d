"""The ``compare`` and ``plot`` commands (registered by ``analyzer.cli``): thin over compare.py and plot.py.

Exit codes as in ``analyzer.cli``: 0 done (compare: tshark and we agree), 1 input unreadable (compare:
they disagree), 2 usage.
"""
from __future__ import annotations

import json
import sys

import click

from .errors import AnalyzerError

EXIT_OK, EXIT_DIFFER = 0, 1  # usage errors (2) are raised as click.UsageError


def _fail(exc: Exception) -> None:
    click.echo(f"tcp-analyzer: {exc}", err=True)
    sys.exit(1)


@click.command("compare")
@click.argument("capture", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print counts and disagreements as JSON")
@click.option("--limit", type=int, default=200, show_default=True,
              help="list at most this many disagreements (0: all)")
def compare_cmd(capture: str, as_json: bool, limit: int) -> None:
    """Compare our labels with tshark's, frame by frame; exit 0 when they agree.

    Runs tshark 4.0 with pinned preferences (see analyzer/compare.py) and our engine on CAPTURE, prints
    precision / recall against tshark's tcp.analysis.retransmission and tcp.analysis.out_of_order, and
    every frame where the labels differ with both labels and our reason. Documented differences
    (frames we call duplicate captures, SYN-ACKs of a simultaneous open) are listed but do not count.
    Exit status: 0 they agree, 1 they differ or the capture could not be read, 2 usage.

    \b
    Example:
      tcp-analyzer compare trace.pcapng
      tcp-analyzer compare trace.pcap --json > agreement.json
    """
    from .compare import compare

    try:
        result = compare(capture)
    except AnalyzerError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2, default=str))
    else:
        _print_comparison(result, limit)
    sys.exit(EXIT_OK if result.agree else EXIT_DIFFER)


def _print_comparison(result, limit: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    c = result.counts
    version = result.tshark_version
    console.print(f"[bold]{result.capture}[/bold]: ours vs tshark {version}")
    if not version.startswith("4.0."):
        console.print(f"[yellow]note: our labels follow tshark 4.0's rules; {version} may label differently[/yellow]")
    per = Table(title="Flagged frames by class", title_justify="left")
    for col in ("class", "tshark", "ours", "tp", "fp", "fn", "precision", "recall", "F1"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for r in result.per_class.itertuples(index=False):
        per.add_row(r[0], str(r.tshark), str(r.ours), str(r.tp), str(r.fp), str(r.fn),
                    f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.f1:.3f}")
    per.add_row("[bold]any[/bold]", str(c["tshark_flagged"]), str(c["ours_flagged"]), str(c["tp"]), str(c["fp"]),
                str(c["fn"]), f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}")
    console.print(per)
    console.print(f"class agreement on frames both flag: {c['class_agreement']:.1%}; "
                  f"same finest kind: {c['exact_kind']:.1%}; documented differences: {c['documented']}")
    dis = result.disagreements
    if len(dis):
        dis = dis.sort_values(["documented", "frame"], kind="stable")  # real differences first
        shown = dis if limit <= 0 else dis.head(limit)
        table = Table(title=f"Disagreements ({len(dis)})", title_justify="left")
        for col in ("frame", "stream", "tshark", "ours", "difference", "our reason"):
            table.add_column(col, justify="right" if col in ("frame", "stream") else "left",
                             overflow="fold", no_wrap=col != "our reason")
        for r in shown.itertuples(index=False):
            diff = r.difference + (" (documented)" if r.documented else "")
            table.add_row(str(r.frame), "" if r.stream is None or r.stream != r.stream else str(r.stream),
                          r.tshark or "-", r.ours or "-", diff, r.reason)
        console.print(table)
        if len(shown) < len(dis):
            console.print(f"... {len(dis) - len(shown)} more (--limit 0 lists all)")
    verdict = "[green]agree[/green]" if result.agree else f"[red]disagree on {c['disagreements']} frames[/red]"
    console.print(f"verdict: {verdict}")


@click.command("plot")
@click.argument("capture", type=click.Path(dir_okay=False))
@click.option("-s", "--stream", type=int, help="connection to draw (tcp.stream number)")
@click.option("--rtt", is_flag=True, help="draw the handshake RTT distribution instead")
@click.option("--reverse", is_flag=True, help="draw the server->client direction (default: client->server)")
@click.option("--start", type=float, help="draw from this time (s since the connection's first packet)")
@click.option("--end", type=float, help="draw up to this time (s since the connection's first packet)")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="image file: .png, .svg or .pdf "
              "[default: <capture>-stream<N>.png or <capture>-rtt.png]")
def plot_cmd(capture: str, stream: int | None, rtt: bool, reverse: bool, start: float | None, end: float | None,
             out: str | None) -> None:
    """Draw a time-sequence (Stevens) graph of one connection, or the handshake RTT distribution.

    The graph shows one direction's data segments as bars from seq to seq+len against time, the other
    side's ACK line, ACK + window and SACK blocks, and each retransmission kind and out-of-order
    segment in its own colour.

    \b
    Examples:
      tcp-analyzer plot trace.pcap --stream 3 -o stream3.png
      tcp-analyzer plot trace.pcap --stream 3 --reverse -o stream3-down.svg
      tcp-analyzer plot trace.pcap --stream 3 --start 0.5 --end 2 -o zoom.png
      tcp-analyzer plot trace.pcap --rtt -o rtt.png
    """
    from pathlib import Path

    from .plot import StreamNotFound, plot_rtt, plot_stream
    from .report import analyze

    if rtt == (stream is not None):
        raise click.UsageError("give exactly one of --stream N or --rtt")
    name = Path(capture).name
    out = out or (f"{name}-rtt.png" if rtt else f"{name}-stream{stream}.png")
    if Path(out).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise click.BadParameter(f"{out}: use a .png, .svg or .pdf file name", param_hint="--out")
    try:
        if rtt:
            plot_rtt(analyze(capture), out)
        else:
            fig = plot_stream(capture, stream, out, direction="server->client" if reverse else "client->server",
                              time_range=(start, end) if start is not None or end is not None else None)
            sent = fig.tcp_stream["bytes"]
            if sent["server->client" if reverse else "client->server"] < sent["client->server" if reverse
                                                                              else "server->client"]:
                other = "client->server (without --reverse)" if reverse else "server->client (--reverse)"
                click.echo(f"note: stream {stream} carries more data {other}", err=True)
    except (AnalyzerError, StreamNotFound) as exc:
        _fail(exc)
    click.echo(f"wrote {out}")
    sys.exit(EXIT_OK)


COMMANDS = [compare_cmd, plot_cmd]
