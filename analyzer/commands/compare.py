"""The ``compare`` command: thin over ``analyzer.report.compare``.

Exit codes: 0 tshark and we agree, 1 they differ or the capture is unreadable, 2 usage, 3 tshark missing.
"""
from __future__ import annotations

import json
import sys

import click

from ..errors import AnalyzerError, EngineUnavailable
from .cli import CAPTURE
from .console import fail, prepare_kernels

EXIT_OK, EXIT_DIFFER, EXIT_NO_TSHARK = 0, 1, 3  # usage errors (2) are raised as click.UsageError


@click.command("compare")
@click.argument("capture", type=CAPTURE)
@click.option("--json", "as_json", is_flag=True, help="print counts, disagreements and overruled labels as JSON")
@click.option("--limit", type=int, default=200, show_default=True,
              help="list at most this many rows per table (0: all)")
def compare_cmd(capture: str, as_json: bool, limit: int) -> None:
    """Compare our labels with tshark's, frame by frame; exit 0 when they agree.

    Runs tshark 4.0 with pinned preferences (see analyzer/report/compare.py) and our engine on CAPTURE.
    Our wireshark_kind column reproduces Wireshark's own rules: every frame where it and tshark's label
    differ is listed as a disagreement. Then the frames where our kind (the cause the evidence supports)
    says something else than tshark, with the evidence: not disagreements, the point of the tool.
    Exit status: 0 they agree, 1 they differ or the capture could not be read, 2 usage, 3 tshark is
    not installed (or $TSHARK names no program).

    \b
    Example:
      tcp-analyzer compare trace.pcapng
      tcp-analyzer compare trace.pcap --json > agreement.json
    """
    from ..report.compare import compare

    prepare_kernels(as_json)
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


def _rows_table(title: str, df, columns: dict[str, str], limit: int):
    """A rich table of ``df``'s rows (``columns``: header -> column), at most ``limit`` (0: all)."""
    from rich.table import Table

    shown = df if limit <= 0 else df.head(limit)
    table = Table(title=f"{title} ({len(df)})", title_justify="left")
    for header in columns:
        table.add_column(header, justify="right" if header in ("frame", "stream") else "left",
                         overflow="fold", no_wrap=header != "our reason")
    for r in shown.itertuples(index=False):
        table.add_row(*[("" if v is None or v != v else str(v)) or "-" for v in (getattr(r, c) for c in columns.values())])
    return table, len(df) - len(shown)


def _print_comparison(result, limit: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    c = result.counts
    version = result.tshark_version
    console.print(f"[bold]{result.capture}[/bold]: ours vs tshark {version}")
    if not version.startswith("4.0."):
        console.print(f"[yellow]note: our wireshark_kind follows tshark 4.0's rules; {version} may label "
                      "differently[/yellow]")
    per = Table(title="Flagged frames by class (tshark vs our wireshark_kind)", title_justify="left")
    for col in ("class", "tshark", "ours", "tp", "fp", "fn", "precision", "recall", "F1"):
        per.add_column(col, justify="left" if col == "class" else "right")
    for r in result.per_class.itertuples(index=False):
        per.add_row(r[0], str(r.tshark), str(r.ours), str(r.tp), str(r.fp), str(r.fn),
                    f"{r.precision:.3f}", f"{r.recall:.3f}", f"{r.f1:.3f}")
    per.add_row("[bold]any[/bold]", str(c["tshark_flagged"]), str(c["ours_flagged"]), str(c["tp"]), str(c["fp"]),
                str(c["fn"]), f"{c['precision']:.3f}", f"{c['recall']:.3f}", f"{c['f1']:.3f}")
    console.print(per)
    console.print(f"class agreement on frames both flag: {c['class_agreement']:.1%}; "
                  f"same finest kind: {c['exact_kind']:.1%}")
    for title, df, columns in (
            ("Disagreements: wireshark_kind is not tshark's label", result.disagreements,
             {"frame": "frame", "stream": "stream", "tshark": "tshark", "wireshark_kind": "wireshark_kind",
              "difference": "difference"}),
            ("Where the evidence says another cause than tshark", result.overruled,
             {"frame": "frame", "stream": "stream", "tshark": "tshark", "kind": "kind", "our reason": "reason"})):
        if len(df):
            table, more = _rows_table(title, df, columns, limit)
            console.print(table)
            if more:
                console.print(f"... {more} more (--limit 0 lists all)")
    verdict = "[green]agree[/green]" if result.agree else f"[red]disagree on {c['disagreements']} frames[/red]"
    console.print(f"verdict: {verdict}")
