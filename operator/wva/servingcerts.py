"""The TLS certificate of the metrics port: self-signed at start, or files that are reloaded when they rotate.

Two sources, as controller-runtime's metrics server has:

* **self-signed** (the default): an ECDSA P-256 key and a certificate valid for a year, made in memory
  when the operator starts. Scrapers cannot verify it (``insecureSkipVerify``), but the traffic is
  encrypted and the bearer token does not cross the network in clear. It is renewed in place a month
  before it expires.
* **a directory** (``--metrics-cert-path DIR``) holding ``tls.crt`` and ``tls.key``, e.g. a mounted
  ``kubernetes.io/tls`` Secret from cert-manager or the OpenShift service CA. The files are checked at
  most once a second, on new TLS handshakes; when they changed, the new pair is loaded and used for
  every later connection. A pair that does not load (a key that does not match, a half-written file)
  is logged once and the previous certificate stays in use.

The key material only touches the disk in a private temporary directory (``0700`` under ``$TMPDIR`` or
``/tmp``), for the moment ``ssl.SSLContext.load_cert_chain`` reads it; the directory is removed at once.
Only HTTP/1.1 is offered through ALPN: aiohttp serves no HTTP/2, which also keeps the metrics port clear
of the HTTP/2 rapid-reset class of attacks.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "CertificateInfo",
    "ServingCertError",
    "ServingCertificate",
    "generate_self_signed",
]

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
SELF_SIGNED_VALIDITY = datetime.timedelta(days=365)
SELF_SIGNED_RENEW_BEFORE = datetime.timedelta(days=30)
CHECK_INTERVAL = 1.0  # seconds between two looks at the certificate files (on handshakes)


class ServingCertError(ValueError):
    """The certificate files are missing, unreadable or do not make a certificate and its key."""


@dataclass(frozen=True)
class CertificateInfo:
    """What the logs say about a certificate: never the key."""

    subject: str
    sha256: str  # fingerprint of the DER certificate, hex
    not_after: datetime.datetime

    def __str__(self) -> str:
        return f"subject={self.subject} sha256={self.sha256} not_after={self.not_after:%Y-%m-%dT%H:%M:%SZ}"


def generate_self_signed(
    hosts: Sequence[str] = (), *, now: datetime.datetime | None = None,
    validity: datetime.timedelta = SELF_SIGNED_VALIDITY,
) -> tuple[bytes, bytes]:
    """A self-signed serving certificate and its key (PEM) for ``hosts`` plus localhost and loopback."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    names: dict[str, None] = dict.fromkeys(h for h in (*hosts, "localhost") if h)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    alt += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (hosts[0] if hosts and hosts[0] else "wva")[:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wva (self-signed)")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clock skew of the scrapers
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def certificate_info(cert_pem: bytes) -> CertificateInfo:
    """Subject, fingerprint and expiry of the first certificate in ``cert_pem``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ServingCertError(f"not a PEM certificate ({exc})") from None
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertificateInfo(cert.subject.rfc4514_string(), hashlib.sha256(der).hexdigest(), cert.not_valid_after_utc)


def _server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2+, HTTP/1.1 only) holding the pair; raises ServingCertError when it
    does not load. The PEM goes through a private temporary directory, removed before returning."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    folder = tempfile.mkdtemp(prefix="wva-serving-cert-")  # mode 0700
    try:
        cert_path, key_path = os.path.join(folder, CERT_FILE), os.path.join(folder, KEY_FILE)
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise ServingCertError(f"the certificate and key do not load together ({exc.reason or exc})") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return context


Signature = tuple[tuple[int, int, int], ...]


class ServingCertificate:
    """The certificate the metrics port serves, and the ``ssl.SSLContext`` to serve it with.

    Build one with :meth:`self_signed` or :meth:`from_directory`; hand :attr:`server_context` to the
    server. Each handshake asks :meth:`current_context` (through the context's SNI callback, which
    OpenSSL calls with or without SNI), so a rotated certificate is served on the next connection.
    """

    def __init__(
        self,
        cert_pem: bytes,
        key_pem: bytes,
        *,
        directory: str | None = None,
        hosts: Sequence[str] = (),
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.hosts = tuple(hosts)
        self.check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self.info = certificate_info(cert_pem)
        self._current = _server_context(cert_pem, key_pem)
        self.server_context = self._current
        self.server_context.sni_callback = self._on_handshake
        self._signature: Signature | None = self._stat() if directory else None
        self._failed: Signature | None = None
        self._checked = clock()
        self.reloads = 0

    def __repr__(self) -> str:
        source = f"directory={self.directory!r}" if self.directory else "self-signed"
        return f"ServingCertificate({source}, {self.info})"

    @classmethod
    def self_signed(cls, hosts: Sequence[str] = (), **kwargs: Any) -> ServingCertificate:
        cert_pem, key_pem = generate_self_signed(hosts)
        serving = cls(cert_pem, key_pem, hosts=hosts, **kwargs)
        log.info("Metrics serving certificate generated (self-signed) %s", serving.info)
        return serving

    @classmethod
    def from_directory(cls, directory: str, **kwargs: Any) -> ServingCertificate:
        cert_pem, key_pem = _read_pair(directory)
        serving = cls(cert_pem, key_pem, directory=directory, **kwargs)
        log.info("Metrics serving certificate loaded path=%s %s", directory, serving.info)
        return serving

    @property
    def source(self) -> str:
        return self.directory or "self-signed"

    # --- rotation -------------------------------------------------------------------------------------
    def current_context(self) -> ssl.SSLContext:
        """The context new connections get: reloaded first if the files changed (at most every check_interval)."""
        now = self._clock()
        if now - self._checked >= self.check_interval:
            self._checked = now
            self.reload_if_changed()
        return self._current

    def reload_if_changed(self) -> bool:
        """Load the certificate again if its files changed (or, self-signed, if it is about to expire).

        Returns whether a new certificate is now served. A pair that does not load is logged once per
        change of the files, and the previous certificate stays.
        """
        with self._lock:
            if self.directory is None:
                return self._renew_self_signed()
            signature = self._stat()
            if signature == self._signature or signature == self._failed:
                return False
            try:
                cert_pem, key_pem = _read_pair(self.directory)
                context, info = _server_context(cert_pem, key_pem), certificate_info(cert_pem)
            except ServingCertError as exc:
                self._failed = signature
                log.warning("Metrics serving certificate reload failed; keeping the previous one path=%s error=%s",
                            self.directory, exc)
                return False
            self._current, self.info, self._signature, self._failed = context, info, signature, None
            self.reloads += 1
            log.info("Metrics serving certificate reloaded path=%s %s", self.directory, info)
            return True

    def _renew_self_signed(self) -> bool:
        if self.info.not_after - datetime.datetime.now(datetime.UTC) > SELF_SIGNED_RENEW_BEFORE:
            return False
        cert_pem, key_pem = generate_self_signed(self.hosts)
        self._current, self.info = _server_context(cert_pem, key_pem), certificate_info(cert_pem)
        self.reloads += 1
        log.info("Metrics serving certificate renewed (self-signed) %s", self.info)
        return True

    def _stat(self) -> Signature:
        assert self.directory is not None
        out = []
        for name in (CERT_FILE, KEY_FILE):
            try:
                st = os.stat(os.path.join(self.directory, name))  # follows a Secret volume's ..data symlinks
            except OSError:
                out.append((0, 0, 0))
                continue
            out.append((st.st_mtime_ns, st.st_ino, st.st_size))
        return tuple(out)

    def _on_handshake(self, ssl_object: Any, _server_name: str | None, _context: ssl.SSLContext) -> None:
        try:
            context = self.current_context()
            if context is not self.server_context:
                ssl_object.context = context
        except Exception:  # never fail a handshake over a reload problem: the old certificate is still good
            log.exception("Metrics serving certificate check failed")


def _read_pair(directory: str) -> tuple[bytes, bytes]:
    folder = Path(directory)
    if not folder.is_dir():
        raise ServingCertError(f"{directory}: not a directory (expected {CERT_FILE} and {KEY_FILE} in it)")
    pair = []
    for name in (CERT_FILE, KEY_FILE):
        try:
            pair.append((folder / name).read_bytes())
        except OSError as exc:
            raise ServingCertError(f"{folder / name}: cannot read: {exc.strerror or exc}") from None
    return pair[0], pair[1]
