"""The TLS demo's commands: certs, tls-server, tls-client, demo.

``cli.py`` registers them lazily. Each command parses, makes one library call and prints; library
errors become one line on stderr and exit code 1.
"""
from __future__ import annotations

import logging
import sys

import click

from ..demo.server import (DEFAULT_BYTES, DEFAULT_HOST, DEFAULT_PORT, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_BYTES,
                           check_timeout)
from ..errors import AnalyzerError
from .console import fail, out, prepare_kernels, print_batch, print_handshake_table, print_retransmission_summary

DEFAULT_CERTS = "demo-certs"
EXIT_INTERRUPTED = 130


def _seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """A timeout option: finite and above zero (0, negatives, nan and inf are usage errors)."""
    try:
        return check_timeout(param.name or "timeout", value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a finite number of seconds above 0") from None


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
    from ..demo.certs import make_certs

    try:
        paths = make_certs(directory, expired=expired, days=days)
    except AnalyzerError as exc:
        fail(exc)
    for p in (paths.ca_cert, paths.server_cert, paths.server_key, paths.client_cert, paths.client_key):
        click.echo(str(p))


def _check_certs(directory: str) -> None:
    from ..demo.certs import cert_paths

    p = cert_paths(directory)
    missing = [f.name for f in (p.ca_cert, p.server_cert, p.server_key, p.client_cert, p.client_key)
               if not f.exists()]
    if missing:
        fail(AnalyzerError(f"{directory}: missing {', '.join(missing)}; make them with: "
                            f"tcp-analyzer certs {directory}"))


@click.command("tls-server")
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--certs", "certs_dir", type=click.Path(file_okay=False), default=DEFAULT_CERTS, show_default=True)
@click.option("--bytes", "nbytes", type=click.IntRange(0, MAX_BYTES), default=DEFAULT_BYTES, show_default=True,
              help="bytes sent to a client that asks with a plain GET")
@click.option("--handshake-timeout", type=float, callback=_seconds, default=HANDSHAKE_TIMEOUT, show_default=True,
              help="seconds a connection has for everything before its certificate is accepted")
@click.option("--idle-timeout", type=float, callback=_seconds, default=IDLE_TIMEOUT, show_default=True,
              help="seconds an authenticated client may stay silent")
def tls_server_cmd(host, port, certs_dir, nbytes, handshake_timeout, idle_timeout):
    """Run the demo TLS server (mutual certificates) until Ctrl-C.

    Requires a client certificate from the demo CA with CN DemoClt; sends the time, then
    the bytes asked for. Every rejected client is logged with its reason.

    \b
    Example:
      tcp-analyzer certs demo-certs
      tcp-analyzer tls-server --certs demo-certs --bytes 2000000
    """
    from ..demo.server import DemoServer

    _check_certs(certs_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        server = DemoServer(certs_dir, host=host, port=port, nbytes=nbytes, handshake_timeout=handshake_timeout,
                            idle_timeout=idle_timeout).start()
    except AnalyzerError as exc:  # a certificate or key that cannot be loaded: the message names it
        fail(exc)
    except OSError as exc:
        fail(AnalyzerError(f"cannot serve on {host}:{port}: {exc.strerror or exc}"))
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
    from ..demo.client import fetch

    _check_certs(certs_dir)
    try:
        r = fetch(host, port, certs=certs_dir, nbytes=nbytes, server_hostname=server_name)
    except AnalyzerError as exc:  # DemoClientError, CertificateError
        fail(exc)
    click.echo(f"server time: {r.server_time}")
    click.echo(f"received:    {r.nbytes} bytes{'' if r.data_ok else ' (content does not match the pattern)'}")
    click.echo(f"TLS:         {r.tls_version} {r.cipher}")
    click.echo(f"server CN:   {r.peer_cn}")


@click.command("demo")
@click.option("--clients", type=click.IntRange(1, 500), default=3, show_default=True)
@click.option("--loss", type=click.FloatRange(0, 100, min_open=True, max_open=True), default=None,
              help="drop PCT% of the demo port's packets on lo with nftables (root)")
@click.option("--bytes", "nbytes", type=click.IntRange(0, MAX_BYTES), default=DEFAULT_BYTES, show_default=True,
              help="bytes each client fetches")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="demo-report", show_default=True)
@click.option("-w", "--write", "pcap", type=click.Path(dir_okay=False), default=None,
              help="pcap to write (default: OUT/demo.pcap)")
def demo_cmd(clients, loss, nbytes, port, out_dir, pcap):
    """The TLS demo: mutual-TLS server and clients on loopback, captured live, analyzed.

    Without root (CAP_NET_RAW) it analyzes the bundled captures/demo.pcap instead.

    \b
    Example:
      sudo tcp-analyzer demo --clients 5
      sudo tcp-analyzer demo --loss 10 --bytes 2000000 -o lossy/
    """
    from ..demo.run import run_demo

    prepare_kernels()

    def on_client(r) -> None:
        out().print(f"client: {r.summary()}" if not isinstance(r, str) else f"client FAILED: {r}")

    try:
        result = run_demo(clients=clients, loss=loss, nbytes=nbytes, port=port, out_dir=out_dir, pcap=pcap,
                          on_batch=lambda b: print_batch(b, each_retransmission=False), on_client=on_client)
    except KeyboardInterrupt:
        click.echo("tcp-analyzer: demo interrupted; server, capture and loss rule stopped", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:  # SIGTERM or SIGHUP (demo.termination), after the same clean-up as Ctrl-C
        click.echo("tcp-analyzer: demo terminated; server, capture and loss rule stopped", err=True)
        raise
    except (AnalyzerError, ValueError) as exc:
        fail(exc)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    report = result.report
    print_handshake_table(report.handshakes)
    print_retransmission_summary(report.retransmissions)
    if result.nft_dropped is not None:
        out().print(f"nftables dropped {result.nft_dropped} packets ({loss:g}% of the port's packets on lo), "
                    f"{result.nft_dropped_data} of them carrying data")
    if not result.bundled:
        out().print(f"capture: {result.pcap} ({result.live.frames} frames); reports: {result.out_dir}/")
    elif result.out_dir is not None:
        out().print(f"reports: {result.out_dir}/")


