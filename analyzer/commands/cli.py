"""The ``tcp-analyzer`` command: thin commands over the library.

Each command parses its options, makes one library call and prints or writes the result. Library
errors become one-line messages. Exit codes: 0 done, 1 some input could not be read or some table
could not be written, 2 usage (``compare`` adds 3: tshark missing).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..decode import TimeBound
from ..errors import AnalyzerError, NoCaptures
from ..report import FORMATS, analyze, summarise
from ..report.writers import OutputError, prepare_folder, remove_tables
from ..sources.files import STDIN, STDIN_NAME
from ..sources.merge import capture_files
from ..tcp.engine import CLOSE_DELAY, IDLE_TIMEOUT

EXIT_OK, EXIT_INPUT, EXIT_USAGE = 0, 1, 2

# Set by commands that leave nothing to clean up (analyze): the console script then ends the process
# without Python's teardown, which spends ~0.15 s freeing numba's and LLVM's objects one by one.
_quick_exit = False


# Commands defined in other modules, loaded only when asked for: `analyze` then starts without
# importing the TLS demo, scapy, matplotlib or the tshark comparison.
LAZY_COMMANDS = {
    "certs": ("analyzer.commands.demo", "certs_cmd", "Make the demo CA and the server and client certificates."),
    "tls-server": ("analyzer.commands.demo", "tls_server_cmd", "Run the demo TLS server (mutual certificates)."),
    "tls-client": ("analyzer.commands.demo", "tls_client_cmd", "Connect to the demo server, print what came back."),
    "live": ("analyzer.commands.live", "live_cmd", "Capture live; print each handshake and retransmission."),
    "demo": ("analyzer.commands.demo", "demo_cmd", "The TLS demo: server, clients, live capture, reports."),
    "compare": ("analyzer.commands.compare", "compare_cmd", "Compare our labels with tshark's, frame by frame."),
    "plot": ("analyzer.commands.plot", "plot_cmd", "Time-sequence graph of a connection, or the RTT distribution."),
}


class LazyGroup(click.Group):
    """A click group whose commands from LAZY_COMMANDS are imported on first use."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in LAZY_COMMANDS:
            import importlib

            module, attr, _ = LAZY_COMMANDS[name]
            cmd = getattr(importlib.import_module(module), attr)
            self.add_command(cmd, name)
        return cmd

    def format_commands(self, ctx, formatter):
        rows = [(name, (self.commands[name].get_short_help_str(60) if name in self.commands
                        else LAZY_COMMANDS[name][2])) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tcp-analyzer")
def cli() -> None:
    """Rebuild TCP connections from captures: handshakes, retransmissions, explained.

    \b
    Examples:
      tcp-analyzer analyze trace.pcapng -o out/
      tcp-analyzer demo
    """


def time_bound(text: str | None, param: click.Parameter | None = None) -> TimeBound | None:
    """``--start``/``--end``: epoch seconds, or ``+S`` after the capture's first frame; a usage error otherwise."""
    try:
        return None if text is None else TimeBound.parse(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


# A capture is any path: a folder, a missing or an unreadable file is one input error (exit 1), as is a
# file that is not a capture; click's own checks would make some of them usage errors (exit 2).
CAPTURE = click.Path(readable=False)


@cli.command("analyze")
@click.argument("captures", nargs=-1, required=True, type=CAPTURE)
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), default="tcp-analysis",
              show_default=True, help="folder for the tables (one subfolder per capture when several)")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True)
@click.option("--engine", type=click.Choice(["native", "pyshark"]), default="native", show_default=True,
              help="native: our reader; pyshark: tshark's dissectors through pyshark (slow)")
@click.option("--packets", is_flag=True, help="also write the packet table")
@click.option("-q", "--quiet", is_flag=True, help="print nothing but errors")
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable summary instead")
@click.option("-f", "--filter", "bpf", metavar="BPF", help="analyze only the frames this filter matches "
              "(tcpdump's syntax, e.g. 'tcp port 443'); frame numbers stay the file's")
@click.option("--start", callback=lambda ctx, param, text: time_bound(text, param), metavar="TIME",
              help="analyze frames at or after TIME: epoch seconds (1700000000.5), or +S for S seconds after "
                   "the capture's first frame (+5)")
@click.option("--end", callback=lambda ctx, param, text: time_bound(text, param), metavar="TIME",
              help="analyze frames before TIME (the same two forms)")
@click.option("--merge", is_flag=True, help="read the captures (files, or folders of them such as a rotated "
              "set) as one trace in time order, as mergecap; the tables get capture and capture_frame columns")
@click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), default=IDLE_TIMEOUT, show_default=True,
              metavar="SECONDS", help="a connection without a packet for this long has ended (Zeek's "
              "tcp_inactivity_timeout); a later packet on its 4-tuple starts a new one")
@click.option("--close-delay", type=click.FloatRange(min=0), default=CLOSE_DELAY, show_default=True,
              metavar="SECONDS", help="a connection that is over (FIN both ways, or RST) ends this long after its "
              "last packet (Zeek's tcp_close_delay); its rows are then written out and its memory freed")
