"""A live capture analyzed as it comes: each batch of sniffed frames is decoded and fed to the engine.

``analyze_live`` runs a ``sources.live.LiveCapture`` until it stops; every batch (``batch_interval``
seconds of frames) is decoded and fed to one ``tcp.Engine``, and ``on_batch`` sees what the engine
decided in it (handshakes that reached an outcome, the batch's retransmission rows). At the end the
engine's tables become a ``Report`` whose frame numbers are positions in the written pcap, so it
equals ``analyze(pcap)``.

    >>> cap = LiveCapture("lo", "tcp port 15001", pcap_path="live.pcap", duration=5)  # doctest: +SKIP
    >>> run = analyze_live(cap, on_batch=print)                                   # doctest: +SKIP
    >>> run.report.handshakes                                                     # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..decode import Decoder, decode_batch
from ..sources.frames import FrameBatch
from ..sources.live import LiveCapture, LiveResult
from ..tcp import Engine
from .report import Report

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class BatchResult:
    """What one batch brought: frame numbers, TCP segments, and what the engine decided in it."""

    first_frame: int
    frames: int
    segments: int
    handshakes: pd.DataFrame | None = None
    retransmissions: pd.DataFrame | None = None


@dataclass
class LiveRun:
    """A finished live capture (``capture``: frames, drops, why it stopped) and its ``report``."""

    capture: LiveResult
    report: Report


def analyze_live(capture: LiveCapture, on_batch: Callable[[BatchResult], None] | None = None) -> LiveRun:
    """Run ``capture`` until it stops (duration, count, ``stop()`` or Ctrl-C), analyzing batch by batch."""
    decoder, engine = Decoder(), Engine()

    def on_frames(batch: FrameBatch) -> None:
        packets = decode_batch(batch, decoder)
        events = engine.feed(packets)
        if on_batch is not None:
            on_batch(BatchResult(batch.first_frame, len(batch), len(packets), events.handshakes,
                                 events.retransmissions))

    result = capture.run(on_frames=on_frames)
    tables = engine.finish()
    stats = {"frames": result.frames, "engine": "live", **tables.stats}
    report = Report(capture=str(result.pcap_path or "live"), stats=stats, **tables.raw)
    return LiveRun(result, report)
