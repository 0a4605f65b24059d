"""What makes a message unsendable and can be seen when it is handed over, checked the same way on every
path (SMTP DATA, ``POST /messages/raw``, ``m365relay send --eml``, the library): a problem found here is
answered at once with a permanent, specific refusal (SMTP 5xx, HTTP 422) instead of being accepted and
failing at Graph later — or, worse, being retried for days.

Only the header block is read; the body stays where it is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from ..addresses import Mailbox, format_mailbox, parse_list
from ..errors import ValidationError
from .mime import Field, OutgoingMessage

MAX_LINE = 998  # RFC 5322 §2.1.1 / RFC 5321 §4.5.3.1.6, without the CRLF
# RFC 5322 §3.6: fields that may appear at most once (Received, Comments, Keywords may repeat).
SINGLE_FIELDS = ("from", "sender", "reply-to", "to", "cc", "bcc", "subject", "date", "message-id", "in-reply-to",
                 "references")  # fmt: skip
ADDRESS_FIELDS = ("From", "Sender", "Reply-To", "To", "Cc", "Bcc")


@dataclass(frozen=True)
class Problem:
    """Why a message is refused. ``kind`` lets each front end pick its reply; ``text`` is the reason."""

    kind: str  # not-a-field | not-utf8 | nul | line-too-long | repeated | encoded-control | from-missing
    #            | from-unreadable | from-several
    text: str
    name: str = ""
    count: int = 0


class MessageProblem(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.text)
        self.problem = problem


def check_header_fields(message: OutgoingMessage) -> None:
    """Raise ``MessageProblem`` for a header block Exchange would refuse or misread. A missing From is not
    checked here: whether to refuse or add one is the caller's policy (``check_from``)."""
    for number, item in enumerate(message.fields, start=1):
        _check_field(number, item)
    counts = Counter(f.name.lower() for f in message.fields)
    for name in SINGLE_FIELDS:
        if counts[name] > 1:
            title = _title(name)
            raise MessageProblem(
                Problem(
                    "repeated",
                    f"header field {title} appears {counts[name]} times; RFC 5322 §3.6 allows one",
                    title,
                    counts[name],
                )
            )
    for name in ADDRESS_FIELDS:
        for entry in message.entries(name):
            if entry.problem and "control characters" in entry.problem:
                raise MessageProblem(
                    Problem(
                        "encoded-control",
                        f"header field {name}: {entry.problem}; RFC 2047 §5 does not allow it in an address",
                        name,
                    )
                )


def check_from(message: OutgoingMessage) -> None:
    """From must hold exactly one address the relay can read (RFC 5322 §3.6.2 allows several only with a
    Sender, and Graph sends from one mailbox)."""
    values = message.values("From")
    if not values:
        raise MessageProblem(Problem("from-missing", "the message has no From header field (RFC 5322 §3.6)"))
    entries = parse_list(values[0])
    good = [e for e in entries if e.mailbox is not None]
    if not good:
        shown = values[0].strip()[:80]
        why = entries[0].problem if entries else "it is empty"
        raise MessageProblem(
            Problem("from-unreadable", f"the From header field ({shown!r}) holds no valid address: {why}", "From")
        )
    if len(entries) > 1:
        raise MessageProblem(
            Problem("from-several", f"the From header field holds {len(entries)} entries; give exactly one", "From")
        )


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