def analyze_cmd(captures, out_dir, fmt, engine, packets, quiet, as_json, bpf, start, end, merge, idle_timeout,
                close_delay):
    """Analyze captures; write connections, handshakes and retransmissions tables.

    A folder's tables are replaced as a whole: tables of an earlier run there (another format, a
    packets table) are removed, and none are left for a capture that could not be read.
    CAPTURE `-` is standard input (a pipe from tcpdump -w - or zcat).

    \b
    Example:
      tcp-analyzer analyze trace.pcap -o out/ --format parquet
      tcp-analyzer analyze a.pcap b.pcapng -o out/    # out/a.pcap/, out/b.pcapng/
      tcp-analyzer analyze x/t.pcap y/t.pcap -o out/  # out/t.pcap/, out/t.pcap-2/
      tcp-analyzer analyze trace.pcap -f 'tcp port 443' --start +5 --end +10
      tcp-analyzer analyze --merge ring/ -o out/      # a rotated set as one trace
      tcpdump -i eth0 -w - | tcp-analyzer analyze - -o out/
    """
    from .console import Progress, prepare_kernels, print_summary

    if start is not None and end is not None and start.relative == end.relative and start.ns > end.ns:
        raise click.BadParameter("--start is after --end", param_hint="--start/--end")
    if engine != "native" and (bpf or start is not None or end is not None):
        raise click.UsageError("-f, --start and --end work with the native engine")
    if engine != "native" and (merge or STDIN in captures):
        raise click.UsageError("--merge and - (standard input) work with the native engine")
    if captures.count(STDIN) > 1:
        raise click.UsageError("- (standard input) can be read once")
    if merge:
        try:
            captures = (capture_files(list(captures)),)  # one input: the merged trace
        except NoCaptures as exc:
            raise click.UsageError(str(exc)) from None

    folders = [Path(out_dir)] if merge else output_folders(Path(out_dir), captures)
    try:
        prepare_folder(out_dir)  # before any analysis: a folder that cannot be written fails at once
    except OutputError as exc:
        click.echo(f"tcp-analyzer: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    summaries: list[dict] = []
    status = EXIT_OK
    for path, dest in zip(captures, folders):
        if engine == "native" and any(readable(p) for p in ([path] if isinstance(path, str) else path)):
            prepare_kernels(quiet or as_json)  # once, before the first capture that can be read
        try:
            prepare_folder(dest)
            with Progress(enabled=not quiet and not as_json, label="merge" if merge else label(path),
                          summary=not quiet and not as_json) as progress:
                report = analyze(path, engine=engine, packets=packets, progress=progress.update, bpf=bpf,
                                 start=start, end=end, merge=merge, idle_timeout=idle_timeout,
                                 close_delay=close_delay)
            report.write(dest, format=fmt)
        except AnalyzerError as exc:
            click.echo(f"tcp-analyzer: {exc}", err=True)
            if not isinstance(exc, OutputError):
                _remove_tables(dest)
            summaries.append({"capture": path if isinstance(path, str) else list(path), "error": str(exc),
                              "tables": None})
            status = EXIT_INPUT
            continue
        for problem in report.stats.get("problems", []):
            click.echo(f"tcp-analyzer: {problem}", err=True)
        if report.stats.get("problems"):
            status = EXIT_INPUT
        summaries.append({**summarise(report), "tables": str(dest)})
        if not quiet and not as_json:
            print_summary(summaries[-1], dest)
    if as_json:
        click.echo(json.dumps(summaries, indent=2))
    global _quick_exit
    _quick_exit = True  # every file is written and closed
    sys.exit(status)


def readable(path: str) -> bool:
    """A capture that can be read (standard input, or a readable file)."""
    return path == STDIN or (os.path.isfile(path) and os.access(path, os.R_OK))


def label(path: str) -> str:
    """A capture's name in the progress bar and in output folders: its file name; ``stdin`` for ``-``."""
    return STDIN_NAME if path == STDIN else Path(path).name


def output_folders(out_dir: Path, captures) -> list[Path]:
    """The folder of each capture: ``out_dir`` for one; else ``out_dir/<file name>`` (``stdin`` for ``-``),
    with ``-2``, ``-3``... added when names repeat (``a/x.pcap b/x.pcap``), so no capture's tables overwrite
    another's."""
    if len(captures) == 1:
        return [out_dir]
    used: set[str] = set()
    folders = []
    for path in captures:
        name = label(path) or "capture"
        folder, k = name, 2
        while folder in used:
            folder, k = f"{name}-{k}", k + 1
        used.add(folder)
        folders.append(out_dir / folder)
    return folders


def _remove_tables(dest: Path) -> None:
    """The capture failed: an earlier run's tables in its folder must not pass for this run's."""
    try:
        remove_tables(dest)
    except OSError as exc:
        click.echo(f"tcp-analyzer: {dest}: cannot remove the earlier tables: {exc.strerror or exc}", err=True)


def run() -> None:
    """The ``tcp-analyzer`` console script: ``main()``, then exit (quickly after ``analyze``)."""
    code = main()
    if _quick_exit:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe: nothing more can be said
            pass
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (tests call this in process)."""
    try:
        cli.main(args=argv, prog_name="tcp-analyzer", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.exceptions.Abort:
        click.echo("tcp-analyzer: interrupted", err=True)
        return 130
    except click.UsageError as exc:
        exc.show()
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return EXIT_INPUT
    except AnalyzerError as exc:
        click.echo(f"tcp-analyzer: {exc}", err=True)
        return EXIT_INPUT
    return EXIT_OK
