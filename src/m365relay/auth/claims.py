"""Reading an access token's claims without validating it.

Clients must treat tokens as opaque for *validation* (Graph validates them), but decoding the payload to
read ``roles`` is the cheapest way to tell an administrator that admin consent is missing before any
mail is sent (PROTOCOL.md §2). If a token cannot be decoded, nothing is concluded from it.
"""

from __future__ import annotations

from typing import Any

import jwt


def token_claims(token: str) -> dict[str, Any] | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


def token_roles(token: str) -> tuple[str, ...] | None:
    """The application permissions in the token: ``()`` when ``roles`` is absent (nothing consented),
    ``None`` when the token is not a readable JWT."""
    claims = token_claims(token)
    if claims is None:
        return None
    roles = claims.get("roles") or []
    return tuple(str(r) for r in roles) if isinstance(roles, list) else ()
