"""The demo TLS server and client over real loopback sockets: every bad client is rejected with
its reason, a good client is served right after each, and 50 concurrent clients are all answered.
Each connection has one deadline before its certificate is accepted, whatever it sends, and a flood
of unauthenticated peers never locks a good client out.

Timing: deadlines are a second or more, every bound a test checks has seconds of margin, and a
rejection is looked up by the client's own address (a module-wide server logs other tests' too)."""
from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
from click.testing import CliRunner

from analyzer.commands import demo as commands
from analyzer.demo.certs import issue_cert, load_ca, make_ca, make_certs
from analyzer.demo.client import DemoClientError, fetch
from analyzer.demo.server import REQUEST_MAX, DemoServer, Rejection, parse_request

STRICT = 1.0  # s: handshake and idle timeouts of the `strict` server
MARGIN = 5.0  # s: slack on every upper time bound (a loaded machine); the failures are far slower
WAIT = STRICT + MARGIN  # s to wait for a rejection to be logged


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Good certificates, plus the bad ones: another CA, wrong CN, expired client."""
    base = tmp_path_factory.mktemp("pki")
    good = make_certs(base / "good")
    ca = load_ca(good.dir)
    other_ca = make_ca(base / "other")
    return {
        "good": good,
        "other_ca": issue_cert(other_ca, base / "other", "DemoClt"),
        "wrong_cn": issue_cert(ca, base / "bad", "Mallory", stem="wrongcn"),
        "expired": issue_cert(ca, base / "bad", "DemoClt", stem="expired", expired=True),
        "expired_server_dir": make_certs(base / "expired", expired=True).dir,
    }


@pytest.fixture(scope="module")
def server(pki):
    """Default timeouts: good clients, however loaded the machine, are never near a deadline."""
    srv = DemoServer(pki["good"].dir, port=0, nbytes=10_000).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict(pki):
    """Short timeouts, for the clients that are refused by a deadline."""
    srv = DemoServer(pki["good"].dir, port=0, nbytes=10_000, handshake_timeout=STRICT,
                     idle_timeout=STRICT).start()
    yield srv
    srv.stop()


def _good_fetch(pki, server, nbytes=None):
    host, port = server.address
    return fetch(host, port, certs=pki["good"].dir, nbytes=nbytes, timeout=10)


def _rejection(server, before: int, match, timeout: float = WAIT) -> Rejection:
    """The first rejection logged after the first ``before`` for which ``match`` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for rej in server.rejections[before:]:
            if match(rej):
                return rej
        time.sleep(0.02)
    raise AssertionError(f"no such rejection logged; got {server.rejections[before:]}")


def _of(sock: socket.socket):
    """Matches the rejections of the client on ``sock``."""
    host, port = sock.getsockname()[:2]
    return lambda rej: rej.peer == f"{host}:{port}"


def test_good_client_is_served(pki, server):
    r = _good_fetch(pki, server, nbytes=300_000)
    assert r.nbytes == 300_000 and r.data_ok
    assert r.tls_version == "TLSv1.3" and r.peer_cn == "DemoSvr"
    assert r.server_time[:2] == "20"


def test_default_byte_count_is_the_servers(pki, server):
    assert _good_fetch(pki, server).nbytes == 10_000


def _tls_client(pki, server, cert=None, key=None):
    host, port = server.address
    return fetch(host, port, certs=pki["good"].dir, cert=cert, key=key, timeout=10)


def _raw(server, data: bytes, rejected: list) -> bytes:
    """Send ``data`` on a plain socket, return the answer; the client's address goes to ``rejected``."""
    with socket.create_connection(server.address, timeout=WAIT) as s:
        rejected.append(_of(s))
        if data:
            s.sendall(data)
        return s.recv(200)  # a silent client: the server gives up after its handshake timeout


def _with_reason(text: str):
    return lambda rej: text in rej.reason


