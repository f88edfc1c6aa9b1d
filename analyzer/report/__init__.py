"""Reports: run the pipeline on a capture, hold and write its tables, summarise them, compare, plot.

Modules: ``pipeline`` (``analyze()``: sources -> decode -> engine), ``report`` (``Report``, the summary
counts), ``writers`` (CSV, Parquet, JSON lines), ``live`` (a live capture analyzed batch by batch),
``compare`` (agreement with tshark), ``plot`` (graphs).

>>> import analyzer
>>> report = analyzer.analyze("captures/demo.pcap")                  # doctest: +SKIP
>>> report.write("out", format="parquet")                             # doctest: +SKIP
"""
from .pipeline import analyze
from .report import TABLES, Report, summarise
from .writers import FORMATS, read_table, table_columns, write_table

__all__ = ["analyze", "Report", "TABLES", "FORMATS", "summarise", "read_table", "table_columns",
           "write_table"]