def apply_from_policy(message: OutgoingMessage, rules: SenderRules) -> None:
    """Check From (and Sender) against the rules, then rewrite them if the policy says so.

    Everything is read by the one strict parser (``addresses``), so what is checked is what is rewritten
    and what Exchange reads. Under ``rewrite`` a missing From is added (the mailbox, as Postfix's cleanup
    adds missing headers); the new From keeps the display name as the reader saw it, re-encoded by
    ``format_mailbox``; the original From goes into Reply-To byte for byte when there is none."""
    if rules.policy == "rewrite" and not message.values("From"):
        message.set_value("From", format_mailbox(_mailbox_of(rules.mailbox)))
        return
    check_from(message)
    sender = message.mailboxes("From")[0]
    if rules.checks_senders:
        for address in [sender.addr_spec, *(m.addr_spec for m in message.mailboxes("Sender"))]:
            if not rules.permits(address):
                text = f"From {address} is not allowed for {rules.who}; it may send as {rules.describe_allowed()}"
                raise MessageProblem(Problem("from-not-allowed", text, address))
    if rules.policy != "rewrite":
        return
    message.remove("Sender")  # a Sender other than the mailbox means "on behalf of": 403 ErrorSendAsDenied
    if sender.addr_spec.lower() == rules.mailbox.lower() or rules.sends_as(sender.addr_spec):
        return  # the connector's own mailbox, or one of its send-as mailboxes: it sends as itself
    if not message.values("Reply-To"):
        original = next(f for f in message.fields if f.name.lower() == "from")
        message.set_field("Reply-To", b"Reply-To:" + original.value_bytes)
    mailbox = _mailbox_of(rules.mailbox)
    message.set_value("From", format_mailbox(Mailbox(mailbox.local, mailbox.domain, sender.display_name)))


def _mailbox_of(address: str) -> Mailbox:
    local, _, domain = address.rpartition("@")
    return Mailbox(local, domain)


def ready_rules(
    mailbox: str, policy: Literal["rewrite", "enforce"], who: str, send_as: tuple[str, ...] = ()
) -> SenderRules:
    """The From policy for a path without relay users (HTTP API key, CLI, library): the connector's mailboxes."""
    return SenderRules(mailbox, (), policy, who, send_as)


def accept_ready(message: OutgoingMessage, rules: SenderRules) -> OutgoingMessage:
    """The checks for a ready message handed over outside SMTP (HTTP raw, ``send --eml``, the library), with
    the same From policy as SMTP; refused as a ``ValidationError`` (HTTP 422)."""
    try:
        check_header_fields(message)
        check_body_lines(message)
        apply_from_policy(message, rules)
    except MessageProblem as exc:
        raise ValidationError("message", exc.problem.text, key="message") from None
    return message


def check_body_lines(message: OutgoingMessage) -> None:
    """No body line over 998 characters (RFC 5322 §2.1.1), as SMTP refuses while reading DATA: streamed,
    one line at a time, so a large body costs no memory."""
    stream = message.body
    stream.seek(message.body_offset)
    number = 0
    while line := stream.readline(MAX_LINE + 3):
        number += 1
        if len(line.rstrip(b"\r\n")) > MAX_LINE:
            raise MessageProblem(
                Problem(
                    "line-too-long",
                    f"body line {number} is longer than 998 characters (RFC 5322 §2.1.1); use quoted-printable "
                    "or base64",
                )
            )


def _check_field(number: int, item: Field) -> None:
    if not item.name:
        shown = item.raw[:40].decode("ascii", "replace").rstrip()
        mbox = item.raw.startswith(b"From ")  # the separator of an mbox file, not part of the message
        what = "an mbox 'From ' separator line, not a header field" if mbox else "not a header field"
        raise MessageProblem(Problem("not-a-field", f"line {number} ({shown!r}) is {what}"))
    if b"\r" in item.raw.replace(b"\r\n", b""):
        raise MessageProblem(Problem("bare-cr", f"bare CR in header field {item.name} (RFC 5322 §2.2)", item.name))
    if b"\x00" in item.raw:
        raise MessageProblem(Problem("nul", f"NUL byte in header field {item.name}", item.name))
    if not item.raw.isascii():
        try:
            item.raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MessageProblem(
                Problem("not-utf8", f"header field {item.name} is neither ASCII nor UTF-8 (RFC 6532)", item.name)
            ) from None
    for line in item.raw.split(b"\r\n"):
        if len(line) > MAX_LINE:
            raise MessageProblem(
                Problem(
                    "line-too-long",
                    f"header field {item.name} has a line of {len(line)} characters; RFC 5322 §2.1.1 allows 998",
                    item.name,
                )
            )


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-")).replace("Message-Id", "Message-ID")