# kind: (client, reason logged, True when the client is a raw socket whose rejection is found by address)
BAD_CLIENTS = {
    "no certificate": (lambda pki, srv, r: _tls_client(pki, srv, cert=""), "client sent no certificate"),
    "other CA": (lambda pki, srv, r: _tls_client(pki, srv, *pki["other_ca"]), "unable to get local issuer"),
    "wrong CN": (lambda pki, srv, r: _tls_client(pki, srv, *pki["wrong_cn"]), "CN 'Mallory' is not 'DemoClt'"),
    "expired": (lambda pki, srv, r: _tls_client(pki, srv, *pki["expired"]), "certificate has expired"),
    "plaintext": (lambda pki, srv, r: _raw(srv, b"GET / HTTP/1.0\r\n\r\n", r), "not a TLS handshake"),
    "silent": (lambda pki, srv, r: _raw(srv, b"", r), f"no TLS handshake within {STRICT:g} s"),
    "half handshake": (lambda pki, srv, r: _raw(srv, b"\x16\x03\x01\x00", r),  # a record header, then nothing
                       f"not finished within {STRICT:g} s"),
}


@pytest.mark.parametrize("kind", list(BAD_CLIENTS))
def test_bad_client_rejected_then_good_client_served(pki, strict, kind):
    attempt, reason = BAD_CLIENTS[kind]
    before, by_address = len(strict.rejections), []
    try:
        answer = attempt(pki, strict, by_address)
    except DemoClientError as exc:
        answer = str(exc)
    rejection = _rejection(strict, before, by_address[0] if by_address else _with_reason(reason))
    assert reason in rejection.reason
    if kind in ("no certificate", "other CA", "wrong CN", "expired"):
        assert answer.startswith("server refused us")  # the client is told, not left hanging
    if kind == "plaintext":
        assert answer.startswith(b"ERR ")
    r = _good_fetch(pki, strict, nbytes=1000)
    assert r.nbytes == 1000 and r.data_ok


def _good_context(pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["good"].ca_cert))
    ctx.load_cert_chain(pki["good"].client_cert, pki["good"].client_key)
    return ctx


def test_idle_client_after_handshake_is_dropped(pki, strict):
    before = len(strict.rejections)
    with socket.create_connection(strict.address, timeout=WAIT) as raw:
        with _good_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.recv(100).startswith(b"TIME ")
            # say nothing: the idle timeout ends it
            assert _rejection(strict, before, _of(tls)).reason.startswith("no request within")
    assert _good_fetch(pki, strict, nbytes=10).nbytes == 10


def test_bad_request_is_answered_with_err(pki, server):
    ctx = _good_context(pki)
    with socket.create_connection(server.address, timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            f = tls.makefile("rb")
            assert f.readline().startswith(b"TIME ")
            tls.sendall(b"PUT 12\n")
            assert f.readline().startswith(b"ERR bad request")


@pytest.mark.parametrize("line,expected", [(b"GET", 7), (b"GET 12", 12), (b"BYE", None)])
def test_parse_request(line, expected):
    assert parse_request(line, 7) == expected


@pytest.mark.parametrize("line", [b"GET -1", b"GET 99999999999", b"HELLO", b""])
def test_parse_request_refuses(line):
    with pytest.raises(ValueError):
        parse_request(line, 7)


def test_fifty_concurrent_clients_all_answered(pki, server):
    results, errors = [], []

    def one():
        try:
            results.append(_good_fetch(pki, server, nbytes=20_000))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion message
            errors.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert len(results) == 50 and all(r.nbytes == 20_000 and r.data_ok for r in results)
    assert len({r.local_port for r in results}) == 50


@pytest.mark.parametrize("case", ["other CA", "wrong name", "expired server"])
def test_client_verifies_the_server(pki, server, case):
    host, port = server.address
    if case == "other CA":
        kwargs = dict(certs=pki["good"].dir, ca=pki["other_ca"][0].parent / "DemoCA.pem")
        expect = "server certificate rejected"
    elif case == "wrong name":
        kwargs = dict(certs=pki["good"].dir, server_hostname="example.com")
        expect = "Hostname mismatch"
    else:
        with DemoServer(pki["expired_server_dir"], port=0) as expired:
            with pytest.raises(DemoClientError, match="certificate has expired"):
                fetch(*expired.address, certs=pki["expired_server_dir"])
        return
    with pytest.raises(DemoClientError, match=expect):
        fetch(host, port, **kwargs)


def test_server_port_busy_raises(pki, server):
    with pytest.raises(OSError):
        DemoServer(pki["good"].dir, port=server.address[1]).start()


def test_client_connection_refused_is_one_line(pki):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DemoClientError, match="cannot connect"):
        fetch("127.0.0.1", port, certs=pki["good"].dir)


