"""Check 6: the mailbox can send — proven only by sending. App-only Mail.Send cannot look a mailbox up
(that needs User.Read.All), so without ``--send-test`` the check says it was not run: never a pass it
has not earned.

A connector with send-as mailboxes (PROTOCOL.md §15) sends a test message through each listed address too,
each by its own ``/users/{mailbox}/sendMail``; the check reports every one. ``@domain`` entries name no
mailbox to test: they are checked when mail From one of their mailboxes is first sent."""

from __future__ import annotations

from ..compose import MessageSpec, compose
from ..connectors import ConnectorConfig
from ..connectors import validation as rules
from ..errors import (
    AccessPolicyError,
    DeliveryError,
    InvalidRecipientsError,
    MailboxNotEnabledError,
    MailboxNotFoundError,
    ValidationError,
)
from ..graph import OutgoingMessage
from ..runtime import Runtime
from .result import CheckResult, result, skipped

NOT_RUN = "give --send-test ADDRESS (or the address field of Test connection) to send a real test message"


def test_address(value: str) -> str:
    """The --send-test address, checked before anything is sent (bad input changes nothing)."""
    try:
        return rules.user_name(value)
    except ValidationError as exc:
        raise ValidationError("--send-test", f"{value!r} is not one e-mail address", key="send_test_to") from exc


async def check_mailbox(runtime: Runtime, connector: ConnectorConfig, to: str | None) -> CheckResult:
    if to is None:
        return skipped("mailbox", NOT_RUN + _domains_note(connector))
    main = await _check_one(runtime, connector, to, "")
    listed = [entry for entry in connector.send_as if not entry.startswith("@")]
    if not listed and not _domains_note(connector):
        return main
    others = [(address, await _check_one(runtime, connector, to, address)) for address in listed]
    lines = [f"{connector.user_name} (User Name): {main.status}: {main.detail}"]
    lines += [f"{address} (send-as): {found.status}: {found.detail}" for address, found in others]
    worst = max([main, *(found for _, found in others)], key=lambda r: ("pass", "skip", "warn", "fail").index(r.status))
    remedy = "; ".join(dict.fromkeys(r.remedy for r in [main, *(f for _, f in others)] if r.remedy))
    data = dict(main.data)
    data["mailboxes"] = [{"address": connector.user_name, "status": main.status, "detail": main.detail}] + [
        {"address": address, "status": found.status, "detail": found.detail, **found.data} for address, found in others
    ]
    return result("mailbox", worst.status, "; ".join(lines) + _domains_note(connector), remedy, **data)


def _domains_note(connector: ConnectorConfig) -> str:
    domains = [entry for entry in connector.send_as if entry.startswith("@")]
    if not domains:
        return ""
    return f"; {', '.join(domains)}: any mailbox of the domain, checked when mail From one is first sent"


async def _check_one(runtime: Runtime, connector: ConnectorConfig, to: str, send_as: str) -> CheckResult:
    """One test message through ``send_as`` ("" for the User Name mailbox)."""
    sender = connector.mailbox_address(send_as)
    message = compose(
        MessageSpec(
            to=[to],
            subject=f"m365relay test message (connector {connector.name})",
            text=(
                f"This message was sent by `m365relay doctor --send-test` through Microsoft Graph from the "
                f"mailbox {sender} (connector {connector.name}, app {connector.client_id}).\n\n"
                "If it arrived, the connector can send mail. No reply is needed."
            ),
            headers={"X-M365relay-Test": "doctor"},
        ),
        default_from=sender,
    )
    outgoing = OutgoingMessage.from_message(message)
    message_id = outgoing.ensure_message_id(sender.rpartition("@")[2])
    try:
        sent = await runtime.sender.send(connector, outgoing, mailbox=send_as)
    except DeliveryError as exc:
        return _refused(exc, connector, to, message_id, sender)
    detail = (
        f"Microsoft Graph accepted a test message from {sender} to {to} (request-id {sent.request_id}); "
        "Graph queues mail, so check that it arrives"
    )
    return result(
        "mailbox",
        "pass",
        detail,
        request_id=sent.request_id,
        client_request_id=sent.client_request_id,
        message_id=message_id,
        to=to,
    )


def _refused(exc: DeliveryError, connector: ConnectorConfig, to: str, message_id: str, mailbox: str) -> CheckResult:
    data = {
        "code": exc.code,
        "request_id": exc.request_id,
        "message_id": message_id,
        "transient": exc.transient or None,
    }
    if isinstance(exc, MailboxNotFoundError):
        detail = f"{mailbox} is not a mailbox in tenant {connector.tenant_id} (Graph: 404 {exc.code})"
    elif isinstance(exc, MailboxNotEnabledError):
        detail = (
            f"{mailbox} exists but cannot send through Microsoft Graph — unlicensed, inactive, soft-deleted or "
            f"on-premises (Graph: 404 {exc.code})"
        )
    elif isinstance(exc, AccessPolicyError):
        detail = (
            f"an Exchange application access policy keeps app {connector.client_id} away from {mailbox} "
            f"(Graph: 403 {exc.code} [RAOP])"
        )
    elif isinstance(exc, InvalidRecipientsError):
        detail = f"the test recipient {to} was refused ({exc.code})"
        return result("mailbox", "fail", detail, "Give another --send-test address.", **data)
    else:
        detail = f"the test message was not sent: {exc.message}"
    return result("mailbox", "fail", detail, exc.remedy, **data)
