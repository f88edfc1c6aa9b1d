"""The ``plot`` command: thin over ``analyzer.report.plot``. Exit codes: 0 written, 1 input unreadable, 2 usage."""
from __future__ import annotations

import sys

import click

from ..errors import AnalyzerError
from .cli import CAPTURE
from .console import fail, prepare_kernels

EXIT_OK = 0


@click.command("plot")
@click.argument("capture", type=CAPTURE)
@click.option("-s", "--stream", type=int, help="connection to draw (tcp.stream number)")
@click.option("--rtt", is_flag=True, help="draw the handshake RTT distribution instead")
@click.option("--rtt-samples", is_flag=True, help="with --stream: draw the connection's data RTT samples over time")
@click.option("--reverse", is_flag=True, help="draw the server->client direction (default: client->server)")
@click.option("--start", type=float, help="draw from this time (s since the connection's first packet)")
@click.option("--end", type=float, help="draw up to this time (s since the connection's first packet)")
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="image file: .png, .svg or .pdf "
              "[default: <capture>-stream<N>.png or <capture>-rtt.png]")
def plot_cmd(capture: str, stream: int | None, rtt: bool, rtt_samples: bool, reverse: bool, start: float | None,
             end: float | None, out: str | None) -> None:
    """Draw a time-sequence (Stevens) graph of one connection, or the handshake RTT distribution.

    The graph shows one direction's data segments as bars from seq to seq+len against time, the other
    side's ACK line, ACK + window and SACK blocks, and each retransmission kind and out-of-order
    segment in its own colour, with the receiver's zero-window periods, duplicate ACKs and capture gaps.
    With --rtt-samples, the connection's data RTT samples (segment to ACK) over time instead.

    \b
    Examples:
      tcp-analyzer plot trace.pcap --stream 3 -o stream3.png
      tcp-analyzer plot trace.pcap --stream 3 --reverse -o stream3-down.svg
      tcp-analyzer plot trace.pcap --stream 3 --start 0.5 --end 2 -o zoom.png
      tcp-analyzer plot trace.pcap --stream 3 --rtt-samples -o rtt3.png
      tcp-analyzer plot trace.pcap --rtt -o rtt.png
    """
    from pathlib import Path

    from ..report import analyze
    from ..report.plot import StreamNotFound, plot_rtt, plot_rtt_samples, plot_stream

    prepare_kernels()

    if rtt == (stream is not None):
        raise click.UsageError("give exactly one of --stream N or --rtt")
    if rtt_samples and stream is None:
        raise click.UsageError("--rtt-samples draws one connection: give --stream N")
    if start is not None and end is not None and start > end:
        raise click.BadParameter(f"--start {start:g} is after --end {end:g}", param_hint="--start/--end")
    name = Path(capture).name
    out = out or (f"{name}-rtt.png" if rtt else f"{name}-stream{stream}-rtt.png" if rtt_samples
                  else f"{name}-stream{stream}.png")
    if Path(out).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise click.BadParameter(f"{out}: use a .png, .svg or .pdf file name", param_hint="--out")
    try:
        if rtt:
            plot_rtt(analyze(capture), out)
        elif rtt_samples:
            plot_rtt_samples(capture, stream, out)
        else:
            fig = plot_stream(capture, stream, out, direction="server->client" if reverse else "client->server",
                              time_range=(start, end) if start is not None or end is not None else None)
            sent = fig.tcp_stream["bytes"]
            if sent["server->client" if reverse else "client->server"] < sent["client->server" if reverse
                                                                              else "server->client"]:
                other = "client->server (without --reverse)" if reverse else "server->client (--reverse)"
                click.echo(f"note: stream {stream} carries more data {other}", err=True)
    except (AnalyzerError, StreamNotFound) as exc:
        fail(exc)
    click.echo(f"wrote {out}")
    sys.exit(EXIT_OK)

