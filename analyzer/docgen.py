"""Column and label reference, generated from ``analyzer.schema`` (the one declaration).

    python -m analyzer.docgen > docs/columns.md

A test checks that docs/columns.md is up to date.
"""
from __future__ import annotations

from . import schema

TABLES = (
    ("handshakes", "one row per connection attempt", schema.HANDSHAKE_COLUMNS),
    ("retransmissions", "one row per segment that repeats bytes already sent, or arrives out of order",
     schema.RETRANSMISSION_COLUMNS),
    ("connections", "one row per connection", schema.CONNECTION_COLUMNS),
    ("events", "one row per frame per expert finding (duplicate ACKs, zero windows, capture gaps...)",
     schema.EVENT_COLUMNS),
    ("packets", "one row per TCP segment (written with `--packets`)", schema.PACKET_TABLE_COLUMNS),
)
VOCABULARIES = (
    ("Handshake outcomes (`handshakes.outcome`)", schema.HANDSHAKE_OUTCOMES),
    ("Retransmission kinds (`retransmissions.kind`)", schema.RETRANSMISSION_KINDS),
    ("Events (`events.event`)", schema.EVENT_KINDS),
    ("Connection states (`connections.conn_state`, as Zeek)", schema.CONN_STATES),
)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown() -> str:
    out = ["# Report columns and labels", "",
           "Generated from `analyzer/schema.py` by `python -m analyzer.docgen`; do not edit by hand.", ""]
    for name, what, cols in TABLES:
        out += [f"## `{name}`: {what}", "", "| column | type | meaning |", "|---|---|---|"]
        out += [f"| `{c.name}` | {c.dtype} | {_cell(c.doc)} |" for c in cols]
        out.append("")
    out += ["## `capture`, `capture_frame`: with `--merge`, at the end of every table", "",
            "Only when several files are read as one trace (`analyze --merge`, `analyze(paths, merge=True)`, "
            "`read_packets(paths, merge=True)`).", "", "| column | type | meaning |", "|---|---|---|"]
    out += [f"| `{c.name}` | {c.dtype} | {_cell(c.doc)} |" for c in schema.CAPTURE_COLUMNS]
    out.append("")
    for title, vocab in VOCABULARIES:
        out += [f"## {title}", "", "| label | meaning |", "|---|---|"]
        out += [f"| `{k}` | {_cell(v)} |" for k, v in vocab.items()]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
