"""Reports the sandbox files into a sender's Inbox, written the way Exchange Online writes them (PROTOCOL.md §13).

An Exchange Online NDR is ``multipart/report; report-type=delivery-status`` (RFC 6522) with, in order, a
``multipart/alternative`` for people, a ``message/delivery-status`` (RFC 3464) and the original header block as
``text/rfc822-headers``; it comes from ``Microsoft Outlook <MicrosoftExchange…@{tenant}.onmicrosoft.com>`` and
carries an empty ``X-MS-Exchange-Message-Is-Ndr`` header. A "Delivery delayed:" notice has the same shape with
``Action: delayed``. Auto-replies are plain messages marked ``Auto-Submitted: auto-replied`` (RFC 3834).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

# The system mailbox Exchange Online sends NDRs from; its local part is fixed per tenant [obs].
_SYSTEM_LOCAL = "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e"


@dataclass(frozen=True)
class Failure:
    """Why one recipient could not receive: the RFC 3463 status and Exchange's diagnostic text."""

    status: str
    diagnostic: str
    action: str = "failed"  # failed | delayed
    remote_mta: str | None = None


RECIPIENT_NOT_FOUND = "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"

# Diagnostic texts Exchange Online prints for the codes the sandbox can be told to produce [obs].
_DIAGNOSTICS = {
    "5.1.1": "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
    "5.1.10": RECIPIENT_NOT_FOUND,
    "5.2.1": "550 5.2.1 STOREDRV.Deliver; mailbox disabled",
    "5.2.2": "552 5.2.2 STOREDRV.Deliver; recipient mailbox is full, message cannot be delivered",
    "5.4.1": "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [DBEB]",
    "5.7.1": "550 5.7.1 RESOLVER.RST.AuthRequired; authentication required",
    "5.7.708": "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
    "4.4.7": "550 4.4.7 QUEUE.Expired; message expired",
}


def failure_for(status: str) -> Failure:
    diagnostic = _DIAGNOSTICS.get(status, f"550 {status} Delivery failed")
    return Failure(status, diagnostic)


def tenant_system_address(tenant_domains: tuple[str, ...]) -> str:
    initial = next((d for d in tenant_domains if d.endswith(".onmicrosoft.com")), None)
    return f"{_SYSTEM_LOCAL}@{initial or (tenant_domains[0] if tenant_domains else 'contoso.onmicrosoft.com')}"


def _mta(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest().upper()
    return f"BN8PR{digest[:2]}MB{digest[2:6]}.namprd04.prod.outlook.com"


def _original_headers(raw: bytes) -> str:
    head, _, _ = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    return head.decode("utf-8", "replace").replace("\n", "\r\n")


def _human_parts(kind: str, recipients: list[tuple[str, Failure]], sender_domain: str, boundary: str) -> str:
    names = ", ".join(address for address, _ in recipients)
    if kind == "delayed":
        intro = f"Delivery to these recipients or groups is delayed: {names}"
        fix = "Exchange keeps trying. You don't need to do anything right now."
    else:
        intro = f"Your message to {names} couldn't be delivered."
        fix = "How to fix it: check the recipient's address for typing errors and send the message again."
    diag = "\r\n".join(f"{address}\r\nRemote Server returned '{f.diagnostic}'" for address, f in recipients)
    text = (
        f"{intro}\r\n\r\n{fix}\r\n\r\nMore info for email admins\r\nThe sending organization is {sender_domain}.\r\n"
        f"\r\nDiagnostic information for administrators:\r\n\r\n{diag}\r\n"
    )
    html = (
        f"<html><body><p><b>{intro}</b></p><p>{fix}</p><p>More info for email admins</p><pre>{diag}</pre></body></html>"
    )
    inner = f"{boundary}_alt"
    return (
        f'Content-Type: multipart/alternative; boundary="{inner}"\r\n\r\n'
        f"--{inner}\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{text}\r\n"
        f"--{inner}\r\nContent-Type: text/html; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n{html}\r\n"
        f"--{inner}--\r\n"
    )


def _delivery_status(reporting_mta: str, arrival: str, recipients: list[tuple[str, Failure]]) -> str:
    # RFC 3464 §2.1: per-message fields, then one blank-line-separated block per recipient.
    lines = [f"Reporting-MTA: dns;{reporting_mta}", f"Received-From-MTA: dns;{_mta('from' + reporting_mta)}"]
    lines.append(f"Arrival-Date: {arrival}")
    blocks = ["\r\n".join(lines)]
    for address, failure in recipients:
        fields = [
            f"Original-Recipient: rfc822;{address}",
            f"Final-Recipient: rfc822;{address}",
            f"Action: {failure.action}",
            f"Status: {failure.status}",
            f"Diagnostic-Code: smtp;{failure.diagnostic}",
        ]
        if failure.remote_mta:
            fields.append(f"Remote-MTA: dns;{failure.remote_mta}")
        fields.append(f"X-Display-Name: {address.split('@')[0]}")
        blocks.append("\r\n".join(fields))
    return "\r\n\r\n".join(blocks) + "\r\n"


def exchange_report(
    *,
    original: bytes,
    original_subject: str,
    sender: str,
    tenant_domains: tuple[str, ...],
    recipients: list[tuple[str, Failure]],
    now: float,
    arrived: float,
) -> bytes:
    """An NDR (or a delay notice, when every recipient's action is ``delayed``) for one original message."""
    kind = "delayed" if all(f.action == "delayed" for _, f in recipients) else "failed"
    boundary = f"_{uuid.uuid4().hex}_"
    sender_domain = sender.rpartition("@")[2]
    reporting = _mta(sender + str(now))
    date = format_datetime(datetime.fromtimestamp(now, tz=UTC))
    prefix = "Delivery delayed:" if kind == "delayed" else "Undeliverable:"
    headers = [
        f"From: Microsoft Outlook <{tenant_system_address(tenant_domains)}>",
        f"To: <{sender}>",
        f"Date: {date}",
        f"Subject: {prefix} {original_subject}".rstrip(),
        f"Message-ID: <{uuid.uuid4()}@{reporting}>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "X-MS-Exchange-Message-Is-Ndr: ",
        "Content-Language: en-US",
        "Auto-Submitted: auto-replied",
    ]
    body = (
        f"--{boundary}\r\n{_human_parts(kind, recipients, sender_domain, boundary)}\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"{_delivery_status(reporting, format_datetime(datetime.fromtimestamp(arrived, tz=UTC)), recipients)}\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{_original_headers(original)}\r\n\r\n"
        f"--{boundary}--\r\n"
    )
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8")


def auto_reply(*, recipient: str, sender: str, original_subject: str, original_id: str, now: float) -> bytes:
    """An out-of-office answer from `recipient`: never a bounce (RFC 3834 `Auto-Submitted: auto-replied`)."""
    headers = [
        f"From: <{recipient}>",
        f"To: <{sender}>",
        f"Date: {format_datetime(datetime.fromtimestamp(now, tz=UTC))}",
        f"Subject: Automatic reply: {original_subject}".rstrip(),
        f"Message-ID: <{uuid.uuid4()}@{recipient.rpartition('@')[2]}>",
        f"In-Reply-To: {original_id}",
        "Auto-Submitted: auto-replied",
        "X-Auto-Response-Suppress: All",
        "X-MS-Exchange-Inbox-Rules-Loop: " + recipient,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
    ]
    text = "I am out of the office until next week and will answer your message when I return.\r\n"
    return ("\r\n".join(headers) + "\r\n\r\n" + text).encode("ascii", "replace")
