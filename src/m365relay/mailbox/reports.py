"""What a message in the sending mailbox's Inbox is: a delivery report about mail the relay sent, or not.

Classes (PROTOCOL.md §13):

* ``bounce`` — an Exchange Online NDR or a remote MTA's RFC 3464 delivery status notification
  (``multipart/report; report-type=delivery-status``, RFC 6522) with at least one ``Action: failed``;
* ``delayed`` — the same structure where every recipient is ``Action: delayed`` ("Delivery delayed:");
* ``free-text`` — a bounce without RFC 3464 structure (old MTAs: "failure notice", "Mail delivery failed");
  it names recipients and maybe the original Message-ID only in prose, so it counts only when one of those
  is something the relay sent (the caller decides, see ``Report.names``);
* ``auto-reply`` (RFC 3834 ``Auto-Submitted: auto-replied``, Exchange's ``Automatic reply:``), ``read-receipt``
  (RFC 8098 ``report-type=disposition-notification``) and ``complaint`` (RFC 5965 feedback reports): never
  a bounce;
* ``unrelated`` — everything else, left alone.

The parser never raises on bad input: mail in an Inbox is whatever strangers send.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

BOUNCE, DELAYED, FREE_TEXT = "bounce", "delayed", "free-text"
AUTO_REPLY, READ_RECEIPT, COMPLAINT, UNRELATED = "auto-reply", "read-receipt", "complaint", "unrelated"
COUNTED = frozenset({BOUNCE, DELAYED, FREE_TEXT})

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_MESSAGE_ID = re.compile(r"^\s*Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)
_ADDRESS = re.compile(r"<?([A-Za-z0-9._%+'=-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|[A-Za-z0-9._%+'=-]+@[A-Za-z0-9.-]+)>?")
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|returned mail|delivery status notification|delivery failure|failure notice|"
    r"mail delivery failed|delivery has failed|could not be delivered|nondeliverable|non-delivery",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(r"^\s*(automatic reply|auto(matic)?[- ]?reply|out of (the )?office)\b", re.IGNORECASE)
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mdaemon)@", re.IGNORECASE)


@dataclass(frozen=True)
class RecipientReport:
    address: str  # Final-Recipient (the address the report is about), lower-case
    original: str | None  # Original-Recipient, when given
    action: str  # failed | delayed | delivered | relayed | expanded (RFC 3464 §2.3.3)
    status: str | None  # RFC 3463 enhanced status, e.g. 5.1.10
    diagnostic: str | None


@dataclass(frozen=True)
class Report:
    kind: str
    source: str  # exchange | remote | free-text | "" (not a report)
    original_message_id: str | None  # with angle brackets, as in the header
    recipients: tuple[RecipientReport, ...]
    reported_at: datetime | None
    subject: str

    @property
    def counts(self) -> bool:
        return self.kind in COUNTED

    def names(self, message_ids: set[str], recipients: set[str]) -> bool:
        """Whether this report names something the relay sent (required before a free-text bounce counts)."""
        if self.original_message_id and self.original_message_id.lower() in message_ids:
            return True
        return any(r.address in recipients for r in self.recipients)


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def classify(raw: bytes) -> Report:
    """Classify one RFC 5322 message (bytes as `$value` returns them)."""
    try:
        message = parse(raw)
        return _classify(message)
    except Exception:
        return Report(UNRELATED, "", None, (), None, "")


def _classify(message: Message) -> Report:
    subject = _text(message.get("Subject"))
    reported_at = _date(message.get("Date"))
    content_type = message.get_content_type()
    report_type = (message.get_param("report-type") or "").__str__().lower() if content_type else ""
    if report_type == "disposition-notification" or _find(message, "message/disposition-notification"):
        return Report(READ_RECEIPT, "", None, (), reported_at, subject)
    if content_type == "multipart/report" and report_type == "feedback-report":
        return Report(COMPLAINT, "", None, (), reported_at, subject)
    status_part = _find(message, "message/delivery-status")
    blocks = _blocks(status_part) if status_part is not None else None
    if blocks is None and content_type == "multipart/report" and report_type == "delivery-status":
        blocks = _salvage(message)  # a report whose MIME structure is broken (e.g. a cut boundary)
    if blocks is not None:
        recipients, arrival = _delivery_status(blocks)
        failed = [r for r in recipients if r.action == "failed"]
        delayed = [r for r in recipients if r.action == "delayed"]
        source = "exchange" if _is_exchange(message) else "remote"
        kind = BOUNCE if failed else DELAYED if delayed else UNRELATED
        kept = tuple(failed or delayed)
        original = _original_id(message) or _salvaged_id(message)
        return Report(kind, source, original, kept, reported_at or arrival, subject)
    if _is_auto_reply(message, subject):
        return Report(AUTO_REPLY, "", None, (), reported_at, subject)
    if _looks_like_bounce(message, subject):
        return _free_text(message, subject, reported_at)
    return Report(UNRELATED, "", None, (), reported_at, subject)


# -- RFC 3464 ----------------------------------------------------------------------------------------


def _find(message: Message, content_type: str) -> Message | None:
    for part in message.walk():
        if part.get_content_type() == content_type:
            return part
    return None


Block = list[tuple[str, str]]


def _blocks(part: Message) -> list[Block]:
    """The per-message and per-recipient field groups of a message/delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the stdlib parses message/delivery-status into one Message per block
        out: list[Block] = []
        base64_next = False
        for block in payload:
            if isinstance(block, Message):
                out += _block_and_body(block, base64_next)
                base64_next = str(block.get("Content-Transfer-Encoding", "")).strip().lower() == "base64"
        return out
    data = part.get_payload(decode=True)
    return _text_blocks(data.decode("utf-8", "replace") if isinstance(data, bytes) else str(payload))


