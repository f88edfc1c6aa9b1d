"""The whole demo: certificates, server, live capture on lo, clients, then the reports.

``run_demo`` checks that its output folders take files, makes certificates in a private temporary
folder (mode 0700), starts the capture on ``lo`` (filter ``tcp port PORT``), optionally the
nftables loss rule, the server, then ``clients`` clients at once. When they are done it waits a
moment for the connections' last packets, stops everything (in reverse order, on every exit path:
Ctrl-C, SIGTERM and SIGHUP included) and writes the pcap and the report tables.

Without CAP_NET_RAW (live capture needs it; root without it, as under ``capsh --drop=cap_net_raw``,
cannot capture either) it analyzes the bundled capture ``captures/demo.pcap`` instead and says so
in ``DemoResult.notes``. The loss rule needs root for nftables.

    >>> result = run_demo(clients=5, out_dir="demo-out")          # doctest: +SKIP
    >>> result.report.handshakes["outcome"].value_counts()        # doctest: +SKIP
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AnalyzerError, NeedsRoot
from ..report.live import BatchResult, LiveRun, analyze_live
from ..sources.live import LiveCapture, LiveResult, can_capture, output_folder
from .certs import make_certs
from .client import FetchResult, fetch
from .loss import dropped, packet_loss
from .server import DEFAULT_BYTES, DEFAULT_PORT, MAX_CLIENTS, MAX_PENDING, DemoServer
from .termination import termination_raises

BUNDLED_CAPTURE = Path(__file__).resolve().parents[2] / "captures" / "demo.pcap"
DEFAULT_OUT = "demo-report"
LINGER_CLEAN = 0.3  # s to wait after the last client for the closing FIN/ACKs
LINGER_LOSSY = 2.0  # with loss a FIN or its ACK may need a retransmission (RTO >= 200 ms, doubling)
CLIENT_TIMEOUT = 60.0


@dataclass
class DemoResult:
    """What the demo did and produced."""

    pcap: Path
    out_dir: Path | None
    report: Any  # analyzer.report.Report
    clients: list[FetchResult | str] = field(default_factory=list)  # a result, or the error text
    loss: float | None = None
    nft_dropped: int | None = None  # packets the loss rule dropped
    live: LiveResult | None = None
    bundled: bool = False  # True: no live run, the bundled capture was analyzed
    notes: list[str] = field(default_factory=list)
    nft_dropped_data: int | None = None  # of which carried data (each one the kernel sends again)


def run_demo(clients: int = 3, loss: float | None = None, nbytes: int = DEFAULT_BYTES, port: int = DEFAULT_PORT,
             out_dir: str | os.PathLike | None = None, pcap: str | os.PathLike | None = None,
             on_batch: Callable[[BatchResult], None] | None = None,
             on_client: Callable[[FetchResult | str], None] | None = None) -> DemoResult:
    """Run the demo; returns a ``DemoResult`` (the bundled capture's analysis without root).

    ``out_dir`` (default ``demo-report``) receives the tables; ``pcap`` defaults to
    ``out_dir/demo.pcap``; an AnalyzerError names either if it cannot be written, before anything
    runs. ``on_batch`` sees each live batch's new handshakes and retransmissions,
    ``on_client`` each client's result. ``loss`` (percent) needs root and nftables.
    """
    if clients < 1:
        raise ValueError("clients must be at least 1")
    if loss is not None and not 0 < loss < 100:
        raise ValueError("loss must be between 0 and 100 percent")
    if not can_capture():
        return _bundled(out_dir, loss)
    out = output_folder(out_dir if out_dir is not None else DEFAULT_OUT)
    pcap_path = Path(pcap) if pcap is not None else out / "demo.pcap"
    output_folder(pcap_path.parent)
    with termination_raises():
        certs = Path(tempfile.mkdtemp(prefix="tcp-analyzer-demo-"))  # 0700: only we read the keys
        try:
            make_certs(certs)
            return _live_demo(certs, clients, loss, nbytes, port, out, pcap_path, on_batch, on_client)
        finally:
            shutil.rmtree(certs, ignore_errors=True)


def _bundled(out_dir: str | os.PathLike | None, loss: float | None) -> DemoResult:
    from ..report import analyze

    why = "live capture needs root (CAP_NET_RAW)" + (" and --loss needs root for nftables" if loss else "")
    if not BUNDLED_CAPTURE.exists():
        raise NeedsRoot(f"{why}: run it with sudo (the bundled {BUNDLED_CAPTURE.name} is not here either)")
    if out_dir is not None:
        output_folder(out_dir)
    report = analyze(BUNDLED_CAPTURE)
    if out_dir is not None:
        _write_report(report, Path(out_dir))
    note = f"{why}; run it with sudo for a live demo. Showing the bundled capture {BUNDLED_CAPTURE} instead."
    return DemoResult(BUNDLED_CAPTURE, Path(out_dir) if out_dir is not None else None, report,
                      bundled=True, notes=[note])


def _live_demo(certs: Path, clients: int, loss: float | None, nbytes: int, port: int, out: Path,
               pcap_path: Path, on_batch, on_client) -> DemoResult:
    capture = LiveCapture("lo", f"tcp port {port}", pcap_path=pcap_path).open()
    holder: dict[str, Any] = {}

    def capture_thread() -> None:
        try:
            holder["run"] = analyze_live(capture, on_batch)
        except BaseException as exc:  # reported in the main thread
            holder["error"] = exc

    thread = threading.Thread(target=capture_thread, name="demo-capture", daemon=True)
    thread.start()
    results: list[FetchResult | str] = []
    nft_dropped = nft_dropped_data = None
    try:
        # room for all our clients at once: none of them is ever made to wait or leave for another
        server = DemoServer(certs, port=port, nbytes=nbytes, max_clients=max(MAX_CLIENTS, clients),
                            max_pending=max(MAX_PENDING, clients))
        try:
            server.start()
        except OSError as exc:
            raise AnalyzerError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}; "
                                "choose another port with --port") from exc
        try:
            if loss:
                with packet_loss(port, loss):
                    results = _run_clients(certs, port, clients, on_client)
                    time.sleep(LINGER_LOSSY)  # closing packets may be retransmitted
                    nft_dropped, nft_dropped_data = dropped(port)
            else:
                results = _run_clients(certs, port, clients, on_client)
        finally:
            server.stop(timeout=2.0)
        time.sleep(LINGER_CLEAN)
    finally:
        capture.stop()
        thread.join()
    if "error" in holder:
        raise holder["error"]
    run: LiveRun = holder["run"]
    live, report = run.capture, run.report
    _write_report(report, out)
    notes = list(live.notes)
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        notes.append(f"{len(failed)} of {clients} clients failed: {failed[0]}")
    return DemoResult(pcap_path, out, report, results, loss, nft_dropped, live, notes=notes,
                      nft_dropped_data=nft_dropped_data)


def _write_report(report: Any, out: Path) -> None:
    try:
        report.write(out)
    except OSError as exc:
        raise AnalyzerError(f"{out}: cannot write the reports: {exc.strerror or exc}") from exc


def _run_clients(certs: Path, port: int, n: int, on_client) -> list[FetchResult | str]:
    """Run ``n`` clients at once (daemon threads, so Ctrl-C never waits for them)."""
    results: list[FetchResult | str] = ["not finished"] * n

    def one(i: int) -> None:
        try:
            r: FetchResult | str = fetch("127.0.0.1", port, certs=certs, timeout=CLIENT_TIMEOUT)
        except AnalyzerError as exc:  # DemoClientError, CertificateError
            r = str(exc)
        results[i] = r
        if on_client is not None:
            on_client(r)

    threads = [threading.Thread(target=one, args=(i,), name=f"demo-client-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
