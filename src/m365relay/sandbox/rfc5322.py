"""Just enough RFC 5322 for the sandbox: header scanning, Bcc removal, building a message from JSON.

The hot path (MIME sendMail) only scans the header block: parsing a whole message with the
`email` package costs far more than the rest of a request, and Exchange needs nothing from the
body to accept it. Full parsing happens only when someone looks at a captured message.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses
from typing import Any

_ADDRESS_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_SEPARATOR_RE = re.compile(rb"\r?\n\r?\n")


def valid_address(address: str) -> bool:
    return bool(_ADDRESS_RE.match(address))


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line break, body) — a message may lack a body."""
    match = _SEPARATOR_RE.search(raw)
    if match is None:
        return raw, b""
    newline = b"\r\n" if match.group().startswith(b"\r\n") else b"\n"
    return raw[: match.start()] + newline, raw[match.end() :]


def header_lines(block: bytes) -> list[list[bytes]]:
    """Header fields as lists of physical lines (first line + continuation lines)."""
    fields: list[list[bytes]] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        elif line.strip():
            fields.append([line])
    return fields


def header_fields(block: bytes) -> list[tuple[str, str]]:
    """Unfolded (name, value) pairs; raw 8-bit values are read as UTF-8 (RFC 6532)."""
    out: list[tuple[str, str]] = []
    for lines in header_lines(block):
        text = b"".join(lines).decode("utf-8", "replace")
        name, sep, value = text.partition(":")
        if sep:
            out.append((name.strip(), re.sub(r"\r?\n", "", value).strip()))
    return out


def without_headers(raw: bytes, names: set[str]) -> bytes:
    """The message with the named header fields removed (e.g. Bcc before delivery)."""
    block, body = split_message(raw)
    kept = [
        b"".join(lines)
        for lines in header_lines(block)
        if lines[0].split(b":", 1)[0].strip().decode("ascii", "replace").lower() not in names
    ]
    newline = b"\r\n" if b"\r\n" in block else b"\n"
    return b"".join(kept) + newline + body


def prepend_headers(raw: bytes, fields: list[tuple[str, str]]) -> bytes:
    newline = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    return b"".join(f"{n}: {v}".encode() + newline for n, v in fields) + raw


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words (`=?utf-8?...?=`) when present."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError):
        return value


_ANGLE_RE = re.compile(r"<([^<>]*)>")


def address_list(values: list[str]) -> list[str]:
    """Addresses of To/Cc/Bcc/From values; plain lists skip the (slow) full RFC 5322 parser."""
    out: list[str] = []
    for value in values:
        if '"' in value or "(" in value or ":" in value:
            out.extend(addr for _, addr in getaddresses([value]) if addr)
            continue
        for raw_item in value.split(","):
            item = raw_item.strip()
            if not item:
                continue
            angle = _ANGLE_RE.search(item)
            out.append(angle.group(1).strip() if angle else item)
    return out


@dataclass(frozen=True)
class Envelope:
    """What a MIME submission tells Exchange: its senders and recipients (Graph has no envelope)."""

    from_addresses: list[str]
    to: list[str]
    cc: list[str]
    bcc: list[str]
    subject: str
    message_id: str
    has_date: bool = False

    @property
    def recipients(self) -> list[str]:
        return self.to + self.cc + self.bcc


def read_envelope(raw: bytes) -> Envelope:
    block, _ = split_message(raw)
    values: dict[str, list[str]] = {}
    for name, value in header_fields(block):
        values.setdefault(name.lower(), []).append(value)
    return Envelope(
        from_addresses=address_list(values.get("from", [])),
        to=address_list(values.get("to", [])),
        cc=address_list(values.get("cc", [])),
        bcc=address_list(values.get("bcc", [])),
        subject=decode_words(values.get("subject", [""])[0]),
        message_id=values.get("message-id", [""])[0],
        has_date="date" in values,
    )


def decode_base64(text: bytes) -> bytes:
    """Strict base64 after removing line breaks (clients may wrap at 76 columns)."""
    compact = b"".join(text.split())
    if not compact:
        raise ValueError("empty MIME content")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from exc


def format_address(entry: dict[str, Any]) -> str:
    inner = entry.get("emailAddress") or {}
    address = str(inner.get("address") or "")
    name = str(inner.get("name") or "")
    if not name:
        return address
    local, _, domain = address.partition("@")
    return str(Address(display_name=name, username=local, domain=domain))


