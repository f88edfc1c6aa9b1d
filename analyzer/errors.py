"""Small named exceptions. Each carries a one-line message meant for the user."""
from __future__ import annotations


class AnalyzerError(Exception):
    """Base class for every error tcp-analyzer raises on purpose."""


class CaptureError(AnalyzerError):
    """A capture file could not be read (not a capture, damaged header, unreadable)."""

    def __init__(self, path: str, offset: int | None, problem: str):
        self.path, self.offset, self.problem = str(path), offset, problem
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {problem}")

    def __reduce__(self):  # pickled whole (from a worker process to the one that reports it)
        return CaptureError, (self.path, self.offset, self.problem)


class EngineUnavailable(AnalyzerError):
    """An optional engine or tool (tshark, scapy live capture) is not usable here."""


class NeedsRoot(AnalyzerError):
    """The operation needs root or CAP_NET_RAW / CAP_NET_ADMIN."""


class NoCaptures(AnalyzerError):
    """What was given to merge names no capture (a folder without one, a file given twice)."""
