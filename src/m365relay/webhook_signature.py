"""Verifying the relay's webhooks on the receiving side (Standard Webhooks, PROTOCOL.md §16). Exported by
``m365relay.client``::

    from m365relay.client import WebhookVerificationError, verify_webhook

    try:
        event = verify_webhook(request.body, request.headers, secret="whsec_…")
    except WebhookVerificationError:
        return 400

It checks, in this order: the three headers are there; ``webhook-timestamp`` is within ``tolerance``
(5 minutes) of now — an old request replayed by someone who recorded it is refused; one of the
space-separated ``v1,<base64>`` signatures in ``webhook-signature`` (several during a secret rotation)
equals HMAC-SHA256(key, ``{id}.{timestamp}.{body}``), compared in constant time. Pass the body exactly
as received: parsing and re-serialising the JSON changes the bytes and so the signature.

Written apart from the relay's signer (events/signer.py) on purpose: this is the receiver's half, and
the tests check each half against the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from .errors import M365RelayError

TOLERANCE_SECONDS = 300


class WebhookVerificationError(M365RelayError):
    """The request is not a genuine, fresh webhook from the relay: answer 4xx and do not act on it."""

    default_remedy = (
        "Check that the receiver uses the secret shown when the endpoint was added, passes the raw body, "
        "and that its clock is right (the timestamp may be at most 5 minutes off)."
    )


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    encoded = secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise WebhookVerificationError("the webhook secret is not whsec_ followed by base64") from None
    if not key:
        raise WebhookVerificationError("the webhook secret is empty")
    return key


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The event (parsed JSON) if the signature is valid and fresh; raises WebhookVerificationError if not."""
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    lower = {k.lower(): v for k, v in headers.items()}
    webhook_id, stamp, signatures = (lower.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (webhook_id and stamp and signatures):
        raise WebhookVerificationError("webhook-id, webhook-timestamp and webhook-signature are required")
    try:
        sent_at = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time in seconds") from None
    if abs((time.time() if now is None else now) - sent_at) > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is more than {tolerance:g} s from now")
    signed = f"{webhook_id}.{sent_at}.".encode() + data
    expected = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue  # another scheme (v1a: asymmetric) is not ours to check
        try:
            given = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, given):
            parsed = json.loads(data)
            return parsed if isinstance(parsed, dict) else {"data": parsed}
    raise WebhookVerificationError("no webhook-signature matches this body with this secret")
