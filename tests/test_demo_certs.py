"""Demo certificates: names, SAN, key modes, validity, expired variant, extra issuers; planted
symlinks replaced, never followed."""
from __future__ import annotations

import datetime as dt
import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from analyzer.demo.certs import CertificateError, issue_cert, load_ca, make_ca, make_certs


def _cert(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _cn(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_files_and_names(certs):
    names = sorted(p.name for p in certs.dir.iterdir())
    assert names == ["DemoCA.key", "DemoCA.pem", "DemoClt.crt", "DemoClt.key", "DemoSvr.crt", "DemoSvr.key"]
    assert _cn(_cert(certs.ca_cert)) == "DemoCA"
    assert _cn(_cert(certs.server_cert)) == "DemoSvr"
    assert _cn(_cert(certs.client_cert)) == "DemoClt"


@pytest.mark.parametrize("which", ["ca_key", "server_key", "client_key"])
def test_keys_are_0600(certs, which):
    assert stat.S_IMODE(getattr(certs, which).stat().st_mode) == 0o600


def test_server_san_has_localhost_and_loopback(certs):
    san = _cert(certs.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)


def test_certificates_chain_to_the_ca(certs):
    ca = _cert(certs.ca_cert)
    for path in (certs.server_cert, certs.client_cert):
        _cert(path).verify_directly_issued_by(ca)


def test_validity_is_short_and_current(certs):
    now = dt.datetime.now(dt.timezone.utc)
    for path in (certs.ca_cert, certs.server_cert, certs.client_cert):
        c = _cert(path)
        assert c.not_valid_before_utc <= now < c.not_valid_after_utc
        assert c.not_valid_after_utc - now <= dt.timedelta(days=8)


def test_expired_leaf_certificates(tmp_path):
    paths = make_certs(tmp_path, expired=True)
    now = dt.datetime.now(dt.timezone.utc)
    for path in (paths.server_cert, paths.client_cert):
        assert _cert(path).not_valid_after_utc < now
    assert _cert(paths.ca_cert).not_valid_after_utc > now  # the CA stays valid: the leaf is what failed


def test_issue_with_existing_ca_and_another_ca(tmp_path, certs):
    crt, key = issue_cert(load_ca(certs.dir), tmp_path, "Mallory", stem="wrong")
    assert _cn(_cert(crt)) == "Mallory" and stat.S_IMODE(key.stat().st_mode) == 0o600
    _cert(crt).verify_directly_issued_by(_cert(certs.ca_cert))
    other = make_ca(tmp_path / "other")
    with pytest.raises(Exception):
        _cert(crt).verify_directly_issued_by(other.cert)


def test_rewriting_keeps_key_mode(tmp_path):
    make_certs(tmp_path)
    (tmp_path / "DemoClt.key").chmod(0o644)
    make_certs(tmp_path)
    assert stat.S_IMODE((tmp_path / "DemoClt.key").stat().st_mode) == 0o600


NAMES = ["DemoCA.pem", "DemoCA.key", "DemoSvr.crt", "DemoSvr.key", "DemoClt.crt", "DemoClt.key"]


@pytest.mark.parametrize("name", NAMES)
def test_a_planted_symlink_is_replaced_not_followed(tmp_path, name):
    """Someone who can write in DIR links DIR/<name> to a file of ours: make_certs must not write
    a private key (or anything) through the link."""
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    target.chmod(0o644)
    folder = tmp_path / "certs"
    folder.mkdir()
    (folder / name).symlink_to(target)
    paths = make_certs(folder)
    assert target.read_text() == "precious\n" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert not (folder / name).is_symlink() and (folder / name).is_file()
    for key in (paths.ca_key, paths.server_key, paths.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)  # no temporary file left


def test_a_folder_that_cannot_be_written_is_one_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(CertificateError, match="file/certs: cannot create the folder"):
        make_certs(tmp_path / "file" / "certs")
