"""An outgoing message as a small header block plus a body that stays in a seekable stream.

Large messages (35 MB and more) are never parsed or copied whole: the relay edits only the header block
(recipients, From, Message-ID) and streams the body from wherever it lies — bytes in memory, a spooled
temporary file, the outbox.

Byte-faithful: the header block is kept as the fields it arrived as (``Field.raw``: every physical line,
folding and encoding as the client wrote them; only LF line ends become CRLF, RFC 5322 §2.2). An edit
replaces the one field it changes with a value built from structured parts (``addresses``); every other
field goes out byte for byte. The ``headers`` property is a parsed view for reading, never written back —
re-serialising through the email package re-folds and re-encodes lines, which breaks DKIM signatures.

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
from dataclasses import dataclass, field
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import HeaderParser
from email.utils import formatdate
from typing import BinaryIO

from ..addresses import Entry, Mailbox, fold, format_list, parse_list, routable
from ..errors import InvalidRecipientsError, MalformedMessageError

MAX_HEADER_BYTES = 1024 * 1024  # a header block this large is not mail
RECIPIENT_HEADERS = ("To", "Cc", "Bcc")
_UTF8_READ = policy.SMTPUTF8.clone(max_line_length=None)  # folds to one line; non-ASCII addresses stay as they are
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")  # RFC 5322 §3.6.8 ftext (obs-FWS before ':')


@dataclass(frozen=True)
class Field:
    """One header field exactly as it arrived: ``raw`` is ``Name: value`` with its continuation lines,
    every line ending in CRLF."""

    name: str
    raw: bytes

    @property
    def value_bytes(self) -> bytes:
        return self.raw.split(b":", 1)[1] if b":" in self.raw else b""

    @property
    def value(self) -> str:
        """The unfolded value (RFC 5322 §2.2.3), leading white space removed; 8-bit read as UTF-8."""
        text = self.value_bytes.decode("utf-8", "surrogateescape")
        return re.sub(r"\r?\n(?=[ \t])", "", text).rstrip("\r\n").lstrip(" \t")


def split_fields(block: bytes) -> list[Field]:
    """The fields of a header block (CRLF or LF line ends). A line that is neither a field nor a
    continuation is kept as a field with an empty name, so the checks can name it."""
    fields: list[Field] = []
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for physical in lines:
        line = physical.rstrip(b"\r") + b"\r\n"
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = Field(fields[-1].name, fields[-1].raw + line)
            continue
        found = _FIELD_NAME.match(line)
        fields.append(Field(found.group(1).decode("ascii") if found else "", line))
    return fields


@dataclass
class OutgoingMessage:
    """``fields`` is the header block (edit it through the methods); ``body`` is read from ``body_offset``
    to the end of the stream."""

    fields: list[Field]
    body: BinaryIO
    body_offset: int
    body_size: int
    _parsed: EmailMessage | None = field(default=None, repr=False)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> OutgoingMessage:
        return cls.from_stream(io.BytesIO(data))

    @classmethod
    def from_message(cls, message: EmailMessage) -> OutgoingMessage:
        """A message the relay composed itself (API JSON, library, CLI): serialised once, then kept as is."""
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
        return cls(split_fields(header_bytes), stream, body_offset, total - body_offset)

    # -- reading --------------------------------------------------------------------------------

    @property
    def utf8(self) -> bool:
        """8-bit header bytes: RFC 6532 UTF-8 headers (sent with SMTPUTF8)."""
        return any(not f.raw.isascii() for f in self.fields)

    @property
    def headers(self) -> EmailMessage:
        """A parsed, read-only view of the header block (content type, boundary, custom headers)."""
        if self._parsed is None:
            text = self.header_bytes().decode("utf-8", "surrogateescape")
            parsed = HeaderParser(policy=policy.default).parsestr(text)
            assert isinstance(parsed, EmailMessage)
            self._parsed = parsed
        return self._parsed

    def header_bytes(self) -> bytes:
        return b"".join(f.raw for f in self.fields) + b"\r\n"

    def values(self, name: str) -> list[str]:
        wanted = name.lower()
        return [f.value for f in self.fields if f.name.lower() == wanted]

    def header_text(self, name: str) -> str | None:
        """A header's value as text (RFC 2047 decoded)."""
        found = self.values(name)
        if not found:
            return None
        try:
            return str(make_header(decode_header(found[0])))
        except (ValueError, LookupError, UnicodeError):
            return found[0]

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
        """The fully parsed message (small messages only)."""
        from email.parser import BytesParser

        parsed = BytesParser(policy=policy.default).parsebytes(self.to_bytes())
        assert isinstance(parsed, EmailMessage)
        return parsed

    # -- addresses ------------------------------------------------------------------------------

    def entries(self, name: str) -> list[Entry]:
        return [entry for value in self.values(name) for entry in parse_list(value)]

    def mailboxes(self, name: str) -> list[Mailbox]:
        return [e.mailbox for e in self.entries(name) if e.mailbox is not None]

    def first_address(self, name: str) -> str | None:
        found = self.mailboxes(name)
        return found[0].addr_spec if found else None

    def header_recipients(self) -> list[str]:
        """The To/Cc/Bcc addresses, read by the one strict parser (entries that are not addresses skipped)."""
        return [m.addr_spec for name in RECIPIENT_HEADERS for m in self.mailboxes(name) if routable(m) is None]

    # -- edits ----------------------------------------------------------------------------------

    def set_field(self, name: str, raw: bytes) -> None:
        """Replace every ``name`` field by ``raw`` (a whole field, CRLF-terminated), where the first was."""
        wanted = name.lower()
        index = next((i for i, f in enumerate(self.fields) if f.name.lower() == wanted), len(self.fields))
        kept = [f for i, f in enumerate(self.fields) if f.name.lower() != wanted or i == index]
        if index < len(self.fields):
            kept[kept.index(self.fields[index])] = Field(name, raw)
        else:
            kept.append(Field(name, raw))
        self.fields = kept
        self._parsed = None

    def set_value(self, name: str, value: str) -> None:
        self.set_field(name, fold(name, value))

    def remove(self, name: str) -> None:
        wanted = name.lower()
        self.fields = [f for f in self.fields if f.name.lower() != wanted]
        self._parsed = None

    def prepend(self, name: str, raw: bytes) -> None:
        self.fields.insert(0, Field(name, raw))
        self._parsed = None

    def set_mailboxes(self, name: str, mailboxes: list[Mailbox]) -> None:
        if mailboxes:
            self.set_value(name, format_list(mailboxes))
        else:
            self.remove(name)

    def ensure_message_id(self, domain: str) -> str:
        """Add a missing Message-ID and Date (RFC 5322 §3.6: Date is required, Message-ID should be there),
        as Postfix's cleanup does; both are plain ASCII made here."""
        if not self.values("Message-ID"):
            self.set_value("Message-ID", f"<{uuid.uuid4().hex}@{_domain_for_id(domain)}>")
        if not self.values("Date"):
            self.set_value("Date", formatdate(localtime=False, usegmt=True))
        return (self.values("Message-ID") or [""])[0].strip()


