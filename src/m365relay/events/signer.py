"""Standard Webhooks signatures (standardwebhooks.com, PROTOCOL.md §16).

A secret is ``whsec_`` + the base64 of random key bytes (the specification asks for 24–64 bytes; we use
32). Each request carries ``webhook-id`` (the same on every retry, so receivers can drop duplicates),
``webhook-timestamp`` (Unix seconds of this attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256>``
over ``{id}.{timestamp}.{body}``. Verification (``m365relay.client.verify_webhook``) is the mirror image.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
KEY_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The key bytes of a ``whsec_`` secret (unpadded base64 is tolerated, as the reference libraries do)."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    signed = webhook_id.encode("ascii") + b"." + str(timestamp).encode("ascii") + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret_key(secret), webhook_id, timestamp, body),
        "content-type": "application/json",
    }
