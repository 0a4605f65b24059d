"""STARTTLS for the SMTP relay (RFC 3207): the administrator's certificate and key (``smtp_tls_cert`` and
``smtp_tls_key``), or a self-signed pair created once in ``home/smtp-tls/`` (key file mode 0600).

A self-signed certificate still encrypts: it protects AUTH passwords from anyone listening on the network.
Clients that verify certificates need the administrator's own certificate, or ``home/smtp-tls/cert.pem`` as
their trust anchor.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import ValidationError

TLS_DIR = "smtp-tls"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
SELF_SIGNED_DAYS = 3650
RENEW_BEFORE = timedelta(days=30)


def server_context(cert: Path | None, key: Path | None, home: Path, hostname: str) -> ssl.SSLContext:
    """A server-side context (TLS 1.2 or newer) from the configured pair or the self-signed default."""
    if (cert is None) != (key is None):
        raise ValidationError(
            "smtp_tls_cert", "set both smtp_tls_cert and smtp_tls_key, or neither (then a self-signed pair is used)"
        )
    if cert is None or key is None:
        cert, key = ensure_self_signed(home / TLS_DIR, hostname)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError(
            "smtp_tls_cert",
            f"cannot load the STARTTLS certificate {str(cert)!r} with key {str(key)!r}: {type(exc).__name__}",
            remedy="Point smtp_tls_cert and smtp_tls_key at a readable PEM certificate and its private key.",
        ) from exc
    return context


def ensure_self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """The self-signed pair in ``directory``, created (or renewed shortly before it expires) as needed."""
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if cert_path.is_file() and key_path.is_file() and not _expiring(cert_path):
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    cert_pem, key_pem = self_signed_pair(hostname)
    _write(key_path, key_pem, 0o600)
    _write(cert_path, cert_pem, 0o644)
    return cert_path, key_path


def self_signed_pair(hostname: str, days: int = SELF_SIGNED_DAYS) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # RSA: old printers lack ECDSA
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "localhost")])
    now = datetime.now(UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if hostname and hostname != "localhost":
        alt_names.insert(0, _alt_name(hostname))
    alt_names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _alt_name(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def _expiring(cert_path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return True
    return cert.not_valid_after_utc - datetime.now(UTC) < RENEW_BEFORE


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with its final mode, then rename: never a readable key, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