def _trickle(address, first: bytes, interval: float, limit: float):
    """Send ``first``, then spaces, a byte every ``interval`` s, reading what comes back, until a send
    fails because the server has closed the connection (a half-close after an answer is not that).
    Returns the seconds until then (None: still open after ``limit`` s), the answer and a matcher
    for the client's rejection."""
    with socket.create_connection(address, timeout=interval) as s:
        started, answer, eof, match = time.monotonic(), b"", False, _of(s)
        for byte in first + b" " * 1_000_000:
            if time.monotonic() - started > limit:
                return None, answer, match
            try:
                s.sendall(bytes([byte]))
                if eof:
                    time.sleep(interval)
                    continue
                chunk = s.recv(4096)  # waits `interval` when nothing comes
                answer, eof = answer + chunk, not chunk
            except TimeoutError:
                continue
            except OSError:  # reset or broken pipe: the server closed it
                return time.monotonic() - started, answer, match
    raise AssertionError("unreachable")


# A ClientHello announced as 512 bytes (RFC 8446 5.1, 4.1.2), of which the server gets one at a time.
SLOW_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40


@pytest.mark.parametrize("kind", ["TLS", "plaintext"])
def test_trickling_client_is_cut_at_the_one_deadline(pki, strict, kind):
    """A client that sends a byte every 0.1 s never hits a per-read timeout; the one deadline cuts
    it, in the TLS handshake as in the plaintext answer's drain (which used to read 64 KiB)."""
    before = len(strict.rejections)
    first = SLOW_HELLO if kind == "TLS" else b"HELLO"
    took, answer, match = _trickle(strict.address, first, interval=0.1, limit=STRICT + MARGIN)
    assert took is not None, f"still connected after {STRICT + MARGIN:g} s"
    reason = _rejection(strict, before, match).reason
    if kind == "TLS":
        assert f"not finished within {STRICT:g} s" in reason
    else:
        assert "not a TLS handshake" in reason and answer.startswith(b"ERR ")
    assert _good_fetch(pki, strict, nbytes=5).nbytes == 5


def test_trickling_plaintext_flood_does_not_lock_out_a_good_client(pki):
    """Twice as many trickling plaintext clients as the server has room for connections in their
    handshake, each reconnecting as soon as it is cut: the oldest makes room for the newest after a
    fifth of the handshake timeout, so a good client is served well before any deadline."""
    timeout, room = 4.0, 4
    stop, threads = threading.Event(), []
    with DemoServer(pki["good"].dir, port=0, handshake_timeout=timeout, max_pending=room, max_clients=room) as srv:
        def trickler() -> None:
            while not stop.is_set():
                try:
                    with socket.create_connection(srv.address, timeout=1) as s:
                        while not stop.wait(0.2):
                            s.sendall(b"x")
                except OSError:  # cut by the server: come back at once
                    pass

        threads = [threading.Thread(target=trickler, daemon=True) for _ in range(2 * room)]
        try:
            for t in threads:
                t.start()
            _rejection(srv, 0, _with_reason("dropped for a newer connection"))  # the room is full
            started = time.monotonic()
            r = _good_fetch(pki, srv, nbytes=1000)
            took = time.monotonic() - started
        finally:
            stop.set()
            for t in threads:
                t.join(WAIT)
    assert r.nbytes == 1000 and r.data_ok
    assert took < timeout, f"{took:.1f} s: the good client waited for the tricklers' deadlines"


