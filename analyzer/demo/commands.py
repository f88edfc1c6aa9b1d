"""Click commands for the demo and live capture: certs, tls-server, tls-client, live, demo.

``analyzer/cli.py`` registers every command in ``COMMANDS``. Each command parses, makes one library
call and prints; library errors become one line on stderr and exit code 1.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import click
import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from ..errors import AnalyzerError
from .server import DEFAULT_BYTES, DEFAULT_HOST, DEFAULT_PORT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_BYTES

DEFAULT_CERTS = "demo-certs"
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130

# Piped output gets 120 columns, not rich's 80, so the handshake table is never squeezed.
out = Console(highlight=False, soft_wrap=True,
              width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120)


def _fail(exc: BaseException) -> None:
    click.echo(f"tcp-analyzer: {exc}", err=True)
    sys.exit(EXIT_ERROR)


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
    return "-" if v is None or pd.isna(v) else str(int(v))


# -- printing what the engine decides --------------------------------------------------------------
def print_handshake(row) -> None:
    out.print(f"handshake  stream {row.stream}  {row.client}:{row.client_port} -> {row.server}:{row.server_port}  "
              f"{row.outcome}  rtt {_ms(row.handshake_rtt)}  (SYN #{_frame(row.syn_frame)}, "
              f"SYN-ACK #{_frame(row.synack_frame)}, ACK #{_frame(row.ack_frame)})")


def print_retransmission(row) -> None:
    out.print(f"{row.kind:<24} frame {row.frame}  stream {row.stream}  {row.src}:{row.sport} -> "
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
            out.print(f"frames {batch.first_frame}-{batch.first_frame + batch.frames - 1}: {kinds}")


def print_handshake_table(hs: pd.DataFrame) -> None:
    table = Table(title="Handshakes (client port; frames; SYN retries; RTTs in ms)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("stream", "port", "outcome", "SYN", "SYN-ACK", "ACK", "retries", "server", "client", "total"):
        table.add_column(col, justify="left" if col == "outcome" else "right", no_wrap=col == "outcome")
    for r in hs.itertuples(index=False):
        table.add_row(str(r.stream), str(r.client_port), r.outcome, _frame(r.syn_frame), _frame(r.synack_frame),
                      _frame(r.ack_frame), str(r.syn_retries), _rtt(r.server_rtt), _rtt(r.client_rtt),
                      _rtt(r.handshake_rtt))
    out.print(table)


def print_retransmission_summary(rx: pd.DataFrame, show: int = 10) -> None:
    if not len(rx):
        out.print("Retransmissions: none")
        return
    kinds = ", ".join(f"{n} {k}" for k, n in rx["kind"].value_counts().items())
    per_stream = ", ".join(f"stream {s}: {n}" for s, n in rx["stream"].value_counts().sort_index().items())
    out.print(f"Retransmissions: {len(rx)} ({kinds}); {per_stream}")
    for row in rx.head(show).itertuples(index=False):
        print_retransmission(row)
    if len(rx) > show:
        out.print(f"... {len(rx) - show} more in retransmissions.csv")


# -- commands ----------------------------------------------------------------------------------------
@click.command("certs")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--expired", is_flag=True, help="server and client certificates whose validity has ended (tests)")
@click.option("--days", type=click.IntRange(1, 3650), default=7, show_default=True, help="validity")
def certs_cmd(directory, expired, days):
    """Make the demo CA, server and client certificates and keys in DIRECTORY.

    \b
    Writes DemoCA.pem/.key, DemoSvr.crt/.key (CN DemoSvr, SAN localhost,
    127.0.0.1, ::1) and DemoClt.crt/.key (CN DemoClt); keys are 0600.
    \b
    Example:
      tcp-analyzer certs demo-certs
      tcp-analyzer certs old-certs --expired
    """
    from .certs import make_certs

    paths = make_certs(directory, expired=expired, days=days)
    for p in (paths.ca_cert, paths.server_cert, paths.server_key, paths.client_cert, paths.client_key):
        click.echo(str(p))


def _check_certs(directory: str) -> None:
    from .certs import cert_paths

    p = cert_paths(directory)
    missing = [f.name for f in (p.ca_cert, p.server_cert, p.server_key, p.client_cert, p.client_key)
               if not f.exists()]
    if missing:
        _fail(AnalyzerError(f"{directory}: missing {', '.join(missing)}; make them with: "
                            f"tcp-analyzer certs {directory}"))


@click.command("tls-server")
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--certs", "certs_dir", type=click.Path(file_okay=False), default=DEFAULT_CERTS, show_default=True)
@click.option("--bytes", "nbytes", type=click.IntRange(0, MAX_BYTES), default=DEFAULT_BYTES, show_default=True,
              help="bytes sent to a client that asks with a plain GET")
@click.option("--handshake-timeout", type=float, default=HANDSHAKE_TIMEOUT, show_default=True)
@click.option("--idle-timeout", type=float, default=IDLE_TIMEOUT, show_default=True)
def tls_server_cmd(host, port, certs_dir, nbytes, handshake_timeout, idle_timeout):
    """Run the demo TLS server (mutual certificates) until Ctrl-C.

    Requires a client certificate from the demo CA with CN DemoClt; sends the time, then
    the bytes asked for. Every rejected client is logged with its reason.

    \b
    Example:
      tcp-analyzer certs demo-certs
      tcp-analyzer tls-server --certs demo-certs --bytes 2000000
    """
    from .server import DemoServer

    _check_certs(certs_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        server = DemoServer(certs_dir, host=host, port=port, nbytes=nbytes, handshake_timeout=handshake_timeout,
                            idle_timeout=idle_timeout).start()
    except (OSError, AnalyzerError) as exc:
        _fail(AnalyzerError(f"cannot serve on {host}:{port}: {getattr(exc, 'strerror', None) or exc}"))
    click.echo(f"serving on {server.address[0]}:{server.address[1]} (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo(f"stopped: {server.served} served, {len(server.rejections)} rejected", err=True)


@click.command("tls-client")
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--certs", "certs_dir", type=click.Path(file_okay=False), default=DEFAULT_CERTS, show_default=True)
@click.option("--bytes", "nbytes", type=click.IntRange(0, MAX_BYTES), default=None,
              help="bytes to ask for (default: the server's --bytes)")
@click.option("--server-name", default=None, help="name the server certificate must carry (default: --host)")
def tls_client_cmd(host, port, certs_dir, nbytes, server_name):
    """Connect to the demo server, verify it, print what came back.

    \b
    Example:
      tcp-analyzer tls-client --certs demo-certs
      tcp-analyzer tls-client --host localhost --bytes 1000
    """
    from .client import DemoClientError, fetch

    _check_certs(certs_dir)
    try:
        r = fetch(host, port, certs=certs_dir, nbytes=nbytes, server_hostname=server_name)
    except DemoClientError as exc:
        _fail(exc)
    click.echo(f"server time: {r.server_time}")
    click.echo(f"received:    {r.nbytes} bytes{'' if r.data_ok else ' (content does not match the pattern)'}")
    click.echo(f"TLS:         {r.tls_version} {r.cipher}")
    click.echo(f"server CN:   {r.peer_cn}")


@click.command("live")
@click.option("-i", "--interface", "iface", default="lo", show_default=True)
@click.option("-f", "--filter", "bpf", default=None, help="BPF filter, as tcpdump takes it")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="stop after S seconds")
@click.option("--count", type=click.IntRange(min=1), default=None, help="stop after N frames")
@click.option("-w", "--write", "pcap", type=click.Path(dir_okay=False), default="live.pcap", show_default=True)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="live-report", show_default=True)
def live_cmd(iface, bpf, duration, count, pcap, out_dir):
    """Capture live, print each handshake and retransmission as it is seen, write pcap and reports.

    Stops after --duration, --count or Ctrl-C. Needs root (or CAP_NET_RAW).

    \b
    Example:
      sudo tcp-analyzer live -i lo -f 'tcp port 15001' --duration 30 -w demo.pcap -o out/
    """
    from ..capture.live import LiveCapture

    try:
        capture = LiveCapture(iface, bpf, pcap_path=pcap, duration=duration, count=count)
        capture.open()
        click.echo(f"capturing on {iface}{' (' + bpf + ')' if bpf else ''}; Ctrl-C stops", err=True)
        result = capture.run(on_batch=print_batch)  # Ctrl-C inside ends the capture cleanly
        report = result.report()
        if report is not None:
            report.write(out_dir)
    except AnalyzerError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("tcp-analyzer: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"stopped ({result.stop_reason}): {result.frames} frames written to {pcap}"
               + (f"; reports in {out_dir}/" if report is not None else ""), err=True)


@click.command("demo")
@click.option("--clients", type=click.IntRange(1, 500), default=3, show_default=True)
@click.option("--loss", type=click.FloatRange(0, 100, min_open=True, max_open=True), default=None,
              help="drop PCT%% of the demo port's packets on lo with nftables (root)")
@click.option("--bytes", "nbytes", type=click.IntRange(0, MAX_BYTES), default=DEFAULT_BYTES, show_default=True,
              help="bytes each client fetches")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="demo-report", show_default=True)
@click.option("-w", "--write", "pcap", type=click.Path(dir_okay=False), default=None,
              help="pcap to write (default: OUT/demo.pcap)")
def demo_cmd(clients, loss, nbytes, port, out_dir, pcap):
    """The TLS demo: mutual-TLS server and clients on loopback, captured live, analyzed.

    Without root it analyzes the bundled captures/demo.pcap instead.

    \b
    Example:
      sudo tcp-analyzer demo --clients 5
      sudo tcp-analyzer demo --loss 10 --bytes 2000000 -o lossy/
    """
    from .run import run_demo

    def on_client(r) -> None:
        out.print(f"client: {r.summary()}" if not isinstance(r, str) else f"client FAILED: {r}")

    try:
        result = run_demo(clients=clients, loss=loss, nbytes=nbytes, port=port, out_dir=out_dir, pcap=pcap,
                          on_batch=lambda b: print_batch(b, each_retransmission=False), on_client=on_client)
    except KeyboardInterrupt:
        click.echo("tcp-analyzer: demo interrupted; server, capture and loss rule stopped", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (AnalyzerError, ValueError) as exc:
        _fail(exc)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    report = result.report
    print_handshake_table(report.handshakes)
    print_retransmission_summary(report.retransmissions)
    if result.nft_dropped is not None:
        out.print(f"nftables dropped {result.nft_dropped} packets ({loss:g}% of the port's packets on lo)")
    if not result.bundled:
        out.print(f"capture: {result.pcap} ({result.live.frames} frames); reports: {result.out_dir}/")
    elif result.out_dir is not None:
        out.print(f"reports: {result.out_dir}/")


COMMANDS = [certs_cmd, tls_server_cmd, tls_client_cmd, live_cmd, demo_cmd]
