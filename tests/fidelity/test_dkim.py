"""A DKIM-signed message (RFC 6376, relaxed/relaxed and simple/simple) still verifies after the relay when
there is no From to rewrite (policy ``enforce``, From = the mailbox): the relay changes no signed byte.
Verified against what the sandbox captured, with the public key served by a stub DNS lookup."""

from __future__ import annotations

import base64
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support import SandboxAdmin

SELECTOR = b"test"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _dns(key: rsa.RSAPrivateKey) -> Any:
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return record if name.startswith(SELECTOR + b"._domainkey.") else b""

    return lookup


@pytest.mark.parametrize("canonicalize", [(b"relaxed", b"relaxed"), (b"simple", b"simple")], ids=["relaxed", "simple"])
def test_a_signed_message_still_verifies_after_the_relay(
    start_relay: Any, admin: SandboxAdmin, key: rsa.RSAPrivateKey, canonicalize: tuple[bytes, bytes]
) -> None:
    relay = start_relay(smtp_from_policy="enforce")
    mailbox = relay.connector.user_name
    domain = mailbox.rpartition("@")[2].encode()
    message = (
        f"From: Alerts <{mailbox}>\r\n"
        "To: Ann Example <ann@example.com>\r\n"
        "Subject: =?utf-8?q?Signed_r=C3=A9sum=C3=A9?= with a subject long enough to be folded by a\r\n"
        " relay that re-folds lines\r\n"
        "Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        "Message-ID: <dkim-test-1@example.com>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Signed body, with a line that is fairly long but well under the limit of the protocol.\r\n"
    ).encode()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    signature = dkim.sign(
        message, SELECTOR, domain, pem, canonicalize=canonicalize,
        include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type"],
    )  # fmt: skip
    signed = signature + message
    assert dkim.verify(signed, dnsfunc=_dns(key)), "the test's own signature must verify"

    relay.smtp().sendmail(mailbox, ["ann@example.com"], signed)
    relay.deliver()
    captured = admin.only_message()
    received = admin.client.get(f"/_sandbox/messages/{captured['id']}/raw").content
    assert dkim.verify(received, dnsfunc=_dns(key)), "the relay changed a signed byte"
