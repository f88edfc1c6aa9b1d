"""SIGTERM and SIGHUP as exceptions, so the demo cleans up when it is told to stop.

Python ends a process on SIGTERM or SIGHUP without running ``finally`` blocks (Ctrl-C, SIGINT,
already raises KeyboardInterrupt). Inside ``termination_raises()`` both raise
``SystemExit(128 + signum)``, the status a shell gives a process a signal ended, so temporary
folders are removed, the server and capture stopped and the nftables rule deleted on every exit
path but SIGKILL.

    >>> with termination_raises():                     # doctest: +SKIP
    ...     run_the_demo()
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def termination_raises() -> Iterator[None]:
    """Inside the block SIGTERM and SIGHUP raise SystemExit. Only the main thread can set signal
    handlers, and a handler someone else installed is kept: in those cases nothing changes."""
    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                old[sig] = signal.signal(sig, _raise_system_exit)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
