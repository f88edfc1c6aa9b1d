"""The ``tcp-analyzer`` command: thin commands over the library.

Each command parses its options, makes one library call and prints or writes the result. Library
errors become one-line messages. Exit codes: 0 done, 1 some input could not be read or some table
could not be written, 2 usage (``compare`` adds 3: tshark missing).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import click

from ..decode import TimeBound
from ..errors import AnalyzerError, NoCaptures
from ..report import FORMATS, analyze, summarise
from ..report.writers import (OutputError, clear_datasets, partition_folder, prepare_folder, remove_partition,
                              remove_tables)
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
              show_default=True, help="folder for the tables (one subfolder per capture when several; in "
              "Parquet, one dataset per table, partitioned by capture)")
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
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="processes: one capture's connections split over N, or N captures at once")
@click.option("--scheduler", metavar="tcp://HOST:PORT", help="run on this Dask distributed cluster; its workers "
              "read the captures (give paths they can reach; not with --merge or -)")
def analyze_cmd(captures, out_dir, fmt, engine, packets, quiet, as_json, bpf, start, end, merge, idle_timeout,
                close_delay, jobs, scheduler):
    """Analyze captures; write connections, handshakes and retransmissions tables.

    A folder's tables are replaced as a whole: tables of an earlier run there (another format, a
    packets table) are removed, and none are left for a capture that could not be read. Several
    captures in Parquet make one dataset per table, partitioned by capture.
    CAPTURE `-` is standard input (a pipe from tcpdump -w - or zcat).

    \b
    Example:
      tcp-analyzer analyze trace.pcap -o out/ --format parquet
      tcp-analyzer analyze a.pcap b.pcapng -o out/    # out/a.pcap/, out/b.pcapng/
      tcp-analyzer analyze x/t.pcap y/t.pcap -o out/  # out/t.pcap/, out/t.pcap-2/
      tcp-analyzer analyze a.pcap b.pcap -o out/ --format parquet   # out/connections/capture=a.pcap/ ...
      tcp-analyzer analyze trace.pcap -f 'tcp port 443' --start +5 --end +10
      tcp-analyzer analyze --merge ring/ -o out/      # a rotated set as one trace
      tcpdump -i eth0 -w - | tcp-analyzer analyze - -o out/
      tcp-analyzer analyze big.pcap --jobs 4          # its connections over 4 processes
      tcp-analyzer analyze /shared/big.pcap --scheduler tcp://10.0.0.5:8786
    """
    from .console import prepare_kernels, print_summary

    if start is not None and end is not None and start.relative == end.relative and start.ns > end.ns:
        raise click.BadParameter("--start is after --end", param_hint="--start/--end")
    if engine != "native" and (bpf or start is not None or end is not None):
        raise click.UsageError("-f, --start and --end work with the native engine")
    if engine != "native" and (merge or STDIN in captures):
        raise click.UsageError("--merge and - (standard input) work with the native engine")
    if captures.count(STDIN) > 1:
        raise click.UsageError("- (standard input) can be read once")
    if scheduler is not None and (merge or STDIN in captures):
        raise click.UsageError("--merge and - (standard input) are read by this process: not with --scheduler")
    if merge:
        try:
            captures = (capture_files(list(captures)),)  # one input: the merged trace
        except NoCaptures as exc:
            raise click.UsageError(str(exc)) from None

    targets = output_targets(Path(out_dir), captures, partitioned=fmt == "parquet" and len(captures) > 1)
    try:
        prepare_folder(out_dir)  # before any analysis: a folder that cannot be written fails at once
        if targets[0].partition is not None:
            clear_datasets(out_dir)
    except OutputError as exc:
        click.echo(f"tcp-analyzer: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    if engine == "native" and scheduler is None and any(readable(p) for p in _files(captures)):
        prepare_kernels(quiet or as_json)  # once, before the first capture that can be read
    options = {"engine": engine, "packets": packets, "bpf": bpf, "start": start, "end": end, "merge": merge,
               "idle_timeout": idle_timeout, "close_delay": close_delay}
    show = not quiet and not as_json
    summaries: list[dict] = []
    status = EXIT_OK
    for path, target, outcome in zip(captures, targets,
                                     _outcomes(captures, targets, fmt, jobs, scheduler, show, options)):
        if isinstance(outcome, AnalyzerError):
            click.echo(f"tcp-analyzer: {outcome}", err=True)
            if not isinstance(outcome, OutputError):
                _remove_tables(target)
            summaries.append({"capture": path if isinstance(path, str) else list(path), "error": str(outcome),
                              "tables": None})
            status = EXIT_INPUT
            continue
        for problem in outcome["problems"]:
            click.echo(f"tcp-analyzer: {problem}", err=True)
        if outcome["problems"]:
            status = EXIT_INPUT
        summaries.append(outcome)
        if show:
            print_summary(outcome, target.shown)
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


def _files(captures) -> list[str]:
    """The files (or ``-``) of the captures, a merge's (a list) flattened."""
    return [p for c in captures for p in ([c] if isinstance(c, str) else c)]


