"""An outgoing message as a small, editable header block plus a body that stays in a seekable stream.

Large messages (35 MB and more) are never parsed or copied whole: the relay edits only the header block
(recipients, From, Message-ID) and streams the body from wherever it lies — bytes in memory, a spooled
temporary file, the outbox.

Envelope = delivery. Graph has no SMTP envelope: a MIME send goes to the addresses in To/Cc/Bcc (and
Exchange strips Bcc on delivery), so the relay rewrites those headers until the set Graph will deliver
to equals the envelope exactly (``align_recipients``).
"""

from __future__ import annotations

import io
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import formatdate, getaddresses
from typing import BinaryIO

from ..errors import InvalidRecipientsError, MalformedMessageError

MAX_HEADER_BYTES = 1024 * 1024  # a header block this large is not mail
RECIPIENT_HEADERS = ("To", "Cc", "Bcc")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


@dataclass
class OutgoingMessage:
    """``headers`` may be edited; ``body`` is read from ``body_offset`` to the end of the stream."""

    headers: EmailMessage
    body: BinaryIO
    body_offset: int
    body_size: int
    utf8: bool = False

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> OutgoingMessage:
        return cls.from_stream(io.BytesIO(data))

    @classmethod
    def from_message(cls, message: EmailMessage) -> OutgoingMessage:
        return cls.from_bytes(message.as_bytes(policy=policy.SMTPUTF8 if _has_non_ascii(message) else policy.SMTP))

    @classmethod
    def from_stream(cls, stream: BinaryIO) -> OutgoingMessage:
        """Read the header block from the start of a seekable stream; the body stays in the stream."""
        stream.seek(0, os.SEEK_END)
        total = stream.tell()
        stream.seek(0)
        head = stream.read(min(total, MAX_HEADER_BYTES))
        found = _BLANK_LINE.search(head)
        if found is None:
            if total > MAX_HEADER_BYTES:
                raise MalformedMessageError("the message's header block does not end (no empty line)")
            header_bytes, body_offset = head, total  # headers only, empty body
        else:
            header_bytes, body_offset = head[: found.start()] + b"\r\n", found.end()
        utf8 = _has_8bit(header_bytes)
        headers = BytesHeaderParser(policy=policy.SMTPUTF8 if utf8 else policy.SMTP).parsebytes(header_bytes)
        return cls(headers, stream, body_offset, total - body_offset, utf8)

    # -- reading --------------------------------------------------------------------------------

    def header_bytes(self) -> bytes:
        pol = policy.SMTPUTF8 if self.utf8 else policy.SMTP
        return b"".join(pol.fold_binary(name, value) for name, value in self.headers.items()) + b"\r\n"

    @property
    def size(self) -> int:
        return len(self.header_bytes()) + self.body_size

    def iter_bytes(self, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        yield self.header_bytes()
        self.body.seek(self.body_offset)
        while chunk := self.body.read(chunk_size):
            yield chunk

    def to_bytes(self) -> bytes:
        """The whole message in memory: only for messages small enough to send in one request."""
        return b"".join(self.iter_bytes())

    def parse(self) -> EmailMessage:
        """The fully parsed message (small messages only: the JSON send path)."""
        from email.parser import BytesParser

        parsed = BytesParser(policy=policy.default).parsebytes(self.to_bytes())
        assert isinstance(parsed, EmailMessage)
        return parsed

    # -- addresses ------------------------------------------------------------------------------

    def addresses(self, name: str) -> list[Address]:
        return header_addresses(self.headers, name)

    def header_recipients(self) -> list[str]:
        return [a.addr_spec for name in RECIPIENT_HEADERS for a in self.addresses(name)]

    # -- edits ----------------------------------------------------------------------------------

    def ensure_message_id(self, domain: str) -> str:
        if not self.headers.get("Message-ID"):
            self.headers["Message-ID"] = f"<{uuid.uuid4().hex}@{domain}>"
        if not self.headers.get("Date"):
            self.headers["Date"] = formatdate(localtime=False, usegmt=True)
        return str(self.headers["Message-ID"]).strip()

    def set_addresses(self, name: str, addresses: list[Address]) -> None:
        del self.headers[name]
        if addresses:
            self.headers[name] = addresses


def header_addresses(headers: EmailMessage, name: str) -> list[Address]:
    """The addresses of a To/Cc/Bcc/From/Reply-To header; tolerant of headers the strict parser rejects."""
    out: list[Address] = []
    for value in headers.get_all(name) or []:
        try:
            out.extend(value.addresses)
        except (AttributeError, TypeError, ValueError, IndexError):
            for display, spec in getaddresses([str(value)]):
                if "@" in spec:
                    local, _, domain = spec.rpartition("@")
                    out.append(Address(display_name=display, username=local, domain=domain))
    return [a for a in out if a.addr_spec and "@" in a.addr_spec]


def align_recipients(message: OutgoingMessage, envelope: list[str]) -> list[str]:
    """Make To/Cc/Bcc name exactly the envelope's recipients, so Graph delivers to those and no others.

    * an address in the headers but not in the envelope is removed from To/Cc/Bcc (a client that submits
      one copy per recipient, each with the full To list, must not make every recipient get N copies);
    * an envelope address absent from the headers is added as Bcc (blind, as SMTP delivers it).

    Returns the addresses that were removed from the visible headers (for the message's event log).
    """
    wanted = {a.lower(): a for a in envelope}
    if not wanted:
        raise InvalidRecipientsError("the message has no recipients")
    seen: set[str] = set()
    removed: list[str] = []
    for name in RECIPIENT_HEADERS:
        current = message.addresses(name)
        kept = [a for a in current if a.addr_spec.lower() in wanted]
        removed += [a.addr_spec for a in current if a.addr_spec.lower() not in wanted]
        seen.update(a.addr_spec.lower() for a in kept)
        if len(kept) != len(current):
            message.set_addresses(name, kept)
    missing = [addr for key, addr in wanted.items() if key not in seen]
    if missing:
        bcc = message.addresses("Bcc") + [_address(a) for a in missing]
        message.set_addresses("Bcc", bcc)
    return removed


def _address(spec: str) -> Address:
    local, _, domain = spec.rpartition("@")
    return Address(username=local, domain=domain)


def _has_8bit(data: bytes) -> bool:
    return any(b > 127 for b in data)


def _has_non_ascii(message: EmailMessage) -> bool:
    """Only non-ASCII *addresses* need SMTPUTF8 (RFC 6532); other text is RFC 2047-encoded as usual."""
    return any(
        not address.addr_spec.isascii()
        for name in (*RECIPIENT_HEADERS, "From", "Sender", "Reply-To")
        for address in header_addresses(message, name)
    )
