"""What the SMTP relay checks and changes in a submitted message before it is queued: the header block must
be well formed (no bare CR/LF, no repeated single-instance fields, a From), the From policy is applied,
and a Received header is prepended (RFC 5321 §4.4). Only the header block is read; the body stays in the
spool it arrived in.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import BinaryIO, cast

from ..graph.acceptance import MessageProblem, Problem, SenderRules, apply_from_policy, check_header_fields
from ..graph.mime import MAX_HEADER_BYTES, OutgoingMessage, split_fields
from . import smtp_replies as R
from .smtp_replies import SmtpRefusal

SPOOL_IN_MEMORY = 4 * 1024 * 1024  # a message larger than this is spooled to a temporary file as it arrives


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
    """Find the header block and refuse bare CR/LF in it (RFC 5322 §2.2), reading at most its first megabyte.
    The field-by-field checks shared with the HTTP path follow in ``read_message``."""
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
    return found


def read_message(stream: BinaryIO, size: int, block: HeaderBlock) -> OutgoingMessage:
    """The message with its header fields kept as they came and its body left in ``stream`` (no copy);
    refuses what ``check_header_fields`` finds, with the SMTP reply for it."""
    message = OutgoingMessage(split_fields(block.data), stream, block.body_offset, size - block.body_offset)
    try:
        check_header_fields(message)
    except MessageProblem as exc:
        raise SmtpRefusal(smtp_reply(exc.problem)) from None
    return message


def smtp_reply(problem: Problem) -> str:
    """The 5xx reply for a problem found at acceptance (all permanent: the message will never go as it is)."""
    if problem.kind == "repeated":
        return R.HEADER_REPEATED(name=problem.name, count=problem.count)
    if problem.kind == "not-utf8":
        return R.HEADER_NOT_UTF8(name=problem.name)
    if problem.kind in ("not-a-field", "nul"):
        return R.HEADER_MALFORMED(reason=problem.text)
    if problem.kind == "from-missing":
        return R.FROM_MISSING()
    if problem.kind in ("from-unreadable", "from-several"):
        return R.FROM_UNREADABLE(detail=problem.text.removeprefix("the From header field "))
    return R.HEADER_ENTRY_INVALID(reason=problem.text[:1].upper() + problem.text[1:])


# -- From policy -------------------------------------------------------------------------------------


def apply_sender_rules(message: OutgoingMessage, rules: SenderRules) -> None:
    """The From policy (``graph.acceptance``), its refusals answered as SMTP replies."""
    try:
        apply_from_policy(message, rules)
    except MessageProblem as exc:
        if exc.problem.kind == "from-not-allowed":
            reply = R.FROM_NOT_ALLOWED(address=exc.problem.name, who=rules.who, allowed=rules.describe_allowed())
            raise SmtpRefusal(reply) from None
        raise SmtpRefusal(smtp_reply(exc.problem)) from None


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
    """Received goes on top (RFC 5321 §4.4: "at the beginning"); the value is folded already."""
    message.prepend("Received", f"Received: {received_value(stamp)}\r\n".encode())


_SAFE_ADDRESS = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~@-]+$")
_UNSAFE_DOMAIN_CHARS = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")


def _safe_domain(name: str) -> str:
    """The client's HELO name is whatever it sent: keep it readable but unable to break the header."""
    cleaned = _UNSAFE_DOMAIN_CHARS.sub("?", name)[:255]
    return cleaned or "unknown"
