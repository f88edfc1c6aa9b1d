"""The demo TLS server: mutual certificate checks, the time, then N bytes on request.

Protocol (ASCII lines ending in ``\\n``, inside TLS)::

    server -> client   TIME 2025-01-31T12:00:00.123456+00:00
    client -> server   GET            (the server's default byte count)
                       GET 2000000    (that many bytes, at most MAX_BYTES)
                       BYE            (nothing more)
    server -> client   DATA 2000000   then exactly that many bytes, then close_notify and close
    server -> client   ERR <reason>   (a client refused after the handshake, or a bad request)

Checks on every client, each failure logged with its reason (logger ``analyzer.demo.server``) and
counted in ``DemoServer.rejections``; the server goes on serving the next client:

- TLS 1.2 at least (1.3 preferred, as OpenSSL negotiates the highest both support); a client that
  offers only TLS 1.0/1.1 is told so in the log;
- a client certificate is required and must chain to the demo CA (no certificate, another CA,
  expired: refused by OpenSSL during the handshake, reason taken from its verify message);
- the certificate's CN must be ``DemoClt`` and now must lie inside its validity dates (checked again
  here after the handshake);
- a plaintext client is answered with one ``ERR`` line and closed: its first byte is not a TLS record.

Deadlines and budgets (a peer is not trusted until its certificate is accepted):

- ``handshake_timeout``: ONE deadline per connection for everything before its certificate check
  ends (the first byte, a plaintext answer, the TLS handshake), whatever and however slowly the peer
  sends; ``idle_timeout``: per read, for an authenticated client's request (at most REQUEST_MAX bytes);
- two budgets, as nginx and haproxy keep apart connections still in their handshake: at most
  ``max_pending`` unauthenticated connections and ``max_clients`` authenticated ones. When the first
  is full, a new connection makes the oldest pending one leave once that one has had PENDING_GRACE of
  its handshake time (new ones wait in the listen backlog until then, first come first served): a
  flood of slow or silent peers delays a good client by a fraction of the timeout, never locks it out.
  An authenticated client that finds ``max_clients`` busy waits up to ``idle_timeout``, then gets
  ``ERR server busy``.

    >>> with DemoServer("certs", port=0) as srv:         # doctest: +SKIP
    ...     print(srv.address)
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .certs import CLIENT_CN, cert_paths, load_chain, load_trust

log = logging.getLogger("analyzer.demo.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 15001
DEFAULT_BYTES = 100_000
MAX_BYTES = 1 << 30  # one request may ask for at most 1 GiB
REQUEST_MAX = 64  # longest request line accepted, bytes
CHUNK = 64 * 1024
TLS_HANDSHAKE_RECORD = 0x16  # RFC 8446 5.1: ContentType handshake(22)
HANDSHAKE_TIMEOUT = 5.0  # s, one deadline for all a connection does before its certificate is accepted
IDLE_TIMEOUT = 10.0  # s per read, for an authenticated client's request
MAX_CLIENTS = 256  # authenticated clients served at once
MAX_PENDING = 256  # connections before their certificate check; when full, the oldest leaves
PENDING_GRACE = 0.2  # share of the handshake timeout a pending connection is sure to keep its place
PLAINTEXT_ANSWER = b"ERR this port speaks TLS with client certificates\n"
PLAINTEXT_LINGER = 0.5  # s a plaintext client may stay quiet after the answer before it is closed
PLAINTEXT_DRAIN_MAX = 64 * 1024  # bytes read from a plaintext client after the answer, at most
STOP_POLL = 0.2  # s: how often waiting loops look at the stop flag

# OpenSSL reasons meaning "the bytes after the record type were not a TLS ClientHello".
_NOT_TLS = {"HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL",
            "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "RECORD_TOO_LARGE"}
# OpenSSL's reason for a ClientHello whose versions are all below the server's minimum (RFC 8446 4.2.1).
_OLD_VERSION = "UNSUPPORTED_PROTOCOL"


@dataclass(frozen=True)
class Rejection:
    """One refused client: its address and why."""

    peer: str
    reason: str


@dataclass
class ServerStats:
    served: int = 0
    rejections: list[Rejection] = field(default_factory=list)


def server_context(certs_dir: str | os.PathLike) -> ssl.SSLContext:
    """TLS server context: TLS 1.2+, our certificate, client certificates required from the demo CA."""
    p = cert_paths(certs_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    load_chain(ctx, p.server_cert, p.server_key)
    load_trust(ctx, p.ca_cert)
    return ctx


def peer_cn(cert: dict | None) -> str | None:
    """The commonName of a certificate as returned by ``SSLSocket.getpeercert()``."""
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def check_validity(cert: dict, now: float | None = None) -> str | None:
    """None when ``now`` lies inside the certificate's notBefore..notAfter, else the reason."""
    now = dt.datetime.now(dt.timezone.utc).timestamp() if now is None else now
    not_before = ssl.cert_time_to_seconds(cert["notBefore"])
    not_after = ssl.cert_time_to_seconds(cert["notAfter"])
    if now < not_before:
        return f"certificate not valid before {cert['notBefore']}"
    if now > not_after:
        return f"certificate expired on {cert['notAfter']}"
    return None


