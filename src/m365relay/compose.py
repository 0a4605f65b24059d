"""Building an RFC 5322 message from simple fields (CLI ``send``, the library, the JSON API)."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from .addresses import AddressError, parse_mailbox
from .errors import ValidationError

RESERVED_HEADERS = {
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "reply-to",
    "date",
    "message-id",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
}


@dataclass(frozen=True)
class AttachmentSpec:
    filename: str
    content: bytes
    content_type: str | None = None
    content_id: str | None = None  # set → an inline part that HTML refers to as cid:…

    @property
    def mime_type(self) -> tuple[str, str]:
        guessed = self.content_type or mimetypes.guess_type(self.filename)[0] or "application/octet-stream"
        main, _, sub = guessed.partition("/")
        return main or "application", sub or "octet-stream"


@dataclass(frozen=True)
class MessageSpec:
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    sender: str | None = None
    reply_to: list[str] = field(default_factory=list)
    attachments: list[AttachmentSpec] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    importance: str | None = None


def compose(spec: MessageSpec, *, default_from: str, message_id_domain: str | None = None) -> EmailMessage:
    """An EmailMessage for ``spec``: text and/or HTML, inline images (multipart/related), attachments."""
    if not (spec.to or spec.cc or spec.bcc):
        raise ValidationError("to", "at least one recipient (to, cc or bcc) is required", key="to")
    msg = EmailMessage()
    msg["From"] = _address_header("from", [spec.sender or default_from])
    for name, values in (("To", spec.to), ("Cc", spec.cc), ("Bcc", spec.bcc), ("Reply-To", spec.reply_to)):
        if values:
            msg[name] = _address_header(name.lower(), values)
    if any(c in spec.subject for c in "\r\n"):
        raise ValidationError("subject", "must be one line (no CR or LF)", key="subject")
    msg["Subject"] = spec.subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=message_id_domain or (spec.sender or default_from).rpartition("@")[2])
    if spec.importance:
        if spec.importance not in ("low", "normal", "high"):
            raise ValidationError("importance", "must be low, normal or high", key="importance")
        msg["Importance"] = spec.importance
    for name, value in spec.headers.items():
        _check_header(name, value)
        msg[name] = value
    _set_body(msg, spec)
    return msg


def _set_body(msg: EmailMessage, spec: MessageSpec) -> None:
    inline = [a for a in spec.attachments if a.content_id]
    files = [a for a in spec.attachments if not a.content_id]
    if spec.text is None and spec.html is None:
        msg.set_content("")
    elif spec.text is not None:
        msg.set_content(spec.text)
        if spec.html is not None:
            msg.add_alternative(spec.html, subtype="html")
    else:
        msg.set_content(spec.html or "", subtype="html")
    if inline:
        if spec.html is None:
            raise ValidationError("attachments", "inline images (content_id) need an HTML body", key="attachments")
        html_part = msg.get_body(preferencelist=("html",))
        assert html_part is not None
        for att in inline:
            main, sub = att.mime_type
            html_part.add_related(
                att.content,
                maintype=main,
                subtype=sub,
                cid=f"<{att.content_id}>",
                filename=att.filename,
                disposition="inline",
            )
    for att in files:
        main, sub = att.mime_type
        msg.add_attachment(att.content, maintype=main, subtype=sub, filename=att.filename)


def _address_header(key: str, values: list[str]) -> list[Address]:
    """Each value is exactly one mailbox, read by the relay's one address parser (``addresses``): a value
    holding two addresses (``"a@x.com, b@y.com"``) is refused, naming the entry, instead of losing one."""
    out = []
    for index, value in enumerate(values):
        where = f"{key}[{index}]" if key != "from" else key
        if any(c in value for c in "\r\n"):
            raise ValidationError(where, f"{value!r} contains a line break", key=where)
        try:
            mailbox = parse_mailbox(value)
        except AddressError as exc:
            raise ValidationError(where, str(exc), key=where) from None
        out.append(Address(display_name=mailbox.display_name, username=mailbox.local, domain=mailbox.domain))
    return out


def _check_header(name: str, value: str) -> None:
    if not name or any(c in name for c in ": \t\r\n") or not name.isascii():
        raise ValidationError("headers", f"{name!r} is not a valid header name", key="headers")
    if name.lower() in RESERVED_HEADERS:
        raise ValidationError("headers", f"{name} is set from its own field, not as a custom header", key="headers")
    if any(c in value for c in "\r\n"):
        raise ValidationError("headers", f"the value of {name} contains a line break", key="headers")