def _hold(tls: ssl.SSLSocket, release: threading.Event, interval: float) -> None:
    """Send a request a byte at a time (each resets the idle timeout, so this client keeps its
    place) until ``release`` is set, then end it: ``GET <spaces> 7``."""
    tls.sendall(b"GET")
    for _ in range(REQUEST_MAX - 8):
        if release.wait(interval):
            break
        tls.sendall(b" ")
    tls.sendall(b" 7\n")


def test_authenticated_clients_have_their_own_budget(pki):
    """One authenticated client fills ``max_clients=1``: a plaintext client is still answered at
    once; another good client waits ``idle_timeout``, then is told the server is busy."""
    idle = 2.0
    with DemoServer(pki["good"].dir, port=0, idle_timeout=idle, max_clients=1) as srv:
        with socket.create_connection(srv.address, timeout=WAIT) as raw:
            with _good_context(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.recv(100).startswith(b"TIME ")  # served: the one place is taken
                release = threading.Event()
                holder = threading.Thread(target=_hold, args=(tls, release, idle / 5))
                holder.start()
                try:
                    started = time.monotonic()
                    with socket.create_connection(srv.address, timeout=WAIT) as plain:
                        plain.sendall(b"hello\n")
                        assert plain.recv(100).startswith(b"ERR ")
                    assert time.monotonic() - started < MARGIN
                    with pytest.raises(DemoClientError, match="server busy"):
                        _good_fetch(pki, srv)
                finally:
                    release.set()
                    holder.join(WAIT)
                assert tls.makefile("rb").read() == b"DATA 7\n" + bytes(range(7))
        assert _good_fetch(pki, srv, nbytes=3).nbytes == 3  # the place is free again


def _client_hello(version: bytes) -> bytes:
    """A TLS record holding a ClientHello with ``legacy_version`` and no supported_versions
    extension (RFC 5246 7.4.1.2): a TLS 1.0/1.1 client."""
    suites = b"\x00\x2f\x00\x35\xc0\x09\xc0\x13"  # AES-CBC suites of TLS 1.0/1.1
    body = version + bytes(32) + b"\x00" + len(suites).to_bytes(2, "big") + suites + b"\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16" + version + len(handshake).to_bytes(2, "big") + handshake


@pytest.mark.parametrize("version,name", [(b"\x03\x01", "TLS 1.0"), (b"\x03\x02", "TLS 1.1")])
def test_old_tls_client_is_told_apart_from_plaintext(strict, version, name):
    before = len(strict.rejections)
    with socket.create_connection(strict.address, timeout=WAIT) as s:
        s.sendall(_client_hello(version))
        alert = s.recv(100)
        reason = _rejection(strict, before, _of(s)).reason
    assert alert[:1] == b"\x15" and alert[-1] == 70  # RFC 5246 7.2: alert protocol_version(70)
    assert "TLS 1.0/1.1" in reason and "requires TLS 1.2" in reason and "plaintext" not in reason, reason


BAD_SECONDS = ["0", "-1", "nan", "inf", "-inf"]


@pytest.mark.parametrize("option", ["--handshake-timeout", "--idle-timeout"])
@pytest.mark.parametrize("value", BAD_SECONDS)
def test_timeouts_must_be_finite_and_above_zero(pki, option, value):
    res = CliRunner().invoke(commands.tls_server_cmd, [option, value, "--certs", str(pki["good"].dir)])
    assert res.exit_code == 2 and option in res.output and "Traceback" not in res.output, res.output
    keyword = option[2:].replace("-", "_")
    with pytest.raises(ValueError, match=keyword):
        DemoServer(pki["good"].dir, port=0, **{keyword: float(value)})
    assert getattr(DemoServer(pki["good"].dir, port=0, **{keyword: 0.5}), keyword) == 0.5