def check_client_cert(cert: dict | None, expected_cn: str = CLIENT_CN) -> str | None:
    """None when the (already CA-verified) client certificate is acceptable, else the reason."""
    if not cert:
        return "client sent no certificate"
    cn = peer_cn(cert)
    if cn != expected_cn:
        return f"client certificate CN {cn!r} is not {expected_cn!r}"
    bad_dates = check_validity(cert)
    return f"client {bad_dates}" if bad_dates else None


def describe_handshake_error(exc: BaseException, timeout: float) -> str:
    """Turn a failed server-side handshake into a reason a user can check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"client certificate rejected: {exc.verify_message}"
    if isinstance(exc, TimeoutError):
        return f"TLS handshake not finished within {timeout:g} s (too slow client)"
    if isinstance(exc, ssl.SSLEOFError):
        return "client closed the connection during the handshake"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "client sent no certificate"
        if reason == _OLD_VERSION:
            return "client offered only TLS 1.0/1.1 (or older); the server requires TLS 1.2+"
        if reason in _NOT_TLS:
            return f"not a TLS handshake (plaintext client? OpenSSL: {reason.lower()})"
        if "ALERT" in reason:
            return f"client aborted the handshake with an alert ({reason.lower()})"
        if reason == "UNEXPECTED_EOF_WHILE_READING":
            return "client closed the connection during the handshake"
        return f"TLS handshake failed: {reason.lower() or exc}"
    if isinstance(exc, ConnectionError):
        return "client reset the connection during the handshake"
    return f"handshake failed: {exc}"


def payload(n: int) -> bytes:
    """``n`` bytes of the repeating 0..255 pattern the server sends (clients may check it)."""
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


def _read_line(tls: ssl.SSLSocket, limit: int) -> bytes:
    """Read one request line (without the newline); b"" on EOF; ValueError when too long."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = tls.recv(1)
        if not chunk:
            return b""
        buf += chunk
        if len(buf) > limit:
            raise ValueError("request line too long")
    return buf.rstrip(b"\r\n")


def parse_request(line: bytes, default_bytes: int) -> int | None:
    """Byte count a request asks for; None for BYE; ValueError for anything else."""
    words = line.decode("ascii", "replace").split()
    if words == ["BYE"]:
        return None
    if words == ["GET"]:
        return default_bytes
    if len(words) == 2 and words[0] == "GET" and words[1].isdigit():
        n = int(words[1])
        if n > MAX_BYTES:
            raise ValueError(f"at most {MAX_BYTES} bytes per request")
        return n
    raise ValueError(f"bad request {line[:REQUEST_MAX]!r}")


def check_timeout(name: str, seconds: float) -> float:
    """``seconds`` when it is a usable timeout (finite, above zero), else ValueError naming ``name``."""
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{name} must be a finite number of seconds above 0, not {seconds!r}")
    return float(seconds)


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (``time.monotonic``), as a socket timeout; TimeoutError once passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _send_quietly(sock: socket.socket, data: bytes, deadline: float) -> None:
    """Send ``data`` if the peer takes it before ``deadline``; a peer that does not is not waited for."""
    try:
        sock.settimeout(_left(deadline))
        sock.sendall(data)
    except OSError:  # ssl.SSLError and TimeoutError included
        pass


def _answer_plaintext(conn: socket.socket, line: bytes, deadline: float, linger: float = PLAINTEXT_LINGER) -> None:
    """Send ``line``, half-close, and read what the client still sends until it closes, is quiet for
    ``linger`` s or ``deadline`` passes (so the close is a FIN, not a RST that would destroy the
    answer before the client reads it)."""
    try:
        conn.settimeout(_left(deadline))
        conn.sendall(line)
        conn.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < PLAINTEXT_DRAIN_MAX:
            conn.settimeout(min(linger, _left(deadline)))
            chunk = conn.recv(4096)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:  # the deadline, the linger or a reset: the answer was given or cannot be
        pass