def header_addresses(headers: EmailMessage, name: str) -> list[Mailbox]:
    """The mailboxes of a composed message's address field, by the one strict parser (read from the folded,
    still encoded form: the header objects' ``str`` is decoded, and a decoded comma would split a name)."""
    found: list[Mailbox] = []
    for key, value in headers.items():
        if key.lower() == name.lower():
            raw = _UTF8_READ.fold(key, value).partition(":")[2]
            found += [e.mailbox for e in parse_list(raw) if e.mailbox is not None]
    return found


def align_recipients(message: OutgoingMessage, envelope: list[str]) -> list[str]:
    """Make To/Cc/Bcc name exactly the envelope's recipients, so Graph delivers to those and no others.

    * an address in the headers but not in the envelope is removed from To/Cc/Bcc (a client that submits
      one copy per recipient, each with the full To list, must not make every recipient get N copies);
    * an entry that is not an address (``To: XX``, ``eve@example.com <frank@example.com>``) is removed:
      Exchange would read it its own way (or refuse the whole message);
    * an envelope address absent from the headers is added as Bcc (blind, as SMTP delivers it).

    A field whose entries all stay is not touched (its bytes go out as they came). Returns what was removed
    from the visible headers (for the message's event log).
    """
    wanted = {a.lower(): a for a in envelope}
    if not wanted:
        raise InvalidRecipientsError("the message has no recipients")
    seen: set[str] = set()
    removed: list[str] = []
    for name in RECIPIENT_HEADERS:
        entries = message.entries(name)
        kept: list[Mailbox] = []
        for entry in entries:
            if entry.mailbox is not None and entry.mailbox.addr_spec.lower() in wanted:  # the envelope is routable
                kept.append(entry.mailbox)
                seen.add(entry.mailbox.addr_spec.lower())
            else:
                removed.append(entry.mailbox.addr_spec if entry.mailbox is not None else entry.text)
        if len(kept) != len(entries) or len(message.values(name)) > 1:
            message.set_mailboxes(name, kept)
    missing = [addr for key, addr in wanted.items() if key not in seen]
    if missing:
        message.set_mailboxes("Bcc", message.mailboxes("Bcc") + [_mailbox(a) for a in missing])
    return removed


def _domain_for_id(domain: str) -> str:
    """A Message-ID's right side must be plain ASCII (RFC 5322 §3.6.4); IDNs go to their A-label form."""
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_domain = domain
    return re.sub(r"[^A-Za-z0-9.-]", "", ascii_domain) or "m365relay.invalid"


def _mailbox(spec: str) -> Mailbox:
    local, _, domain = spec.rpartition("@")
    return Mailbox(local, domain)


def _has_non_ascii(message: EmailMessage) -> bool:
    """Only non-ASCII *addresses* need SMTPUTF8 (RFC 6532); other text is RFC 2047-encoded as usual."""
    return any(
        not address.addr_spec.isascii()
        for name in (*RECIPIENT_HEADERS, "From", "Sender", "Reply-To")
        for address in header_addresses(message, name)
    )