class Target(NamedTuple):
    """Where a capture's tables go: into ``folder``, or (``partition``) into partition ``capture=<partition>``
    of the datasets in ``folder`` (``folder/<table>/capture=<partition>/``)."""

    folder: Path
    partition: str | None = None

    @property
    def shown(self) -> Path:
        return self.folder if self.partition is None else partition_folder(self.folder, "*", self.partition)


def output_targets(out_dir: Path, captures, partitioned: bool = False) -> list[Target]:
    """Each capture's ``Target``: ``out_dir`` for one; else ``out_dir/<file name>`` (``stdin`` for ``-``;
    ``partitioned``: partition ``<file name>``), with ``-2``, ``-3``... added when names repeat (``a/x.pcap
    b/x.pcap``), so no capture's tables overwrite another's."""
    if len(captures) == 1:
        return [Target(out_dir)]
    used: set[str] = set()
    targets = []
    for path in captures:
        name = label(path) or "capture"
        unique, k = name, 2
        while unique in used:
            unique, k = f"{name}-{k}", k + 1
        used.add(unique)
        targets.append(Target(out_dir, unique) if partitioned else Target(out_dir / unique))
    return targets


def _outcomes(captures, targets: list[Target], fmt: str, jobs: int, scheduler: str | None, show: bool,
              options: dict) -> Iterator[dict | AnalyzerError]:
    """Analyze each capture and write its tables: its summary, or the error it ended with, in order. With
    ``scheduler``, on that Dask cluster; several captures with ``jobs`` > 1, that many processes at once;
    else one after the other (one capture's connections over ``jobs`` processes)."""
    from .console import Progress

    if scheduler is not None:
        yield from _cluster_outcomes(scheduler, captures, targets, fmt, jobs, options)
    elif jobs > 1 and len(captures) > 1:
        from ..report.parallel import each_in_processes

        yield from each_in_processes(lambda i: _analyze_into(captures[i], targets[i], fmt, options),
                                     list(range(len(captures))), jobs, name=lambda i: captures[i])
    else:
        for path, target in zip(captures, targets):
            with Progress(enabled=show, label=label(path) if isinstance(path, str) else "merge",
                          summary=show) as progress:
                outcome = _attempt(lambda: _analyze_into(path, target, fmt, options, progress.update, jobs))
            yield outcome


def _analyze_into(path: str, target: Target, fmt: str, options: dict, progress=None, jobs: int = 1) -> dict:
    """Analyze one capture and write its tables; its summary."""
    if target.partition is None:
        prepare_folder(target.folder)
    return _written(analyze(path, progress=progress, jobs=jobs, **options), target, fmt)


def _written(report, target: Target, fmt: str) -> dict:
    """Write a report's tables to ``target``; its summary, naming where they are."""
    report.write(target.folder, format=fmt, partition=target.partition)
    return {**summarise(report), "tables": str(target.shown)}


def _cluster_outcomes(scheduler: str, captures, targets: list[Target], fmt: str, jobs: int,
                      options: dict) -> Iterator[dict | AnalyzerError]:
    from ..report.cluster import analyze_each, analyze_split, connect

    options = {k: v for k, v in options.items() if k != "merge"}  # (a merge is a usage error with --scheduler)
    with connect(scheduler) as client:
        reports = ([_attempt(lambda: analyze_split(client, captures[0], jobs if jobs > 1 else None, **options))]
                   if len(captures) == 1 else analyze_each(client, list(captures), **options))
        for report, target in zip(reports, targets):
            yield report if isinstance(report, AnalyzerError) else _attempt(lambda: _written(report, target, fmt))


def _attempt(call):
    """``call()``, or the ``AnalyzerError`` it raised."""
    try:
        return call()
    except AnalyzerError as exc:
        return exc


def _remove_tables(target: Target) -> None:
    """The capture failed: an earlier run's tables in its folder must not pass for this run's."""
    try:
        if target.partition is None:
            remove_tables(target.folder)
        else:
            remove_partition(target.folder, target.partition)
    except OSError as exc:
        click.echo(f"tcp-analyzer: {target.shown}: cannot remove the earlier tables: {exc.strerror or exc}",
                   err=True)


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
