"""What the SMTP relay checks and changes in a submitted message before it is queued: the header block must
be well formed (no bare CR/LF, no repeated single-instance fields, a From), the From policy is applied,
and a Received header is prepended (RFC 5321 §4.4). Only the header block is read; the body stays in the
spool it arrived in.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import format_datetime, formataddr, getaddresses
from typing import BinaryIO, Literal, cast

from ..graph.mime import MAX_HEADER_BYTES, OutgoingMessage
from . import smtp_replies as R
from .smtp_replies import SmtpRefusal

SPOOL_IN_MEMORY = 4 * 1024 * 1024  # a message larger than this is spooled to a temporary file as it arrives
_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")  # RFC 5322 §3.6.8 ftext, obs-FWS before ':'
# RFC 5322 §3.6: fields that may appear at most once (Received, Comments, Keywords may repeat).
SINGLE_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to",
                 "references")  # fmt: skip


class MessageSpool:
    """The message as it arrives: in memory up to 4 MB, then in a temporary file. Lines are batched so
    a 35 MB message costs a few hundred writes, and the finished spool is handed to ``OutgoingMessage``
    as it is — never copied whole."""

    def __init__(self, in_memory: int = SPOOL_IN_MEMORY) -> None:
        self._file = tempfile.SpooledTemporaryFile(max_size=in_memory)  # noqa: SIM115 - closed by close()
        self._parts: list[bytes] = []
        self._pending = 0
        self.size = 0

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._pending += len(data)
        self.size += len(data)
        if self._pending >= 65536:
            self._flush()

    def _flush(self) -> None:
        if self._parts:
            self._file.write(b"".join(self._parts))
            self._parts.clear()
            self._pending = 0

    def finish(self) -> BinaryIO:
        self._flush()
        self._file.seek(0)
        return cast(BinaryIO, self._file)

    def close(self) -> None:
        self._parts.clear()
        self._file.close()


@dataclass(frozen=True)
class HeaderBlock:
    data: bytes  # the header fields, each ending in CRLF, without the empty line
    body_offset: int  # where the body starts in the message


def check_header_block(stream: BinaryIO, size: int) -> HeaderBlock:
    """Refuse a header block that is not RFC 5322 (§2.2, §3.6), reading at most its first megabyte."""
    if size == 0:
        raise SmtpRefusal(R.MESSAGE_EMPTY())
    stream.seek(0)
    head = stream.read(min(size, MAX_HEADER_BYTES))
    stream.seek(0)
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        found = HeaderBlock(head[: end + 2], end + 4)
    elif size <= MAX_HEADER_BYTES and head.endswith(b"\r\n"):
        found = HeaderBlock(head, size)  # header fields only: the body is optional (RFC 5322 §3.5)
    else:
        raise SmtpRefusal(R.HEADER_MALFORMED(reason="no empty line ends the header block within 1 MB"))
    block = found.data
    crlf = block.count(b"\r\n")
    if block.count(b"\r") != crlf or block.count(b"\n") != crlf:
        raise SmtpRefusal(R.HEADER_BARE_NEWLINE())
    if b"\x00" in block:
        raise SmtpRefusal(R.HEADER_MALFORMED(reason="NUL byte in a header field"))
    counts = Counter(name.lower() for name in _field_names(block))
    for name in SINGLE_FIELDS:
        if counts[name] > 1:
            raise SmtpRefusal(R.HEADER_REPEATED(name=_title(name), count=counts[name]))
    if not counts["from"]:
        raise SmtpRefusal(R.FROM_MISSING())
    return found


def _field_names(block: bytes) -> list[str]:
    """The field names of a CRLF-only header block; refuses lines that are not fields or continuations."""
    names: list[str] = []
    for number, line in enumerate(block[:-2].split(b"\r\n"), start=1):
        if line[:1] in (b" ", b"\t") and names:
            continue  # folded continuation of the previous field
        found = _FIELD_NAME.match(line)
        if found is None:
            shown = line[:40].decode("ascii", "replace")
            raise SmtpRefusal(R.HEADER_MALFORMED(reason=f"line {number} ({shown!r}) is not a header field"))
        names.append(found.group().rstrip(b": \t").decode("ascii"))
        if not line.isascii():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                raise SmtpRefusal(R.HEADER_NOT_UTF8(name=names[-1])) from None
    return names


def read_message(stream: BinaryIO, size: int, block: HeaderBlock) -> OutgoingMessage:
    """The message with its header block parsed and its body left in ``stream`` (no copy).

    A UTF-8 header block (RFC 6532, sent with SMTPUTF8) is decoded as UTF-8 text before parsing, so header
    values are real Unicode rather than the surrogate escapes a bytes parser leaves behind."""
    if block.data.isascii():
        headers = BytesHeaderParser(policy=policy.SMTP).parsebytes(block.data)
        utf8 = False
    else:
        headers = HeaderParser(policy=policy.SMTPUTF8).parsestr(block.data.decode("utf-8"))
        utf8 = True
    assert isinstance(headers, EmailMessage)
    return OutgoingMessage(headers, stream, block.body_offset, size - block.body_offset, utf8)


# -- From policy -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SenderRules:
    """What a client may put in From: the connector's mailbox always, plus the relay user's ``allowed_from``
    (addresses, or ``@domain``) — or, for a client without a list, the connector's send-as mailboxes
    (``send_as``, PROTOCOL.md §15). ``rewrite`` then makes the mailbox the From and keeps the original in
    Reply-To, except for a send-as mailbox, which sends as itself; ``enforce`` sends with the From as given
    (Exchange needs Send As rights for addresses that are not one of the connector's mailboxes)."""

    mailbox: str
    allowed: tuple[str, ...]
    policy: Literal["rewrite", "enforce"]
    who: str  # "relay user 'app'" or "client 10.0.0.5", for the refusal text
    send_as: tuple[str, ...] = ()

    @property
    def checks_senders(self) -> bool:
        """Rewrite without a list takes any From; everything else must be checked."""
        return self.policy == "enforce" or bool(self.allowed)

    def permits(self, address: str) -> bool:
        wanted = address.lower()
        if wanted == self.mailbox.lower():
            return True
        domain = "@" + wanted.rpartition("@")[2]
        if self.allowed:
            return wanted in self.allowed or domain in self.allowed
        # No list: anything may be rewritten; enforce takes the connector's own mailboxes.
        return self.policy == "rewrite" or self.sends_as(wanted)

    def sends_as(self, address: str) -> bool:
        """Whether ``address`` is one of the connector's send-as mailboxes (sent through its own mailbox)."""
        wanted = address.lower()
        return wanted in self.send_as or "@" + wanted.rpartition("@")[2] in self.send_as

    def describe_allowed(self) -> str:
        return ", ".join([self.mailbox, *(self.allowed or self.send_as)])


def apply_sender_rules(message: OutgoingMessage, rules: SenderRules) -> None:
    """Check From (and Sender) against the rules, then rewrite them if the policy says so.

    A check uses the strict RFC 5322 parser (what it approves is what Exchange will read). The rewrite edits
    raw header values — the original From is copied verbatim into Reply-To — so the common case never pays
    for the email package's full header parsing."""
    if rules.checks_senders:
        senders = [a.addr_spec for a in message.addresses("From")]
        if not senders:
            raise SmtpRefusal(R.FROM_UNREADABLE())
        for address in [*senders, *(a.addr_spec for a in message.addresses("Sender"))]:
            if not rules.permits(address):
                raise SmtpRefusal(R.FROM_NOT_ALLOWED(address=address, who=rules.who, allowed=rules.describe_allowed()))
    if rules.policy != "rewrite":
        return
    original = _raw_values(message, "From")
    found = [(name, address) for name, address in getaddresses(original) if "@" in address]
    if not found and not message.addresses("From"):
        raise SmtpRefusal(R.FROM_UNREADABLE())
    headers = message.headers
    del headers["Sender"]  # a Sender other than the mailbox means "on behalf of": 403 ErrorSendAsDenied
    if len(found) == 1 and (found[0][1].lower() == rules.mailbox.lower() or rules.sends_as(found[0][1])):
        return  # the connector's own mailbox, or one of its send-as mailboxes: it sends as itself
    display = " ".join(found[0][0].split()) if len(found) == 1 else ""
    if not _raw_values(message, "Reply-To"):
        headers.set_raw("Reply-To", original[0])
    del headers["From"]
    try:
        headers.set_raw("From", formataddr((display, rules.mailbox)))
    except UnicodeEncodeError:  # a non-ASCII mailbox address (RFC 6532): let the header registry write it
        local, _, domain = rules.mailbox.rpartition("@")
        message.set_addresses("From", [Address(display_name=display, username=local, domain=domain)])


def _raw_values(message: OutgoingMessage, name: str) -> list[str]:
    wanted = name.lower()
    return [str(value) for key, value in message.headers.raw_items() if key.lower() == wanted]


# -- Received ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedStamp:
    helo: str
    peer_ip: str
    hostname: str
    protocol: str  # RFC 3848 / RFC 6531 §3.7.3: ESMTP, ESMTPS, ESMTPA, ESMTPSA, UTF8SMTPSA, …
    session_id: str
    recipient: str | None
    when: datetime


def with_protocol(extended: bool, utf8: bool, tls: bool, authenticated: bool) -> str:
    base = "UTF8SMTP" if utf8 else ("ESMTP" if extended else "SMTP")
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def received_value(stamp: ReceivedStamp) -> str:
    """RFC 5321 §4.4 Stamp: ``from <helo> ([ip]) by <host> with <proto> id <id> [for <rcpt>]; <date>``, folded
    here (CRLF + TAB) so that no header parser has to fold it again."""
    ip = f"IPv6:{stamp.peer_ip}" if ":" in stamp.peer_ip else stamp.peer_ip
    value = f"from {_safe_domain(stamp.helo)} ([{ip}])\r\n\tby {_safe_domain(stamp.hostname)} (m365relay)"
    value += f"\r\n\twith {stamp.protocol} id {stamp.session_id}"
    if stamp.recipient and stamp.recipient.isascii() and _SAFE_ADDRESS.match(stamp.recipient):
        value += f"\r\n\tfor <{stamp.recipient}>"
    return f"{value};\r\n\t{format_datetime(stamp.when)}"


def prepend_received(message: OutgoingMessage, stamp: ReceivedStamp) -> None:
    """Received goes on top (RFC 5321 §4.4: "at the beginning"): rebuild the header list with it first."""
    old = message.headers
    new = EmailMessage(policy=old.policy)
    new.set_raw("Received", received_value(stamp))
    for name, value in old.raw_items():
        new.set_raw(name, value)
    message.headers = new


_SAFE_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~@-]+$")
_UNSAFE_DOMAIN_CHARS = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")


def _safe_domain(name: str) -> str:
    """The client's HELO name is whatever it sent: keep it readable but unable to break the header."""
    cleaned = _UNSAFE_DOMAIN_CHARS.sub("?", name)[:255]
    return cleaned or "unknown"


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-")).replace("Message-Id", "Message-ID")