@dataclass(frozen=True)
class AttachmentData:
    name: str
    content_type: str
    data: bytes
    is_inline: bool
    content_id: str | None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "content_type": self.content_type,
            "size": len(self.data),
            "is_inline": self.is_inline,
            "content_id": self.content_id,
        }


def _one_line(value: Any) -> str:
    # Exchange does not let a JSON property smuggle extra header lines in.
    return re.sub(r"[\r\n]+", " ", str(value))


def _headers(msg: EmailMessage, message: dict[str, Any], from_header: str, date: float, message_id: str) -> None:
    msg["From"] = from_header
    for header, key in (("To", "toRecipients"), ("Cc", "ccRecipients"), ("Reply-To", "replyTo")):
        entries = message.get(key) or []
        if entries:
            msg[header] = ", ".join(format_address(e) for e in entries)
    msg["Subject"] = _one_line(message.get("subject") or "")
    msg["Date"] = format_datetime(datetime.fromtimestamp(date, tz=UTC))
    msg["Message-ID"] = message_id
    importance = str(message.get("importance") or "normal").lower()
    if importance in ("low", "high"):
        msg["Importance"] = importance
        msg["X-Priority"] = "1" if importance == "high" else "5"
    for item in message.get("internetMessageHeaders") or []:
        msg[_one_line(item["name"])] = _one_line(item.get("value", ""))


def _attach(msg: EmailMessage, attachments: list[AttachmentData]) -> None:
    """Inline parts first (multipart/related with the body), then the others (multipart/mixed)."""
    for inline in (True, False):
        for att in attachments:
            if att.is_inline != inline:
                continue
            maintype, _, subtype = att.content_type.partition("/")
            kwargs: dict[str, Any] = {
                "maintype": maintype or "application",
                "subtype": subtype or "octet-stream",
                "filename": att.name,
                "cid": f"<{att.content_id}>" if att.content_id else None,
            }
            if inline:
                msg.add_related(att.data, disposition="inline", **kwargs)
            else:
                msg.add_attachment(att.data, **kwargs)


def build_message(
    message: dict[str, Any],
    *,
    from_header: str,
    date: float,
    message_id: str,
    attachments: list[AttachmentData],
) -> bytes:
    """The RFC 5322 message Exchange would deliver for a Graph JSON message (Bcc omitted)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    _headers(msg, message, from_header, date, message_id)
    body = message.get("body") or {}
    subtype = "html" if str(body.get("contentType", "text")).lower() == "html" else "plain"
    msg.set_content(str(body.get("content") or ""), subtype=subtype, charset="utf-8")
    _attach(msg, attachments)
    return msg.as_bytes()


def with_attachments(raw: bytes, attachments: tuple[AttachmentData, ...]) -> bytes:
    """A MIME draft with the attachments added later (upload sessions): the message's own header fields stay
    as they are, its body becomes the first part of a multipart/mixed, each attachment a further part."""
    if not attachments:
        return raw
    block, body = split_message(raw)
    newline = b"\r\n" if b"\r\n" in block else b"\n"
    content = {"content-type", "content-transfer-encoding", "content-disposition", "content-id"}
    kept: list[bytes] = []
    moved: list[bytes] = []
    for lines in header_lines(block):
        name = lines[0].split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        (moved if name in content else kept).append(b"".join(lines))
    boundary = f"----=_sandbox_{uuid.uuid4().hex}"
    out = [*kept, f'Content-Type: multipart/mixed; boundary="{boundary}"'.encode() + newline, newline]
    out += [f"--{boundary}".encode() + newline, *moved, newline, body, newline]
    for att in attachments:
        part = EmailMessage(policy=email.policy.SMTP)
        maintype, _, subtype = att.content_type.partition("/")
        part.set_content(att.data, maintype=maintype or "application", subtype=subtype or "octet-stream",
                         disposition="inline" if att.is_inline else "attachment", filename=att.name,
                         cid=f"<{att.content_id}>" if att.content_id else None)  # fmt: skip
        out += [f"--{boundary}".encode() + newline, part.as_bytes(), newline]
    out.append(f"--{boundary}--".encode() + newline)
    return b"".join(out)
