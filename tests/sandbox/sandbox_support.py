"""Helpers shared by the sandbox tests: tokens, Graph calls, certificates. Only public HTTP is used."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from m365relay.sandbox import SandboxServer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def demo(server: SandboxServer) -> dict[str, Any]:
    return server.demo_info


def token_request(api: httpx.Client, server: SandboxServer, **overrides: Any) -> httpx.Response:
    info = server.demo_info
    tenant = overrides.pop("tenant", info["tenant_id"])
    form = {
        "grant_type": "client_credentials",
        "client_id": info["client_id"],
        "client_secret": info["secret_value"],
        "scope": "https://graph.microsoft.com/.default",
    }
    form.update(overrides)
    form = {k: v for k, v in form.items() if v is not None}
    return api.post(f"/{tenant}/oauth2/v2.0/token", data=form)


def token(api: httpx.Client, server: SandboxServer, **overrides: Any) -> str:
    response = token_request(api, server, **overrides)
    assert response.status_code == 200, response.text
    value: str = response.json()["access_token"]
    return value


def claims_of(access_token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return decoded


def bearer(access_token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}", **extra}


def send_mime(api: httpx.Client, mailbox: str, access_token: str, raw: bytes, **headers: str) -> httpx.Response:
    return api.post(
        f"/v1.0/users/{mailbox}/sendMail",
        content=base64.b64encode(raw),
        headers=bearer(access_token, **{"Content-Type": "text/plain", **headers}),
    )


def send_json(api: httpx.Client, mailbox: str, access_token: str, payload: dict[str, Any]) -> httpx.Response:
    return api.post(f"/v1.0/users/{mailbox}/sendMail", json=payload, headers=bearer(access_token))


def simple_message(to: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    message = {
        "subject": "Hello",
        "body": {"contentType": "Text", "content": "Hi there"},
        "toRecipients": [{"emailAddress": {"address": a}} for a in (to or ["alice@example.com"])],
    }
    message.update(extra)
    return {"message": message}


def mime(sender: str, to: str = "alice@example.com", extra: str = "", subject: str = "MIME test") -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\n{extra}Subject: {subject}\r\nMessage-ID: <{uuid.uuid4()}@example.com>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBody line\r\n"
    ).encode()


def graph_error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


@dataclass(frozen=True)
class AppCertificate:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def thumbprint(self, algorithm: str = "sha1") -> bytes:
        der = self.cert.public_bytes(serialization.Encoding.DER)
        return hashlib.new(algorithm, der).digest()


def make_certificate(days: int = 365) -> AppCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m365relay test app")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return AppCertificate(key, cert)


def b64url(data: bytes, *, padded: bool = False) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    return text if padded else text.rstrip("=")


def assertion(
    cert: AppCertificate,
    client_id: str,
    audience: str,
    *,
    header_form: str = "x5t#S256",
    padded: bool = False,
    now: float | None = None,
    **claim_overrides: Any,
) -> str:
    """A hand-made client assertion, for the negative cases MSAL would never produce."""
    moment = time.time() if now is None else now
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "nbf": moment,
        "iat": moment,
        "exp": moment + 600,
    }
    claims.update(claim_overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    if header_form == "x5t#S256":
        headers = {"x5t#S256": b64url(cert.thumbprint("sha256"), padded=padded)}
        algorithm = "PS256"
    else:
        headers = {"x5t": b64url(cert.thumbprint("sha1"), padded=padded)}
        algorithm = "RS256"
    return jwt.encode(claims, cert.key, algorithm=algorithm, headers=headers)
