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
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser, HeaderParser
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
        if utf8:
            # RFC 6532 headers are UTF-8: the bytes parser would keep them as escaped bytes and mangle the
            # addresses, so decode first (surrogateescape keeps any stray non-UTF-8 byte round-trippable).
            headers = HeaderParser(policy=policy.SMTPUTF8).parsestr(header_bytes.decode("utf-8", "surrogateescape"))
        else:
            headers = BytesHeaderParser(policy=policy.SMTP).parsebytes(header_bytes)
        return cls(headers, stream, body_offset, total - body_offset, utf8)

    # -- reading --------------------------------------------------------------------------------

    def header_bytes(self) -> bytes:
        # raw_items(): headers as parsed stay in their source form (cheap, byte-faithful); only headers set
        # since are folded by the policy. items() would re-parse and re-fold every header.
        pol = policy.SMTPUTF8 if self.utf8 else policy.SMTP
        return b"".join(pol.fold_binary(name, value) for name, value in self.headers.raw_items()) + b"\r\n"

    def header_text(self, name: str) -> str | None:
        """A header's value as text (RFC 2047 decoded), read without the policy's full header parsing."""
        for key, value in self.headers.raw_items():
            if key.lower() == name.lower():
                try:
                    return str(make_header(decode_header(str(value)))).replace("\r\n", "").replace("\n", "")
                except (ValueError, LookupError, UnicodeError):
                    return str(value)
        return None

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

    def first_address(self, name: str) -> str | None:
        """The first address in a header, by the fast parser (for bookkeeping, not for rewriting)."""
        values = [str(v) for k, v in self.headers.raw_items() if k.lower() == name.lower()]
        found = [spec for _, spec in getaddresses(values) if "@" in spec]
        return found[0] if found else None

    def header_recipients(self) -> list[str]:
        """The To/Cc/Bcc addresses (only the addresses: a fast path that skips the full header parser)."""
        values = [str(v) for k, v in self.headers.raw_items() if k.lower() in ("to", "cc", "bcc")]
        return [spec for _, spec in getaddresses(values) if "@" in spec]

    # -- edits ----------------------------------------------------------------------------------

    def ensure_message_id(self, domain: str) -> str:
        # set_raw: these values are plain ASCII we made ourselves; no need for the policy's header parser.
        if self.header_text("Message-ID") is None:
            self.headers.set_raw("Message-ID", f"<{uuid.uuid4().hex}@{_domain_for_id(domain)}>")
        if self.header_text("Date") is None:
            self.headers.set_raw("Date", formatdate(localtime=False, usegmt=True))
        return (self.header_text("Message-ID") or "").strip()

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
    if {a.lower() for a in message.header_recipients()} == set(wanted):
        return []  # the usual case (API, library, most SMTP clients): nothing to change, nothing to parse
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


def _domain_for_id(domain: str) -> str:
    """A Message-ID's right side must be plain ASCII (RFC 5322 §3.6.4); IDNs go to their A-label form."""
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_domain = domain
    return re.sub(r"[^A-Za-z0-9.-]", "", ascii_domain) or "m365relay.invalid"


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