@dataclass(eq=False)
class _Connection:
    """One accepted connection, until it is closed."""

    sock: socket.socket  # the TLS socket once wrapped
    peer: str
    deadline: float = math.inf  # end of its unauthenticated phase (time.monotonic)
    dropped: str | None = None  # set when the pending budget made it leave


class _PendingBudget:
    """Connections whose certificate check has not ended, oldest first, at most ``limit``.

    ``admit`` makes room by shutting down the oldest once it has held its place ``grace`` s, and
    waits until then. Sockets are shut down, replaced and forgotten under one lock, and an owner
    forgets its connection (``leave``) before closing the socket, so a shutdown never reaches a
    file descriptor number reused by another connection."""

    def __init__(self, limit: int, grace: float):
        self.limit, self.grace = limit, grace
        self._since: dict[_Connection, float] = {}  # admission time; dicts keep insertion order
        self._cond = threading.Condition()

    def admit(self, conn: _Connection, stop: threading.Event) -> bool:
        """Take ``conn`` in, once there is room; False when ``stop`` is set first."""
        with self._cond:
            while len(self._since) >= self.limit:
                if stop.is_set():
                    return False
                oldest, since = next(iter(self._since.items()))
                wait = since + self.grace - time.monotonic()
                if wait <= 0:
                    self._drop(oldest, f"dropped for a newer connection after {self.grace:g} s: "
                                       f"{self.limit} connections were already in their handshake")
                else:
                    self._cond.wait(min(wait, STOP_POLL))
            self._since[conn] = time.monotonic()
            return True

    def replace_socket(self, conn: _Connection, wrap: Callable[[socket.socket], ssl.SSLSocket]) -> ssl.SSLSocket:
        """Replace ``conn.sock`` by ``wrap(conn.sock)`` (the TLS socket takes over the descriptor)."""
        with self._cond:
            tls = wrap(conn.sock)
            conn.sock = tls
            return tls

    def leave(self, conn: _Connection) -> None:
        """``conn`` is authenticated or refused: its place is free (call before closing its socket)."""
        with self._cond:
            if self._since.pop(conn, None) is not None:
                self._cond.notify()

    def drop_all(self, reason: str) -> None:
        with self._cond:
            for conn in list(self._since):
                self._drop(conn, reason)
            self._cond.notify_all()

    def _drop(self, conn: _Connection, reason: str) -> None:
        """End ``conn``'s wait (its owner sees EOF and refuses it with ``reason``); lock held."""
        del self._since[conn]
        conn.dropped = reason
        try:  # the base class's shutdown: on the descriptor, leaving a TLS object's state alone
            socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
        except OSError:
            pass


