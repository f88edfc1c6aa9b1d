"""Real packet loss on loopback for one TCP port, with nftables, removed on every exit path.

``packet_loss(port, percent)`` adds a table ``inet tcp_analyzer_loss_<port>`` with one input-hook
chain that drops ``percent``% of the packets arriving on ``lo`` from or to that TCP port, chosen by
``numgen random`` (counting apart those that carry data); the kernel then really retransmits. Dropping
on input (not output) means a capture on ``lo`` still sees the lost packet once, as a capture at the
sender would, and then its retransmission.

The table is deleted when the ``with`` block ends (normally, by an exception, by Ctrl-C/SIGINT), on
SIGTERM/SIGHUP (turned into ``SystemExit`` while the block runs, see ``termination``) and at
interpreter exit (atexit), whichever comes first. Only SIGKILL can leave it behind;
``remove_stale()`` deletes leftovers.

    >>> with packet_loss(15001, 10):                    # doctest: +SKIP
    ...     run_clients()
"""
from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator

from ..errors import EngineUnavailable, NeedsRoot
from .termination import termination_raises

TABLE_PREFIX = "tcp_analyzer_loss_"
FAMILY = "inet"
LOOPBACK = "lo"


def table_name(port: int) -> str:
    return f"{TABLE_PREFIX}{port}"


# A dropped packet longer than its IP and largest TCP header carries data (the kernel must send it again):
# counted apart, so a run can tell a loss that needs retransmissions from one of pure ACKs only.
DATA_MARK = "data"


def ruleset(port: int, percent: float) -> str:
    """The nft script that creates the loss table for ``port``."""
    threshold = int(round(percent * 100))  # numgen draws 0..9999: 0.01 % steps
    name = table_name(port)
    lose = f"numgen random mod 10000 < {threshold} jump lose" if threshold < 10000 else "jump lose"
    return (
        f"table {FAMILY} {name} {{\n"
        f"  chain lose {{\n"
        f'    ip length > 80 counter drop comment "{DATA_MARK}"\n'  # 20 (no IP options on lo) + at most 60
        f'    ip6 length > 60 counter drop comment "{DATA_MARK}"\n'  # (payload length: TCP header at most 60)
        f"    counter drop\n"
        f"  }}\n"
        f"  chain input {{\n"
        f"    type filter hook input priority filter; policy accept;\n"
        f'    iifname "{LOOPBACK}" tcp dport {port} {lose}\n'
        f'    iifname "{LOOPBACK}" tcp sport {port} {lose}\n'
        f"  }}\n"
        f"}}\n"
    )


def _nft(*args: str, script: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if not os.path.exists(nft):
        raise EngineUnavailable("nft not found: install nftables (apt-get install nftables)")
    proc = subprocess.run([nft, *args], input=script, capture_output=True, text=True, timeout=10)
    if check and proc.returncode != 0:
        raise EngineUnavailable(f"nft {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def check_can_add_rules() -> None:
    """Raise NeedsRoot / EngineUnavailable when ``packet_loss`` cannot work here."""
    if os.geteuid() != 0:
        raise NeedsRoot("--loss needs root to add an nftables rule on lo: run it with sudo")
    _nft("--version")


def tables() -> list[str]:
    """Names of the loss tables present now."""
    out = _nft("list", "tables", FAMILY).stdout
    return [w for line in out.splitlines() for w in line.split() if w.startswith(TABLE_PREFIX)]


def remove(port: int) -> bool:
    """Delete the loss table of ``port``; True when one was there."""
    return _nft("delete", "table", FAMILY, table_name(port), check=False).returncode == 0


def remove_stale() -> list[str]:
    """Delete every loss table left behind (e.g. by a killed demo); return their names."""
    names = tables()
    for name in names:
        _nft("delete", "table", FAMILY, name, check=False)
    return names


def dropped(port: int) -> tuple[int, int]:
    """Packets the loss table of ``port`` has dropped so far, and how many of them carried data (its
    counters)."""
    out = _nft("list", "table", FAMILY, table_name(port), check=False).stdout
    total = data = 0
    for line in out.splitlines():
        words = line.split()
        if "counter" in words and "packets" in words:
            n = int(words[words.index("packets") + 1])
            total += n
            data += n if f'"{DATA_MARK}"' in words else 0
    return total, data


@contextlib.contextmanager
def packet_loss(port: int, percent: float) -> Iterator[str]:
    """Drop ``percent``% of the TCP packets from/to ``port`` on ``lo`` inside the block.

    Yields the table name. Raises NeedsRoot without root, EngineUnavailable without nft.
    """
    if not 0 <= percent <= 100:
        raise ValueError("loss percent must be between 0 and 100")
    if not 0 < port < 65536:
        raise ValueError(f"bad port {port}")
    check_can_add_rules()
    remove(port)  # a leftover from a killed run
    cleanup = _Cleanup(port)
    atexit.register(cleanup)
    with termination_raises():  # still there while the table is removed
        try:
            _nft("-f", "-", script=ruleset(port, percent))
            yield table_name(port)
        finally:
            cleanup()
            atexit.unregister(cleanup)


class _Cleanup:
    """Removes the table once, whoever calls first (finally block, atexit)."""

    def __init__(self, port: int):
        self.port = port
        self.done = False
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            if not self.done:
                remove(self.port)
                self.done = True  # after: an interrupted removal is retried at exit
