"""The sandbox's local PKI: a CA, a server certificate for 127.0.0.1/localhost, and the token signing key.

Generated on first run in the data directory and reused afterwards, so a client that trusts
`ca.pem` once keeps trusting the sandbox across restarts. EC P-256 keeps the TLS handshake cheap;
the token signing key is RSA 2048 because Entra signs access tokens with RS256.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
SERVER_CERT_FILE = "server.pem"
SERVER_KEY_FILE = "server.key"
SIGNING_KEY_FILE = "token-signing.key"
SIGNING_CERT_FILE = "token-signing.pem"

_TEN_YEARS = timedelta(days=3650)
_SERVER_LIFETIME = timedelta(days=825)  # the longest lifetime browsers accept for a leaf


@dataclass(frozen=True)
class SandboxPki:
    """Paths of the PEM files plus the loaded token signing material."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    signing_key: rsa.RSAPrivateKey
    signing_cert: x509.Certificate

    @property
    def signing_kid(self) -> str:
        """Entra uses the base64url SHA-1 thumbprint of the signing certificate as both `kid` and `x5t`."""
        return b64url(self.signing_cert.fingerprint(hashes.SHA1()))  # noqa: S303 - thumbprint, not security


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _write_private(path: Path, data: bytes) -> None:
    """Write a key file readable by the owner only (mode 0600 from creation, no race)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "m365relay sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _make_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = _name("m365relay sandbox local CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _TEN_YEARS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_server(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _SERVER_LIFETIME)
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _make_signing() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    subject = _name("m365relay sandbox token signing")
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _TEN_YEARS)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_pki(data_dir: Path) -> SandboxPki:
    """Load the PKI from `data_dir`, creating whatever is missing."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ca_path, ca_key_path = data_dir / CA_FILE, data_dir / CA_KEY_FILE
    if not (ca_path.exists() and ca_key_path.exists()):
        ca_key, ca_cert = _make_ca()
        _write_private(ca_key_path, _key_pem(ca_key))
        ca_path.write_bytes(_pem(ca_cert))
        # A new CA invalidates any server certificate signed by an older one.
        (data_dir / SERVER_CERT_FILE).unlink(missing_ok=True)
    server_path, server_key_path = data_dir / SERVER_CERT_FILE, data_dir / SERVER_KEY_FILE
    if not (server_path.exists() and server_key_path.exists()):
        loaded_ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        assert isinstance(loaded_ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
        server_key, server_cert = _make_server(loaded_ca_key, ca_cert)
        _write_private(server_key_path, _key_pem(server_key))
        server_path.write_bytes(_pem(server_cert))
    signing_key_path, signing_cert_path = data_dir / SIGNING_KEY_FILE, data_dir / SIGNING_CERT_FILE
    if not (signing_key_path.exists() and signing_cert_path.exists()):
        new_key, new_cert = _make_signing()
        _write_private(signing_key_path, _key_pem(new_key))
        signing_cert_path.write_bytes(_pem(new_cert))
    signing_key = serialization.load_pem_private_key(signing_key_path.read_bytes(), password=None)
    assert isinstance(signing_key, rsa.RSAPrivateKey)
    return SandboxPki(
        ca_file=ca_path,
        server_cert_file=server_path,
        server_key_file=server_key_path,
        signing_key=signing_key,
        signing_cert=x509.load_pem_x509_certificate(signing_cert_path.read_bytes()),
    )


def thumbprints(cert: x509.Certificate) -> tuple[str, str]:
    """(SHA-1 hex upper, SHA-256 hex upper) of the DER certificate, as the Azure portal shows them."""
    der = cert.public_bytes(serialization.Encoding.DER)
    return (
        hashlib.sha1(der).hexdigest().upper(),  # noqa: S324 - a thumbprint, not a security hash
        hashlib.sha256(der).hexdigest().upper(),
    )
