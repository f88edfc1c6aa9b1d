"""The column reference is generated from the one declaration in analyzer/schema.py."""
from pathlib import Path

from analyzer import docgen, schema
from analyzer.report import table_columns

ROOT = Path(__file__).resolve().parents[1]


def test_columns_doc_is_current():
    assert (ROOT / "docs" / "columns.md").read_text() == docgen.markdown(), \
        "docs/columns.md is stale: run `python -m analyzer.docgen > docs/columns.md`"


def test_every_declared_column_is_documented_once():
    for name in ("connections", "handshakes", "retransmissions", "packets"):
        cols = table_columns(name)
        names = [c.name for c in cols]
        assert len(names) == len(set(names)), name
        assert all(c.doc.strip() for c in cols), name


def test_vocabularies_document_every_label():
    assert set(schema.HANDSHAKE_OUTCOMES) >= {"established", "refused", "no_reply", "reset", "incomplete",
                                              "simultaneous_open", "midstream"}
    assert set(schema.RETRANSMISSION_KINDS) == {"retransmission", "fast_retransmission", "spurious_retransmission",
                                                "syn_retransmission", "out_of_order", "duplicate"}
    assert all(v.strip() for v in (*schema.HANDSHAKE_OUTCOMES.values(), *schema.RETRANSMISSION_KINDS.values()))
