"""Certificate credentials: load and check a certificate + private key pair, compute the thumbprints the
Azure portal and MSAL use, and create a self-signed pair for ``m365relay cert new``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ..errors import ValidationError


@dataclass(frozen=True)
class CertificateInfo:
    certificate_pem: str
    private_key_pem: str
    thumbprint_sha1: str  # upper-case hex, as the Azure portal's Thumbprint column shows
    thumbprint_sha256: str
    subject: str
    not_after: datetime


def load_pair(
    certificate_pem: str | bytes, private_key_pem: str | bytes, passphrase: str | None = None
) -> CertificateInfo:
    cert_bytes = certificate_pem.encode() if isinstance(certificate_pem, str) else certificate_pem
    key_bytes = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError as exc:
        raise ValidationError("Certificate", "is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from exc
    try:
        key = serialization.load_pem_private_key(key_bytes, passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        raise ValidationError(
            "Private key", "is not a PEM private key, or it is encrypted and the passphrase is wrong"
        ) from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValidationError("Private key", "must be an RSA key (Microsoft Entra signs assertions with RS256/PS256)")
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        raise ValidationError("Private key", "does not belong to the certificate")
    # Store the key unencrypted inside our own encryption at rest, so no passphrase has to be kept.
    plain_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return _info(cert, plain_key)


def generate_self_signed(common_name: str, days: int = 365) -> CertificateInfo:
    if not 1 <= days <= 3650:
        raise ValidationError("--days", "must be between 1 and 3650")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    plain_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return _info(cert, plain_key)


def _info(cert: x509.Certificate, private_key_pem: str) -> CertificateInfo:
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertificateInfo(
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        private_key_pem=private_key_pem,
        thumbprint_sha1=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        thumbprint_sha256=hashlib.sha256(der).hexdigest().upper(),
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
    )
