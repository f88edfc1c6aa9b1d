"""The ``compare`` command: thin over ``analyzer.report.compare``.

Exit codes: 0 tshark and we agree, 1 they differ or the capture is unreadable, 2 usage, 3 tshark missing.
"""
from __future__ import annotations

import json
import sys

import click

from ..errors import AnalyzerError, EngineUnavailable
from .cli import CAPTURE
from .console import fail

EXIT_OK, EXIT_DIFFER, EXIT_NO_TSHARK = 0, 1, 3  # usage errors (2) are raised as click.UsageError


@click.command("compare")
@click.argument("capture", type=CAPTURE)
@click.option("--json", "as_json", is_flag=True, help="print counts and disagreements as JSON")
@click.option("--limit", type=int, default=200, show_default=True,
              help="list at most this many disagreements (0: all)")
def compare_cmd(capture: str, as_json: bool, limit: int) -> None:
    """Compare our labels with tshark's, frame by frame; exit 0 when they agree.

    Runs tshark 4.0 with pinned preferences (see analyzer/report/compare.py) and our engine on CAPTURE, prints
    precision / recall against tshark's tcp.analysis.retransmission and tcp.analysis.out_of_order, and
    every frame where the labels differ with both labels and our reason. Documented differences
    (frames we call duplicate captures, SYN-ACKs of a simultaneous open) are listed but do not count.
    Exit status: 0 they agree, 1 they differ or the capture could not be read, 2 usage, 3 tshark is
    not installed (or $TSHARK names no program).

    \b
    Example:
      tcp-analyzer compare trace.pcapng
      tcp-analyzer compare trace.pcap --json > agreement.json
    """
    from ..report.compare import compare

    try:
        result = compare(capture)
    except EngineUnavailable as exc:
        fail(exc, EXIT_NO_TSHARK)
    except AnalyzerError as exc:
        fail(exc)
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
