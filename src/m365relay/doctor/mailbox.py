"""Check 6: the mailbox can send — proven only by sending. App-only Mail.Send cannot look a mailbox up
(that needs User.Read.All), so without ``--send-test`` the check says it was not run: never a pass it
has not earned."""

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
        return skipped("mailbox", NOT_RUN)
    message = compose(
        MessageSpec(
            to=[to],
            subject=f"m365relay test message (connector {connector.name})",
            text=(
                f"This message was sent by `m365relay doctor --send-test` through Microsoft Graph from the "
                f"mailbox {connector.user_name} (connector {connector.name}, app {connector.client_id}).\n\n"
                "If it arrived, the connector can send mail. No reply is needed."
            ),
            headers={"X-M365relay-Test": "doctor"},
        ),
        default_from=connector.user_name,
    )
    outgoing = OutgoingMessage.from_message(message)
    message_id = outgoing.ensure_message_id(connector.user_name.rpartition("@")[2])
    try:
        sent = await runtime.sender.send(connector, outgoing)
    except DeliveryError as exc:
        return _refused(exc, connector, to, message_id)
    detail = (
        f"Microsoft Graph accepted a test message from {connector.user_name} to {to} (request-id {sent.request_id}); "
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


def _refused(exc: DeliveryError, connector: ConnectorConfig, to: str, message_id: str) -> CheckResult:
    data = {
        "code": exc.code,
        "request_id": exc.request_id,
        "message_id": message_id,
        "transient": exc.transient or None,
    }
    mailbox = connector.user_name
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
