"""The signer (relay side) and verify_webhook (receiver side) against the Standard Webhooks reference vector
and against each other: tolerance, several signatures, tampering, wrong secrets, missing headers."""

from __future__ import annotations

import base64

import pytest

from m365relay.client import WebhookVerificationError, verify_webhook
from m365relay.events.signer import new_secret, secret_key, signature, signed_headers

# The test vector published with the Standard Webhooks specification (also in its reference libraries).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def vector_headers(**changes: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    return {**headers, **changes}


def test_the_signer_reproduces_the_reference_vector() -> None:
    assert signature(secret_key(VECTOR_SECRET), VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_verify_accepts_the_reference_vector_within_five_minutes() -> None:
    assert verify_webhook(VECTOR_BODY, vector_headers(), VECTOR_SECRET, now=VECTOR_TIMESTAMP + 299) == {
        "test": 2432232314
    }
    with pytest.raises(WebhookVerificationError, match="300 s from now"):
        verify_webhook(VECTOR_BODY, vector_headers(), VECTOR_SECRET, now=VECTOR_TIMESTAMP + 301)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(VECTOR_BODY, vector_headers(), VECTOR_SECRET, now=VECTOR_TIMESTAMP - 301)


def test_one_matching_signature_among_several_is_enough() -> None:
    rotated = f"v1,{base64.b64encode(b'x' * 32).decode()} v1a,c29tZXRoaW5n {VECTOR_SIGNATURE}"
    headers = vector_headers(**{"webhook-signature": rotated})
    assert verify_webhook(VECTOR_BODY, headers, VECTOR_SECRET, now=VECTOR_TIMESTAMP)["test"] == 2432232314


@pytest.mark.parametrize(
    ("body", "headers", "secret"),
    [
        (b'{"test": 2432232315}', vector_headers(), VECTOR_SECRET),  # body altered
        (VECTOR_BODY, vector_headers(**{"webhook-id": "msg_other"}), VECTOR_SECRET),  # id altered
        (VECTOR_BODY, vector_headers(**{"webhook-timestamp": str(VECTOR_TIMESTAMP + 1)}), VECTOR_SECRET),
        (VECTOR_BODY, vector_headers(), new_secret()),  # another endpoint's secret
        (VECTOR_BODY, vector_headers(**{"webhook-signature": "v2," + VECTOR_SIGNATURE[3:]}), VECTOR_SECRET),
        (VECTOR_BODY, vector_headers(**{"webhook-signature": "v1,not base64!"}), VECTOR_SECRET),
        (VECTOR_BODY, {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TIMESTAMP)}, VECTOR_SECRET),
        (VECTOR_BODY, vector_headers(**{"webhook-timestamp": "soon"}), VECTOR_SECRET),
    ],
)
def test_anything_altered_or_missing_is_refused(body: bytes, headers: dict[str, str], secret: str) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, secret, now=VECTOR_TIMESTAMP)


def test_new_secrets_are_whsec_and_32_random_bytes_and_round_trip() -> None:
    one, two = new_secret(), new_secret()
    assert one.startswith("whsec_") and one != two
    assert len(secret_key(one)) == 32
    body = b'{"type":"message.sent"}'
    headers = signed_headers(one, "msg_abc_1", 1_800_000_000, body)
    assert headers["content-type"] == "application/json"
    # Header names are matched case-insensitively, as HTTP frameworks hand them over in any case.
    upper = {k.upper(): v for k, v in headers.items()}
    assert verify_webhook(body.decode(), upper, one, now=1_800_000_000) == {"type": "message.sent"}
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, two, now=1_800_000_000)


def test_a_malformed_secret_is_named() -> None:
    with pytest.raises(WebhookVerificationError, match="whsec_"):
        verify_webhook(VECTOR_BODY, vector_headers(), "whsec_***", now=VECTOR_TIMESTAMP)
