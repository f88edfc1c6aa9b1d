"""The demo TLS client: verifies the server, presents its own certificate, fetches the time and N bytes.

The server is checked against the demo CA, its name (``server_hostname``, default the host connected
to; the server certificate carries localhost, 127.0.0.1 and ::1) and its validity dates (by OpenSSL,
and again here). See ``server.py`` for the request protocol.

    >>> r = fetch("127.0.0.1", 15001, certs="certs", nbytes=1000)     # doctest: +SKIP
    >>> r.tls_version, r.peer_cn, r.nbytes
    ('TLSv1.3', 'DemoSvr', 1000)
"""
from __future__ import annotations

import os
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import AnalyzerError
from .certs import cert_paths, load_chain, load_trust
from .server import DEFAULT_HOST, DEFAULT_PORT, MAX_BYTES, check_validity, payload, peer_cn

HEADER_MAX = 128  # longest TIME/DATA/ERR line accepted from the server


class DemoClientError(AnalyzerError):
    """The demo client could not complete its exchange (refused, rejected the server, bad reply)."""


@dataclass(frozen=True)
class FetchResult:
    """What one client run received and how."""

    server_time: str
    nbytes: int
    data_ok: bool  # the bytes match the server's pattern
    tls_version: str
    cipher: str
    peer_cn: str | None
    local_port: int
    elapsed: float  # seconds, connect to close

    def summary(self) -> str:
        return (f"server time {self.server_time}; received {self.nbytes} bytes"
                f"{'' if self.data_ok else ' (CONTENT MISMATCH)'}; {self.tls_version} {self.cipher}; "
                f"server CN {self.peer_cn}; local port {self.local_port}; {self.elapsed * 1000:.1f} ms")


def client_context(ca: str | os.PathLike, cert: str | os.PathLike | None = None,
                   key: str | os.PathLike | None = None) -> ssl.SSLContext:
    """TLS 1.2+ client context trusting only ``ca``, checking the server name; ``cert``/``key`` presented.

    A file that cannot be loaded raises ``CertificateError`` naming it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    load_trust(ctx, ca)
    if cert is not None:
        load_chain(ctx, cert, key)
    return ctx


def _read_line(f) -> str:
    line = f.readline(HEADER_MAX)
    if not line:
        raise DemoClientError("server closed the connection without a reply")
    return line.decode("ascii", "replace").rstrip("\r\n")


def _explain_tls_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"server certificate rejected: {exc.verify_message}"
    reason = getattr(exc, "reason", None)
    if reason and "ALERT" in reason:
        return f"server refused us: {reason.lower()}"
    return f"TLS error: {exc}"


def fetch(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, certs: str | os.PathLike | None = None,
          nbytes: int | None = None, *, ca: str | os.PathLike | None = None,
          cert: str | os.PathLike | None = None, key: str | os.PathLike | None = None,
          server_hostname: str | None = None, timeout: float = 30.0) -> FetchResult:
    """Connect, verify the server, read its time, ask for ``nbytes`` (None: the server's default).

    ``certs`` is a folder made by ``make_certs``; ``ca``/``cert``/``key`` override single files
    (``cert=""`` presents no certificate, for tests). Raises ``DemoClientError`` with the reason
    (``CertificateError`` for a CA, certificate or key file that cannot be loaded).
    """
    if nbytes is not None and not 0 <= nbytes <= MAX_BYTES:
        raise DemoClientError(f"--bytes must be between 0 and {MAX_BYTES}")
    paths = cert_paths(certs) if certs is not None else None
    ca = ca or (paths.ca_cert if paths else None)
    if ca is None:
        raise DemoClientError("no CA given: pass certs=DIR or ca=FILE")
    if cert is None and paths is not None:
        cert, key = paths.client_cert, paths.client_key
    for f in (ca, cert, key):
        if f and not Path(f).exists():
            raise DemoClientError(f"{f}: no such file (make them with: tcp-analyzer certs DIR)")
    ctx = client_context(ca, cert or None, key or None)
    started = time.perf_counter()
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise DemoClientError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
    try:
        with ctx.wrap_socket(raw, server_hostname=server_hostname or host) as tls:
            return _exchange(tls, nbytes, started)
    except ssl.SSLError as exc:
        raise DemoClientError(_explain_tls_error(exc)) from exc
    except (socket.timeout, TimeoutError) as exc:
        raise DemoClientError(f"no answer from {host}:{port} within {timeout:g} s") from exc
    except ConnectionError as exc:
        raise DemoClientError(f"connection to {host}:{port} lost: {exc}") from exc
    finally:
        raw.close()


def _exchange(tls: ssl.SSLSocket, nbytes: int | None, started: float) -> FetchResult:
    server_cert = tls.getpeercert()
    bad_dates = check_validity(server_cert)
    if bad_dates:
        raise DemoClientError(f"server {bad_dates}")
    local_port = tls.getsockname()[1]
    f = tls.makefile("rb")
    try:
        first = _read_line(f)
        if first.startswith("ERR "):
            raise DemoClientError(f"server refused us: {first[4:]}")
        if not first.startswith("TIME "):
            raise DemoClientError(f"unexpected reply {first!r}")
        tls.sendall(b"GET\n" if nbytes is None else f"GET {nbytes}\n".encode())
        header = _read_line(f)
        if header.startswith("ERR "):
            raise DemoClientError(f"server refused the request: {header[4:]}")
        words = header.split()
        if len(words) != 2 or words[0] != "DATA" or not words[1].isdigit():
            raise DemoClientError(f"unexpected reply {header!r}")
        n = int(words[1])
        got, ok, expected = 0, True, payload(min(n, 65536))
        while got < n:
            chunk = f.read(min(65536, n - got))
            if not chunk:
                raise DemoClientError(f"server closed after {got} of {n} bytes")
            start = got % 256
            ok = ok and chunk == (expected[start:] + expected)[: len(chunk)]
            got += len(chunk)
    finally:
        f.close()
    version, cipher = tls.version() or "?", (tls.cipher() or ("?",))[0]
    try:
        plain = tls.unwrap()  # close_notify both ways
        # Close only after the server's FIN: the server closes first, so our FIN is acknowledged at
        # once (a FIN sent first can wait for a delayed ACK and be resent by a tail-loss probe,
        # which a clean demo should not show).
        plain.settimeout(2.0)
        while plain.recv(4096):
            pass
    except (OSError, ssl.SSLError, ValueError):
        pass
    return FetchResult(server_time=first[5:], nbytes=got, data_ok=ok, tls_version=version, cipher=cipher,
                       peer_cn=peer_cn(server_cert), local_port=local_port,
                       elapsed=time.perf_counter() - started)