class DemoServer:
    """The demo server, run in background threads: ``start()`` (returns once listening), ``stop()``.

    ``port=0`` picks a free port; ``address`` gives the one bound. Timeouts must be finite and above
    zero (ValueError otherwise).
    """

    def __init__(self, certs_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 nbytes: int = DEFAULT_BYTES, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT, client_cn: str = CLIENT_CN,
                 max_clients: int = MAX_CLIENTS, max_pending: int = MAX_PENDING):
        if max_clients < 1 or max_pending < 1:
            raise ValueError("max_clients and max_pending must be at least 1")
        self.certs_dir = Path(certs_dir)
        self.host, self.port, self.nbytes = host, port, nbytes
        self.handshake_timeout = check_timeout("handshake_timeout", handshake_timeout)
        self.idle_timeout = check_timeout("idle_timeout", idle_timeout)
        self.client_cn, self.max_clients = client_cn, max_clients
        self.context = server_context(certs_dir)
        self.stats = ServerStats()
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._pending = _PendingBudget(max_pending, self.handshake_timeout * PENDING_GRACE)
        self._serving = threading.BoundedSemaphore(max_clients)
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._workers: set[threading.Thread] = set()

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            return self.host, self.port
        return self._listener.getsockname()[:2]

    @property
    def rejections(self) -> list[Rejection]:
        with self._lock:
            return list(self.stats.rejections)

    @property
    def served(self) -> int:
        with self._lock:
            return self.stats.served

    def start(self) -> "DemoServer":
        """Bind and listen (errors such as a busy port are raised here), then accept in a thread."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.settimeout(STOP_POLL)  # the accept loop looks at the stop flag this often
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_loop, name="demo-server", daemon=True)
        self._thread.start()
        self.ready.set()
        log.info("listening on %s:%d", *self.address)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop connections still in their handshake, wait up to ``timeout`` s in all
        for clients being served, close the socket."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pending.drop_all("server stopping")
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        self.ready.clear()

    def serve_forever(self) -> None:
        """Start (if needed) and block until ``stop()`` or KeyboardInterrupt."""
        if not self.ready.is_set():
            self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> "DemoServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, peer = self._listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                log.warning("accept failed: %s", exc)
                continue
            conn = _Connection(sock, f"{peer[0]}:{peer[1]}")
            if not self._pending.admit(conn, self._stop):
                sock.close()
                break
            conn.deadline = time.monotonic() + self.handshake_timeout
            t = threading.Thread(target=self._serve_one, args=(conn,), name=f"demo-client-{peer[1]}", daemon=True)
            with self._lock:
                self._workers.add(t)
            t.start()

    def _reject(self, peer: str, reason: str) -> None:
        with self._lock:
            self.stats.rejections.append(Rejection(peer, reason))
        log.warning("rejected %s: %s", peer, reason)

    def _serve_one(self, conn: _Connection) -> None:
        try:
            try:
                reason = self._authenticate(conn)
            finally:
                self._pending.leave(conn)
            reason = conn.dropped or reason
            if reason:
                self._reject(conn.peer, reason)
            else:
                assert isinstance(conn.sock, ssl.SSLSocket)
                self._serve_authenticated(conn.sock, conn.peer)
        except Exception as exc:  # a bug or an odd client must never stop the server
            self._reject(conn.peer, f"error while serving: {exc}")
        finally:
            conn.sock.close()
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _authenticate(self, conn: _Connection) -> str | None:
        """All a connection does before its certificate is accepted, by ``conn.deadline``: None when
        accepted (``conn.sock`` is then the TLS socket), else why it is refused."""
        try:  # look at the first byte before OpenSSL does: plaintext gets a plaintext answer
            conn.sock.settimeout(_left(conn.deadline))
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except TimeoutError:
            return f"no TLS handshake within {self.handshake_timeout:g} s (silent client)"
        except OSError as exc:
            return f"connection lost before the handshake: {exc}"
        if not first:
            return "client closed the connection without sending anything"
        if first[0] != TLS_HANDSHAKE_RECORD:
            _answer_plaintext(conn.sock, PLAINTEXT_ANSWER, conn.deadline)
            return f"not a TLS handshake: first byte {first!r} (plaintext client?)"
        try:
            tls = self._pending.replace_socket(
                conn, lambda s: self.context.wrap_socket(s, server_side=True, do_handshake_on_connect=False))
            tls.settimeout(_left(conn.deadline))
            tls.do_handshake()  # CPython applies the timeout to the whole handshake, not to each read
        except OSError as exc:  # ssl.SSLError and TimeoutError included
            return describe_handshake_error(exc, self.handshake_timeout)
        reason = check_client_cert(tls.getpeercert(), self.client_cn)
        if reason:
            _send_quietly(tls, f"ERR {reason}\n".encode(), conn.deadline)
        return reason

    def _serve_authenticated(self, tls: ssl.SSLSocket, peer: str) -> None:
        if not self._serving.acquire(timeout=self.idle_timeout):
            _send_quietly(tls, b"ERR server busy, try again later\n", time.monotonic() + self.idle_timeout)
            self._reject(peer, f"server busy: {self.max_clients} clients were being served")
            return
        try:
            tls.settimeout(self.idle_timeout)
            self._converse(tls, peer)
        except TimeoutError:
            self._reject(peer, f"no request within {self.idle_timeout:g} s (idle client)")
        except ValueError as exc:
            _send_quietly(tls, f"ERR {exc}\n".encode(), time.monotonic() + self.idle_timeout)
            self._reject(peer, str(exc))
        except OSError as exc:  # ssl.SSLError included
            self._reject(peer, f"connection lost while serving: {exc}")
        finally:
            self._serving.release()

    def _converse(self, tls: ssl.SSLSocket, peer: str) -> None:
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        tls.sendall(f"TIME {now}\n".encode())
        line = _read_line(tls, REQUEST_MAX)
        if not line:
            n = None
        else:
            n = parse_request(line, self.nbytes)
        if n is not None:
            tls.sendall(f"DATA {n}\n".encode())
            block = payload(min(n, CHUNK))  # CHUNK is a multiple of 256: the pattern continues
            sent = 0
            while sent < n:
                piece = block[: n - sent]
                tls.sendall(piece)
                sent += len(piece)
        with self._lock:
            self.stats.served += 1
        log.info("served %s: %s, %s, %d bytes", peer, tls.version(), tls.cipher()[0] if tls.cipher() else "?",
                 n or 0)
        try:
            tls.unwrap()  # close_notify both ways, so neither side sees a truncated stream
        except (OSError, ValueError):
            pass
