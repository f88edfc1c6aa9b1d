"""The ``live`` command: capture on an interface, print what the engine decides as it comes, write reports."""
from __future__ import annotations

import sys

import click

from ..errors import AnalyzerError
from .console import fail, prepare_kernels, print_batch

EXIT_INTERRUPTED = 130


@click.command("live")
@click.option("-i", "--interface", "iface", default="lo", show_default=True)
@click.option("-f", "--filter", "bpf", default=None, help="BPF filter, as tcpdump takes it")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None, help="stop after S seconds")
@click.option("--count", type=click.IntRange(min=1), default=None, help="stop after N frames")
@click.option("-w", "--write", "pcap", type=click.Path(dir_okay=False), default="live.pcap", show_default=True)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="live-report", show_default=True)
def live_cmd(iface, bpf, duration, count, pcap, out_dir):
    """Capture live, print each handshake and retransmission as it is seen, write pcap and reports.

    Stops after --duration, --count or Ctrl-C. Needs root (CAP_NET_RAW). The pcap and the
    reports folder are checked before the capture starts.

    \b
    Example:
      sudo tcp-analyzer live -i lo -f 'tcp port 15001' --duration 30 -w demo.pcap -o out/
    """
    from ..report.live import analyze_live
    from ..sources.live import LiveCapture, output_folder

    try:
        capture = LiveCapture(iface, bpf, pcap_path=pcap, duration=duration, count=count)
        output_folder(out_dir)  # before the pcap is created (or truncated) by open()
        capture.open()
        prepare_kernels()  # (the kernel queues what comes meanwhile)
        click.echo(f"capturing on {iface}{' (' + bpf + ')' if bpf else ''}; Ctrl-C stops", err=True)
        run = analyze_live(capture, on_batch=print_batch)  # Ctrl-C inside ends the capture cleanly
        result, report = run.capture, run.report
        report.write(out_dir)
    except AnalyzerError as exc:
        fail(exc)
    except OSError as exc:  # a disk that fills up while capturing or writing the reports
        fail(AnalyzerError(f"{exc.filename or out_dir}: cannot write: {exc.strerror or exc}"))
    except KeyboardInterrupt:
        click.echo("tcp-analyzer: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"stopped ({result.stop_reason}): {result.frames} frames written to {pcap}"
               + f"; reports in {out_dir}/", err=True)
