"""Demo certificates: a CA, a server and a client certificate, made with ``cryptography``.

``make_certs(dir)`` writes, into ``dir``::

    DemoCA.pem   DemoCA.key     the demo certificate authority (self-signed)
    DemoSvr.crt  DemoSvr.key    CN DemoSvr, SAN DNS:localhost + IP:127.0.0.1 (+ ::1), serverAuth
    DemoClt.crt  DemoClt.key    CN DemoClt, clientAuth

Keys are EC P-256 and written 0600, certificates 0644. Each file is written under a new random name
in ``dir`` and renamed over its final name, so whatever sat there (an old file, a symlink planted by
someone else) is replaced, never followed or opened. Validity is short (``days``, default 7) and
starts an hour in the past so small clock differences do not matter. ``expired=True`` makes the
server and client certificates end yesterday (the CA stays valid, so the failure names the
certificate that expired).

``issue_cert`` signs one more certificate with an existing CA: tests use it for a wrong CN or an
expired client; ``make_ca`` in another folder gives "a CA the server does not trust".

``load_trust`` and ``load_chain`` put these files into an ``ssl.SSLContext``; they, and the writers,
raise ``CertificateError`` with one line naming the file.

    >>> paths = make_certs(tempfile.mkdtemp())          # doctest: +SKIP
    >>> paths.client_cert.name                          # doctest: +SKIP
    'DemoClt.crt'
"""
from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import AnalyzerError

CA_NAME = "DemoCA"
SERVER_CN = "DemoSvr"
CLIENT_CN = "DemoClt"
SERVER_SAN_DNS = ("localhost",)
SERVER_SAN_IP = ("127.0.0.1", "::1")
DEFAULT_DAYS = 7
KEY_MODE = 0o600
CERT_MODE = 0o644


class CertificateError(AnalyzerError):
    """A demo certificate or key could not be written, read or used."""


@dataclass(frozen=True)
class CertPaths:
    """Where ``make_certs`` wrote each file."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class Issuer:
    """A CA that can sign: its certificate and private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tcp-analyzer demo"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _folder(directory: str | os.PathLike) -> Path:
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertificateError(f"{d}: cannot create the folder: {exc.strerror or exc}") from exc
    return d


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` with ``mode`` to a new file (O_EXCL, random name) beside ``path``, then rename
    it over ``path``: a symlink or file already at ``path`` is replaced, not followed."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise CertificateError(f"{path.parent}: cannot write {path.name}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CertificateError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write_file(path, pem, KEY_MODE)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    _write_file(path, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE)


def _validity(days: int, expired: bool) -> tuple[dt.datetime, dt.datetime]:
    now = _now()
    if expired:
        return now - dt.timedelta(days=days + 1), now - dt.timedelta(days=1)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=days)


def make_ca(directory: str | os.PathLike, name: str = CA_NAME, days: int = DEFAULT_DAYS,
            expired: bool = False) -> Issuer:
    """Make a self-signed CA; write ``<name>.pem`` and ``<name>.key`` into ``directory``."""
    d = _folder(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days, expired)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name)).issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_cert(cert, d / f"{name}.pem")
    _write_key(key, d / f"{name}.key")
    return Issuer(cert, key)


def load_ca(directory: str | os.PathLike, name: str = CA_NAME) -> Issuer:
    """Load a CA written by ``make_ca`` (to issue more certificates with it)."""
    d = Path(directory)
    cert = x509.load_pem_x509_certificate((d / f"{name}.pem").read_bytes())
    key = serialization.load_pem_private_key((d / f"{name}.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Issuer(cert, key)


def issue_cert(issuer: Issuer, directory: str | os.PathLike, cn: str, stem: str | None = None,
               server: bool = False, days: int = DEFAULT_DAYS, expired: bool = False) -> tuple[Path, Path]:
    """Sign a certificate for ``cn``; write ``<stem>.crt`` and ``<stem>.key``; return both paths.

    ``server=True`` adds the SAN (localhost, 127.0.0.1, ::1) and serverAuth; otherwise clientAuth.
    """
    d = _folder(directory)
    stem = stem or cn
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days, expired)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                       critical=False)
    )
    if server:
        san = [x509.DNSName(n) for n in SERVER_SAN_DNS]
        san += [x509.IPAddress(ipaddress.ip_address(a)) for a in SERVER_SAN_IP]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer.key, hashes.SHA256())
    crt_path, key_path = d / f"{stem}.crt", d / f"{stem}.key"
    _write_cert(cert, crt_path)
    _write_key(key, key_path)
    return crt_path, key_path


def make_certs(directory: str | os.PathLike, expired: bool = False, days: int = DEFAULT_DAYS,
               server_cn: str = SERVER_CN, client_cn: str = CLIENT_CN) -> CertPaths:
    """Write the demo CA, server and client certificates and keys into ``directory``.

    ``expired=True``: the server and client certificates ended yesterday (the CA is still valid).
    """
    d = Path(directory)
    ca = make_ca(d, CA_NAME, days=days)
    srv_crt, srv_key = issue_cert(ca, d, server_cn, stem=SERVER_CN, server=True, days=days, expired=expired)
    clt_crt, clt_key = issue_cert(ca, d, client_cn, stem=CLIENT_CN, days=days, expired=expired)
    return CertPaths(d, d / f"{CA_NAME}.pem", d / f"{CA_NAME}.key", srv_crt, srv_key, clt_crt, clt_key)


def cert_paths(directory: str | os.PathLike) -> CertPaths:
    """The paths ``make_certs`` uses in ``directory`` (files are not checked)."""
    d = Path(directory)
    return CertPaths(d, d / f"{CA_NAME}.pem", d / f"{CA_NAME}.key", d / f"{SERVER_CN}.crt",
                     d / f"{SERVER_CN}.key", d / f"{CLIENT_CN}.crt", d / f"{CLIENT_CN}.key")


def _ssl_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's words for ``exc`` without the ``(_ssl.c:NNNN)`` suffix."""
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", exc.strerror or str(exc))


def load_trust(ctx: ssl.SSLContext, ca: str | os.PathLike) -> None:
    """Make ``ctx`` trust the CA certificate in ``ca``; CertificateError naming it if it cannot."""
    try:
        ctx.load_verify_locations(cafile=os.fspath(ca))
    except ssl.SSLError as exc:
        raise CertificateError(f"{ca}: not a CA certificate OpenSSL can load ({_ssl_reason(exc)})") from exc
    except OSError as exc:
        raise CertificateError(f"{ca}: cannot read: {exc.strerror or exc}") from exc


def load_chain(ctx: ssl.SSLContext, cert: str | os.PathLike, key: str | os.PathLike | None) -> None:
    """Make ``ctx`` present ``cert`` with its private ``key``; CertificateError naming them if it cannot."""
    files = f"{cert}" + (f" / {key}" if key is not None else "")
    try:
        ctx.load_cert_chain(os.fspath(cert), os.fspath(key) if key is not None else None)
    except ssl.SSLError as exc:
        raise CertificateError(f"{files}: not a certificate and matching key OpenSSL can load "
                               f"({_ssl_reason(exc)})") from exc
    except OSError as exc:
        raise CertificateError(f"{files}: cannot read: {exc.strerror or exc}") from exc