def _block_and_body(block: Message, base64_text: bool) -> list[Block]:
    """One parsed block; some MTAs put a base64-encoded rest of the report after a block's fields [obs]."""
    fields = [(k, str(v)) for k, v in block.items()]
    out = [fields] if fields else []
    body = block.get_payload()
    if isinstance(body, str) and body.strip():
        if base64_text or str(block.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
            try:
                body = base64.b64decode("".join(body.split()), validate=False).decode("utf-8", "replace")
            except ValueError:
                return out
        out += _text_blocks(body)
    return out


def _text_blocks(text: str) -> list[Block]:
    out: list[Block] = []
    for piece in re.split(r"\r?\n[ \t]*\r?\n", text):
        chunk = piece.strip("\r\n")
        if not chunk:
            continue
        fields = email.message_from_string(chunk + "\n\n", policy=email.policy.compat32).items()
        if fields:
            out.append([(k, str(v)) for k, v in fields])
    return out


def _raw_text(message: Message) -> str:
    return message.as_string() if not message.is_multipart() else str(message.get_payload())


def _salvage(message: Message) -> list[Block] | None:
    """Find the delivery-status fields in the text of a report the MIME parser could not split."""
    text = _raw_text(message)
    match = re.search(r"Content-Type:\s*message/delivery-status[^\n]*\n\s*\n(.*?)(?:\n--|\Z)", text, re.I | re.S)
    return _text_blocks(match.group(1)) if match else None


def _salvaged_id(message: Message) -> str | None:
    text = _raw_text(message)
    match = re.search(r"Content-Type:\s*(?:text/rfc822-headers|message/rfc822)(.*)", text, re.I | re.S)
    found = _MESSAGE_ID.search(match.group(1)) if match else None
    return found.group(1) if found else None


def _action(fields: dict[str, str], status: str | None) -> str:
    if fields.get("action"):
        return fields["action"].strip().lower().split()[0]
    # No Action field (seen from some servers): the status class says it (RFC 3463 §3.1).
    return "failed" if status and status[0] == "5" else "delayed" if status and status[0] == "4" else ""


def _delivery_status(blocks: list[Block]) -> tuple[list[RecipientReport], datetime | None]:
    out: list[RecipientReport] = []
    arrival: datetime | None = None
    for block in blocks:
        fields = {name.lower(): _unfold(value) for name, value in block}
        if "arrival-date" in fields and arrival is None:
            arrival = _date(fields["arrival-date"])
        final = fields.get("final-recipient") or fields.get("original-recipient")
        if not final:
            continue
        found = _STATUS.search(fields.get("status", ""))
        status = found.group(0) if found else None
        out.append(
            RecipientReport(
                address=_typed_address(final),
                original=_typed_address(fields["original-recipient"]) if fields.get("original-recipient") else None,
                action=_action(fields, status),
                status=status,
                diagnostic=_diagnostic(fields.get("diagnostic-code")),
            )
        )
    return out, arrival


def _typed_address(value: str) -> str:
    """``rfc822;user@example.com`` (RFC 3464 §2.3.1) → ``user@example.com``."""
    _, _, address = value.rpartition(";")
    return address.strip().strip("<>").strip().lower()


def _diagnostic(value: str | None) -> str | None:
    if not value:
        return None
    kind, sep, text = value.partition(";")
    return (text if sep and " " not in kind.strip() else value).strip() or None


def _original_id(message: Message) -> str | None:
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                found = inner[0].get("Message-ID")
                if found:
                    return _angle(str(found))
        elif kind == "text/rfc822-headers":
            data = part.get_payload(decode=True)
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(part.get_payload())
            match = _MESSAGE_ID.search(text)
            if match:
                return match.group(1)
    return None


def _is_exchange(message: Message) -> bool:
    if message.get("X-MS-Exchange-Message-Is-Ndr") is not None:
        return True
    sender = str(message.get("From", ""))
    return "microsoftexchange" in sender.lower()


# -- not reports, and free text ----------------------------------------------------------------------


def _is_auto_reply(message: Message, subject: str) -> bool:
    auto = str(message.get("Auto-Submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if message.get("X-Auto-Response-Suppress") is not None or message.get("X-MS-Exchange-Inbox-Rules-Loop"):
        return not _looks_like_bounce(message, subject)
    return bool(_AUTO_SUBJECT.match(subject))


def _sender(message: Message) -> str:
    found = getaddresses([str(message.get("From", ""))])
    return found[0][1].lower() if found else ""


def _looks_like_bounce(message: Message, subject: str) -> bool:
    return bool(_DAEMON.match(_sender(message))) or bool(_BOUNCE_SUBJECT.search(subject))


def _body_text(message: Message) -> str:
    texts: list[str] = []
    for part in message.walk():
        if part.get_content_maintype() == "text":
            data = part.get_payload(decode=True)
            if isinstance(data, bytes):
                texts.append(data.decode(part.get_content_charset() or "utf-8", "replace"))
    return "\n".join(texts)


def _free_text(message: Message, subject: str, reported_at: datetime | None) -> Report:
    """A prose bounce: every address it names (but the report's own) is a candidate, with the status near it."""
    text = _body_text(message)
    own = {_sender(message), *(a.lower() for _, a in getaddresses([str(message.get("To", ""))]))}
    original = _original_id(message)
    if original is None:
        match = _MESSAGE_ID.search(text)
        original = match.group(1) if match else None
    seen: dict[str, RecipientReport] = {}
    for line in text.splitlines():
        if re.match(r"\s*(from|to|cc|message-id|return-path|received|reply-to|sender):", line, re.IGNORECASE):
            continue  # quoted original headers name senders, not the failed recipient
        for match in _ADDRESS.finditer(line):
            address = match.group(1).lower().rstrip(".")
            if address in own or address in seen or "@" not in address:
                continue
            near = _STATUS.search(line)
            seen[address] = RecipientReport(address, None, "failed", near.group(0) if near else None, line.strip())
    recipients = tuple(seen.values())
    if not recipients and original is None:
        return Report(UNRELATED, "", None, (), reported_at, subject)
    if not any(r.status for r in recipients):
        code = _STATUS.search(text)
        found = code.group(0) if code else "5.0.0"
        recipients = tuple(RecipientReport(r.address, None, r.action, found, r.diagnostic) for r in recipients)
    return Report(FREE_TEXT, "free-text", original, recipients, reported_at, subject)


# -- small helpers -----------------------------------------------------------------------------------


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value).strip()


def _angle(value: str) -> str:
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


def _text(value: object) -> str:
    if value is None:
        return ""
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(str(value))))
    except (ValueError, LookupError):
        return str(value)


def _date(value: object) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
