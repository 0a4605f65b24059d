"""Compare what the sandbox captured with what was handed to the relay: reusable for any regression test.

``differences(sent, received, ...)`` lists, in words, every way the delivered message departs from what a
faithful relay may change:

* every header field the relay must not touch, byte for byte (folding and encoding included) and in order;
  only line ends are normalised to CRLF (RFC 5322 §2.2), as the relay does;
* a Message-ID and Date the sender gave, byte for byte (the relay adds them only when missing);
* the decoded text of every text part, and every other part's file name, media type and SHA-256;
* the delivered recipients equal the envelope, no more and no fewer.

Written independently of the relay's own MIME code, so a bug there cannot hide itself here.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
from email.message import EmailMessage

# What the relay may change (From policy, envelope alignment, its trace field); Exchange strips Bcc.
MAY_CHANGE = frozenset({"from", "sender", "reply-to", "to", "cc", "bcc", "received"})
KEPT_IF_GIVEN = ("message-id", "date")


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def header_fields(raw: bytes) -> list[tuple[str, bytes]]:
    """(lower-case name, whole field bytes) of the header block, CRLF line ends."""
    data = crlf(raw)
    end = data.find(b"\r\n\r\n")
    block = data[: end + 2] if end >= 0 else data + (b"" if data.endswith(b"\r\n") else b"\r\n")
    fields: list[tuple[str, bytes]] = []
    for line in block.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line + b"\r\n")
        else:
            fields.append((line.split(b":", 1)[0].strip().decode("ascii", "replace").lower(), line + b"\r\n"))
    return fields


def untouched(fields: list[tuple[str, bytes]], may_change: frozenset[str]) -> list[tuple[str, bytes]]:
    return [(n, f) for n, f in fields if n not in may_change and n not in KEPT_IF_GIVEN]


def parts(raw: bytes) -> list[tuple[str, ...]]:
    """A fingerprint of every leaf part: text decoded, everything else by name, type and SHA-256."""
    parsed = email.message_from_bytes(crlf(raw), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    out: list[tuple[str, ...]] = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        try:
            filename = str(part.get_filename() or "")
        except Exception as exc:
            filename = f"<unreadable: {type(exc).__name__}>"
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_content_maintype() == "text" and part.get_content_disposition() != "attachment":
            try:
                text = str(part.get_content())
            except Exception:
                text = data.decode("latin-1")
            out.append(("text", ctype, filename, text.replace("\r\n", "\n")))
        else:
            out.append(("file", ctype, filename, hashlib.sha256(data).hexdigest()))
    return out


def differences(
    sent: bytes,
    received: bytes,
    *,
    envelope: list[str],
    delivered: list[str],
    may_change: frozenset[str] = MAY_CHANGE,
) -> list[str]:
    found: list[str] = []
    sent_fields, got_fields = header_fields(sent), header_fields(received)
    want, got = untouched(sent_fields, may_change), untouched(got_fields, may_change)
    if want != got:
        for index in range(max(len(want), len(got))):
            a = want[index] if index < len(want) else None
            b = got[index] if index < len(got) else None
            if a != b:
                found.append(f"header field #{index} differs: sent {a!r}, received {b!r}")
                break
    for name in KEPT_IF_GIVEN:
        given = [f for n, f in sent_fields if n == name]
        if given and given != [f for n, f in got_fields if n == name]:
            found.append(f"{name} changed: sent {given!r}")
    if parts(sent) != parts(received):
        found.append("the MIME parts differ (decoded text, or an attachment's name, type or SHA-256)")
    if sorted(a.lower() for a in delivered) != sorted(a.lower() for a in envelope):
        found.append(f"delivered to {sorted(delivered)}, the envelope named {sorted(envelope)}")
    return found
