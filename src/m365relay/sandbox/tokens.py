"""JWTs: app-only access tokens the sandbox issues, and client assertions it verifies.

Access tokens follow the v1.0 shape Graph tokens have (PROTOCOL.md §2): `iss`
`https://sts.windows.net/{tid}/`, `roles` only when something was consented, `appidacr` 1 for a
secret and 2 for a certificate. Verifying one is cached per token string, so a busy client pays
the RSA check once per token, not once per request.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from . import aadsts
from .directory import App, Certificate, Tenant
from .pki import SandboxPki, b64url

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BACKDATE = 300  # Entra back-dates iat/nbf by five minutes
ASSERTION_SKEW = 300  # clock skew Entra tolerates on client assertions
_CACHE_LIMIT = 50_000


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenIssuer:
    """Signs access tokens and validates them for the Graph side."""

    def __init__(self, pki: SandboxPki) -> None:
        self._key = pki.signing_key
        self._public: rsa.RSAPublicKey = pki.signing_key.public_key()
        self.kid = pki.signing_kid
        self._verified: dict[str, dict[str, Any]] = {}

    def jwks(self) -> dict[str, Any]:
        numbers = self._public.public_numbers()

        def b64int(value: int) -> str:
            return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.kid,
                    "x5t": self.kid,
                    "n": b64int(numbers.n),
                    "e": b64int(numbers.e),
                    "alg": "RS256",
                }
            ]
        }

    def issue(
        self, *, tenant: Tenant, app: App, audience: str, now: float, lifetime: int, certificate: bool
    ) -> IssuedToken:
        issued = int(now)
        claims: dict[str, Any] = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tenant.id}/",
            "iat": issued - BACKDATE,
            "nbf": issued - BACKDATE,
            "exp": issued + lifetime,
            "app_displayname": app.display_name,
            "appid": app.client_id,
            "appidacr": "2" if certificate else "1",
            "idp": f"https://sts.windows.net/{tenant.id}/",
            "idtyp": "app",
            "oid": app.object_id,
            "rh": "0.sandbox.",
            "sub": app.object_id,
            "tid": tenant.id,
            "uti": b64url(uuid.uuid4().bytes),
            "ver": "1.0",
        }
        if app.granted_roles:
            # Without admin consent Entra still issues a token, just without `roles` [doc].
            claims["roles"] = list(app.granted_roles)
        token = jwt.encode(
            claims, self._key, algorithm="RS256", headers={"typ": "JWT", "x5t": self.kid, "kid": self.kid}
        )
        return IssuedToken(token, lifetime)

    def verify(self, token: str) -> dict[str, Any]:
        """Signature only (time and audience are the caller's, against the sandbox clock).

        Raises `jwt.DecodeError` for a malformed token and `jwt.InvalidSignatureError` for a forged one.
        """
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        claims: dict[str, Any] = jwt.decode(
            token,
            self._public,
            algorithms=["RS256"],
            options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified[token] = claims
        return claims


def _b64url_decode(text: str) -> bytes:
    """Accept padded and unpadded base64url thumbprints [msal]."""
    stripped = text.strip().rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def _thumbprint_of(header: dict[str, Any]) -> tuple[str, str]:
    """('sha256'|'sha1', HEX) from the assertion header's `x5t#S256` or `x5t`."""
    for name, kind in (("x5t#S256", "sha256"), ("x5t", "sha1")):
        value = header.get(name)
        if isinstance(value, str) and value:
            try:
                return kind, _b64url_decode(value).hex().upper()
            except (binascii.Error, ValueError):
                return kind, value
    return "", ""


def _find_certificate(app: App, kind: str, thumbprint: str) -> Certificate | None:
    for cert in app.certificates:
        registered = cert.thumbprint_sha256 if kind == "sha256" else cert.thumbprint_sha1
        if registered == thumbprint:
            return cert
    return None


def verify_assertion(assertion: str, app: App, *, audiences: set[str], now: float) -> None:
    """Check a certificate client assertion (PROTOCOL.md §1); raise the AADSTS error Entra would."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError as exc:
        raise aadsts.malformed_assertion() from exc
    kind, thumbprint = _thumbprint_of(header)
    if not kind:
        raise aadsts.assertion_key_problem(app.client_id, "No certificate thumbprint specified in token header", "")
    cert = _find_certificate(app, kind, thumbprint)
    if cert is None:
        raise aadsts.assertion_key_problem(app.client_id, "The key was not found.", thumbprint)
    if cert.expires_at is not None and cert.expires_at.timestamp() < now:
        raise aadsts.assertion_key_problem(app.client_id, "The key used is expired.", thumbprint)
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion,
            cert.public_key,  # type: ignore[arg-type]
            algorithms=["RS256", "PS256"],
            options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise aadsts.assertion_key_problem(
            app.client_id, "The provided signature value did not match the expected signature value.", thumbprint
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise aadsts.malformed_assertion() from exc
    _check_assertion_claims(claims, app, audiences, now)


def _check_assertion_claims(claims: dict[str, Any], app: App, audiences: set[str], now: float) -> None:
    aud = claims.get("aud")
    aud_values = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a.rstrip("/").lower() in audiences for a in aud_values):
        raise aadsts.assertion_wrong_audience(str(aud))
    if str(claims.get("iss", "")).lower() != app.client_id or str(claims.get("sub", "")).lower() != app.client_id:
        raise aadsts.assertion_wrong_issuer()
    exp, nbf = claims.get("exp"), claims.get("nbf")
    exp_f = float(exp) if isinstance(exp, int | float) else None
    nbf_f = float(nbf) if isinstance(nbf, int | float) else None
    if exp_f is None or exp_f + ASSERTION_SKEW < now or (nbf_f is not None and nbf_f - ASSERTION_SKEW > now):
        raise aadsts.assertion_out_of_window(now, nbf_f, exp_f)
