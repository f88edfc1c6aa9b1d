"""The demo TLS server and client over real loopback sockets: every bad client is rejected with
its reason, a good client is served right after each, and 50 concurrent clients are all answered."""
from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from analyzer.demo.certs import issue_cert, load_ca, make_ca, make_certs
from analyzer.demo.client import DemoClientError, fetch
from analyzer.demo.server import DemoServer, parse_request

SILENT_TIMEOUT = 0.5


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
    srv = DemoServer(pki["good"].dir, port=0, nbytes=10_000, handshake_timeout=SILENT_TIMEOUT,
                     idle_timeout=SILENT_TIMEOUT).start()
    yield srv
    srv.stop()


def _good_fetch(pki, server, nbytes=None):
    host, port = server.address
    return fetch(host, port, certs=pki["good"].dir, nbytes=nbytes, timeout=10)


def _new_rejection(server, before: int, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rej = server.rejections
        if len(rej) > before:
            return rej[before]
        time.sleep(0.02)
    raise AssertionError("the server logged no rejection")


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


def _plaintext(server, data: bytes) -> bytes:
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(data)
        return s.recv(200)


def _silent(server) -> bytes:
    with socket.create_connection(server.address, timeout=5) as s:
        return s.recv(200)  # the server gives up after its handshake timeout


def _half_hello(server) -> bytes:
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00")  # a TLS record header, then nothing
        return s.recv(200)


BAD_CLIENTS = {
    "no certificate": (lambda pki, srv: _tls_client(pki, srv, cert=""), "client sent no certificate"),
    "other CA": (lambda pki, srv: _tls_client(pki, srv, *pki["other_ca"]), "unable to get local issuer"),
    "wrong CN": (lambda pki, srv: _tls_client(pki, srv, *pki["wrong_cn"]), "CN 'Mallory' is not 'DemoClt'"),
    "expired": (lambda pki, srv: _tls_client(pki, srv, *pki["expired"]), "certificate has expired"),
    "plaintext": (lambda pki, srv: _plaintext(srv, b"GET / HTTP/1.0\r\n\r\n"), "not a TLS handshake"),
    "silent": (lambda pki, srv: _silent(srv), "no TLS handshake within"),
    "half handshake": (lambda pki, srv: _half_hello(srv), f"within {SILENT_TIMEOUT:g} s"),
}


@pytest.mark.parametrize("kind", list(BAD_CLIENTS))
def test_bad_client_rejected_then_good_client_served(pki, server, kind):
    attempt, reason = BAD_CLIENTS[kind]
    before = len(server.rejections)
    try:
        answer = attempt(pki, server)
    except DemoClientError as exc:
        answer = str(exc)
    rejection = _new_rejection(server, before)
    assert reason in rejection.reason
    if kind in ("no certificate", "other CA", "wrong CN", "expired"):
        assert answer.startswith("server refused us")  # the client is told, not left hanging
    if kind == "plaintext":
        assert answer.startswith(b"ERR ")
    r = _good_fetch(pki, server, nbytes=1000)
    assert r.nbytes == 1000 and r.data_ok


def test_idle_client_after_handshake_is_dropped(pki, server):
    ctx = ssl.create_default_context(cafile=str(pki["good"].ca_cert))
    ctx.load_cert_chain(pki["good"].client_cert, pki["good"].client_key)
    before = len(server.rejections)
    with socket.create_connection(server.address, timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.recv(100).startswith(b"TIME ")
            # say nothing: the idle timeout ends it
            assert _new_rejection(server, before).reason.startswith("no request within")
    assert _good_fetch(pki, server, nbytes=10).nbytes == 10


def test_bad_request_is_answered_with_err(pki, server):
    ctx = ssl.create_default_context(cafile=str(pki["good"].ca_cert))
    ctx.load_cert_chain(pki["good"].client_cert, pki["good"].client_key)
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


def test_trickling_client_is_cut_at_the_handshake_deadline(pki, server):
    """A client sending its ClientHello one byte at a time never hits the per-read timeout."""
    before = len(server.rejections)
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40
    started = time.monotonic()
    with socket.create_connection(server.address, timeout=5) as s:
        try:
            for byte in hello:
                s.sendall(bytes([byte]))
                time.sleep(SILENT_TIMEOUT / 4)
        except OSError:
            pass
    rejection = _new_rejection(server, before)
    assert "not finished within" in rejection.reason
    assert time.monotonic() - started < SILENT_TIMEOUT * 4 + 2
    assert _good_fetch(pki, server, nbytes=5).nbytes == 5
