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

- TLS 1.2 at least (1.3 preferred, as OpenSSL negotiates the highest both support);
- a client certificate is required and must chain to the demo CA (no certificate, another CA,
  expired: refused by OpenSSL during the handshake, reason taken from its verify message);
- the certificate's CN must be ``DemoClt`` and now must lie inside its validity dates (checked again
  here after the handshake);
- ``handshake_timeout``: a client that connects and says nothing, or does not finish the TLS
  handshake in that time (a whole-handshake deadline, not only per read);
  ``idle_timeout``: a client that completes the handshake and never sends its request (per read;
  the request line is at most REQUEST_MAX bytes, so a trickling client is bounded too);
- a plaintext client is refused because its first bytes are not a TLS ClientHello.

    >>> with DemoServer("certs", port=0) as srv:         # doctest: +SKIP
    ...     print(srv.address)
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .certs import CLIENT_CN, cert_paths

log = logging.getLogger("analyzer.demo.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 15001
DEFAULT_BYTES = 100_000
MAX_BYTES = 1 << 30  # one request may ask for at most 1 GiB
REQUEST_MAX = 64  # longest request line accepted, bytes
CHUNK = 64 * 1024
TLS_HANDSHAKE_RECORD = 0x16  # RFC 8446 5.1: ContentType handshake(22)
HANDSHAKE_TIMEOUT = 5.0
IDLE_TIMEOUT = 10.0
MAX_CLIENTS = 256  # connections handled at once; more wait in the listen backlog

# OpenSSL reasons meaning "the first bytes were not a TLS ClientHello".
_NOT_TLS = {"HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL",
            "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE", "UNSUPPORTED_PROTOCOL", "RECORD_TOO_LARGE"}


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
    ctx.load_cert_chain(p.server_cert, p.server_key)
    ctx.load_verify_locations(cafile=str(p.ca_cert))
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
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no TLS handshake within {timeout:g} s (silent or too slow client)"
    if isinstance(exc, ssl.SSLEOFError):
        return "client closed the connection during the handshake"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "client sent no certificate"
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


def _answer_plaintext(conn: socket.socket, line: bytes, linger: float = 0.5) -> None:
    """Send ``line``, half-close, and read what the client still sends (briefly), so the close
    is a FIN and not a RST that would destroy the answer before the client reads it."""
    try:
        conn.sendall(line)
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(linger)
        drained = 0
        while drained < REQUEST_MAX * 1024:
            chunk = conn.recv(4096)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass


class DemoServer:
    """The demo server, run in background threads: ``start()`` (returns once listening), ``stop()``.

    ``port=0`` picks a free port; ``address`` gives the one bound.
    """

    def __init__(self, certs_dir: str | os.PathLike, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 nbytes: int = DEFAULT_BYTES, handshake_timeout: float = HANDSHAKE_TIMEOUT,
                 idle_timeout: float = IDLE_TIMEOUT, client_cn: str = CLIENT_CN,
                 max_clients: int = MAX_CLIENTS):
        self.certs_dir = Path(certs_dir)
        self.host, self.port, self.nbytes = host, port, nbytes
        self.handshake_timeout, self.idle_timeout = handshake_timeout, idle_timeout
        self.client_cn = client_cn
        self.context = server_context(certs_dir)
        self.stats = ServerStats()
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(max_clients)
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
        sock.settimeout(0.2)  # the accept loop looks at the stop flag this often
        self._listener = sock
        self._thread = threading.Thread(target=self._accept_loop, name="demo-server", daemon=True)
        self._thread.start()
        self.ready.set()
        log.info("listening on %s:%d", *self.address)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, wait up to ``timeout`` s in all for clients being served, close the socket."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
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
                conn, peer = self._listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                log.warning("accept failed: %s", exc)
                continue
            self._slots.acquire()
            t = threading.Thread(target=self._serve_one, args=(conn, f"{peer[0]}:{peer[1]}"),
                                 name=f"demo-client-{peer[1]}", daemon=True)
            with self._lock:
                self._workers.add(t)
            t.start()

    def _reject(self, peer: str, reason: str) -> None:
        with self._lock:
            self.stats.rejections.append(Rejection(peer, reason))
        log.warning("rejected %s: %s", peer, reason)

    def _serve_one(self, conn: socket.socket, peer: str) -> None:
        try:
            self._handle(conn, peer)
        except Exception as exc:  # a bug or an odd client must never stop the server
            self._reject(peer, f"error while serving: {exc}")
        finally:
            conn.close()
            self._slots.release()
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _handle(self, conn: socket.socket, peer: str) -> None:
        conn.settimeout(self.handshake_timeout)
        try:  # look at the first byte before OpenSSL does: plaintext gets a plaintext answer
            first = conn.recv(1, socket.MSG_PEEK)
        except (socket.timeout, TimeoutError):
            self._reject(peer, f"no TLS handshake within {self.handshake_timeout:g} s (silent client)")
            return
        except OSError as exc:
            self._reject(peer, f"connection lost before the handshake: {exc}")
            return
        if not first:
            self._reject(peer, "client closed the connection without sending anything")
            return
        if first[0] != TLS_HANDSHAKE_RECORD:
            _answer_plaintext(conn, b"ERR this port speaks TLS with client certificates\n")
            self._reject(peer, f"not a TLS handshake: first byte {first!r} (plaintext client?)")
            return
        tls = self.context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        # The socket timeout bounds each read; this bounds the whole handshake (a client trickling
        # bytes would otherwise hold its slot for ever): on expiry the socket is shut down under it.
        too_slow = threading.Event()

        def give_up() -> None:
            too_slow.set()
            try:
                socket.socket.shutdown(tls, socket.SHUT_RDWR)  # the plain socket's, keeps the SSL state
            except OSError:
                pass

        timer = threading.Timer(self.handshake_timeout, give_up)
        timer.daemon = True
        timer.start()
        try:
            tls.do_handshake()
        except (OSError, ssl.SSLError) as exc:
            tls.close()
            reason = describe_handshake_error(exc, self.handshake_timeout)
            if too_slow.is_set():
                reason = f"TLS handshake not finished within {self.handshake_timeout:g} s (too slow client)"
            self._reject(peer, reason)
            return
        finally:
            timer.cancel()
        if too_slow.is_set():  # expired just as the handshake finished
            tls.close()
            self._reject(peer, f"TLS handshake not finished within {self.handshake_timeout:g} s (too slow client)")
            return
        with tls:
            reason = check_client_cert(tls.getpeercert(), self.client_cn)
            if reason:
                self._send_quietly(tls, f"ERR {reason}\n".encode())
                self._reject(peer, reason)
                return
            tls.settimeout(self.idle_timeout)
            try:
                self._converse(tls, peer)
            except (socket.timeout, TimeoutError):
                self._reject(peer, f"no request within {self.idle_timeout:g} s (idle client)")
            except ValueError as exc:
                self._send_quietly(tls, f"ERR {exc}\n".encode())
                self._reject(peer, str(exc))
            except (OSError, ssl.SSLError) as exc:
                self._reject(peer, f"connection lost while serving: {exc}")

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
        except (OSError, ssl.SSLError, ValueError):
            pass

    @staticmethod
    def _send_quietly(tls: ssl.SSLSocket, data: bytes) -> None:
        try:
            tls.sendall(data)
        except (OSError, ssl.SSLError):
            pass
