"""wva.servingcerts: the metrics port's certificate, self-signed or from files, served by a real TLS
server on loopback and rotated while it runs."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wva.servingcerts import (
    CERT_FILE,
    KEY_FILE,
    ServingCertError,
    ServingCertificate,
    certificate_info,
    generate_self_signed,
)


def _ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _issue(ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], cn: str) -> tuple[bytes, bytes]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("wva.test"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), pem


def _write(folder: Path, pair: tuple[bytes, bytes]) -> None:
    """Replace both files the way a Secret volume does: new files, then a rename over the old ones."""
    for name, data in zip((CERT_FILE, KEY_FILE), pair, strict=True):
        tmp = folder / f".{name}.new"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)


def _served(port: int, ca_pem: bytes | None = None, server_name: str | None = None) -> tuple[str, str | None]:
    """(subject CN of the certificate the server presents, negotiated ALPN protocol)."""
    if ca_pem is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cadata=ca_pem.decode())
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, tls.selected_alpn_protocol()


@pytest_asyncio.fixture()
async def serve() -> AsyncIterator[object]:
    servers: list[asyncio.Server] = []

    async def start(serving: ServingCertificate) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=serving.server_context)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def test_self_signed_certificate_names_the_hosts_and_serves_clients() -> None:
    cert_pem, key_pem = generate_self_signed(["wva-abc-123", "10.1.2.3"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"wva-abc-123", "localhost"}
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"10.1.2.3", "127.0.0.1", "::1"}
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH])
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=364) < lifetime < datetime.timedelta(days=366)
    assert isinstance(serialization.load_pem_private_key(key_pem, None), ec.EllipticCurvePrivateKey)
    info = certificate_info(cert_pem)
    assert info.sha256 == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert "BEGIN" not in str(info) and "PRIVATE" not in repr(ServingCertificate(cert_pem, key_pem))


async def test_the_key_touches_the_disk_only_in_a_private_folder_removed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: object
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    serving = ServingCertificate.self_signed(["wva-0"])
    assert os.listdir(tmp_path) == []
    port = await serve(serving)  # type: ignore[operator]
    cn, alpn = await asyncio.to_thread(_served, port)
    assert cn == "wva-0"
    assert alpn == "http/1.1"  # HTTP/2 is never offered
    assert serving.server_context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_folder_without_a_usable_pair_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ServingCertError, match="not a directory"):
        ServingCertificate.from_directory(str(tmp_path / "absent"))
    with pytest.raises(ServingCertError, match=r"tls\.crt: cannot read"):
        ServingCertificate.from_directory(str(tmp_path))
    ca = _ca()
    cert, _ = _issue(ca, "one")
    _, other_key = _issue(ca, "two")
    _write(tmp_path, (cert, other_key))
    with pytest.raises(ServingCertError, match="do not load together"):
        ServingCertificate.from_directory(str(tmp_path))
    _write(tmp_path, (b"not a certificate", other_key))
    with pytest.raises(ServingCertError):
        ServingCertificate.from_directory(str(tmp_path))


async def test_rotated_files_are_served_on_the_next_connection(
    tmp_path: Path, serve: object, caplog: pytest.LogCaptureFixture
) -> None:
    """The certificate a scraper verifies with the CA is replaced on disk: new connections get the new one
    without a restart; a broken pair is logged once and the last good certificate stays."""
    caplog.set_level(logging.INFO, "wva.servingcerts")
    ca = _ca()
    ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
    _write(tmp_path, _issue(ca, "first"))
    serving = ServingCertificate.from_directory(str(tmp_path), check_interval=0.0)
    port = await serve(serving)  # type: ignore[operator]
    assert (await asyncio.to_thread(_served, port, ca_pem, "wva.test"))[0] == "first"
    assert not serving.reload_if_changed()  # nothing changed

    _write(tmp_path, _issue(ca, "second"))
    assert (await asyncio.to_thread(_served, port, ca_pem, "wva.test"))[0] == "second"
    assert serving.reloads == 1 and "Metrics serving certificate reloaded" in caplog.text

    # a half-rotated pair (a key of another certificate): refused once, the last good one is served
    cert, _ = _issue(ca, "third")
    _, wrong_key = _issue(ca, "fourth")
    _write(tmp_path, (cert, wrong_key))
    for _ in range(3):
        assert (await asyncio.to_thread(_served, port, ca_pem, "wva.test"))[0] == "second"
    failures = [r for r in caplog.records if "reload failed" in r.getMessage()]
    assert len(failures) == 1 and "do not load together" in failures[0].getMessage()
    assert failures[0].levelno == logging.WARNING

    _write(tmp_path, _issue(ca, "fifth"))
    assert (await asyncio.to_thread(_served, port, ca_pem, "wva.test"))[0] == "fifth"
    assert serving.reloads == 2


async def test_files_are_looked_at_no_more_than_once_per_check_interval(tmp_path: Path, serve: object) -> None:
    now = [100.0]
    ca = _ca()
    _write(tmp_path, _issue(ca, "first"))
    serving = ServingCertificate.from_directory(str(tmp_path), check_interval=1.0, clock=lambda: now[0])
    port = await serve(serving)  # type: ignore[operator]
    _write(tmp_path, _issue(ca, "second"))
    now[0] += 0.5
    assert (await asyncio.to_thread(_served, port))[0] == "first"  # within the interval: not looked at
    now[0] += 0.6
    assert (await asyncio.to_thread(_served, port))[0] == "second"


def test_a_self_signed_certificate_is_renewed_before_it_expires() -> None:
    cert_pem, key_pem = generate_self_signed(["wva-0"], validity=datetime.timedelta(days=10))
    serving = ServingCertificate(cert_pem, key_pem, hosts=["wva-0"])
    old = serving.info
    assert serving.reload_if_changed()
    assert serving.info.sha256 != old.sha256
    assert serving.info.not_after - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=300)
    assert not serving.reload_if_changed()  # a year left: kept
