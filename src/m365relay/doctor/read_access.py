"""Check 7 (optional): the mailbox read permission that prevents duplicates after a crash (issue 15).

Graph's sendMail has no idempotency key. When the relay cannot know whether a send went out (the answer was
lost, a worker was killed mid-request), it looks the message up in the sending mailbox's Sent Items — if the
app holds Mail.ReadBasic.All (or Mail.Read / Mail.ReadWrite). Without it such a send is repeated and may
arrive twice. Those permissions are tenant-wide by default; Exchange Online RBAC for Applications limits
them to the sending mailbox (PROTOCOL.md §12). To tell, the check reads one *other* mailbox and expects 403:
the address in M365RELAY_DOCTOR_PROBE_MAILBOX, or the tenant's first other user when the token has
User.Read.All (`GET /users`), else that part is skipped.
"""

from __future__ import annotations

from ..connectors import ConnectorConfig
from ..errors import DeliveryError, MailboxNotEnabledError, MailboxNotFoundError
from ..graph.sender import can_read
from ..mailbox.sent_items import CannotCheck, SentItems
from ..runtime import Runtime
from .result import CheckResult, result

PROBE_ID = "<m365relay-doctor-probe@m365relay.invalid>"  # never sent: the lookup only has to run
LIST_USERS = ("User.Read.All", "User.ReadBasic.All", "Directory.Read.All")
BUYS = (
    "it lets m365relay check Sent Items before resending a message whose outcome is unknown (connection lost "
    "after the hand-over, worker killed), so nothing is delivered twice"
)


def rbac_commands(connector: ConnectorConfig, roles: tuple[str, ...] = ()) -> str:
    """The Exchange Online PowerShell that scopes the app to its sending mailboxes (RBAC for Applications,
    PROTOCOL.md §12): Mail.Send, and Mail.Read when the app reads bounces (it holds Mail.Read or
    Mail.ReadWrite), else Mail.ReadBasic, which is enough to find a message in Sent Items."""
    app = connector.client_id
    mailboxes = [connector.mailbox_address(m) for m in connector.known_mailboxes]
    scope = "m365relay mailboxes"
    read = "Mail.Read" if {"Mail.Read", "Mail.ReadWrite"} & set(roles) else "Mail.ReadBasic"
    granted = "Mail.Read" if read == "Mail.Read" else "Mail.ReadBasic.All"
    where = " -or ".join(f"PrimarySmtpAddress -eq '{m}'" for m in mailboxes)
    return "\n".join(
        [
            "Connect-ExchangeOnline",
            f'New-ServicePrincipal -AppId {app} -ObjectId <Enterprise application Object ID> -DisplayName "m365relay"',
            f'New-ManagementScope -Name "{scope}" -RecipientRestrictionFilter "{where}"',
            *(
                f'New-ManagementRoleAssignment -App {app} -Role "Application {role}" -CustomResourceScope "{scope}"'
                for role in ("Mail.Send", read)
            ),
            f"Then remove Mail.Send and {granted} from the app's API permissions in Entra ID: grants there "
            "and in RBAC for Applications add up, so the tenant-wide consent would still apply.",
        ]
    )


async def check_read_access(runtime: Runtime, connector: ConnectorConfig) -> CheckResult:
    token = await runtime.sender.check_token(connector)
    if can_read(token.roles) is False:
        detail = "no mailbox read permission: a send whose outcome is unknown is sent again and may arrive twice"
        remedy = (
            "Optional. Add Microsoft Graph > Application permissions > Mail.ReadBasic.All and grant admin consent: "
            f"{BUYS}. (Mail.Read gives that too, and lets m365relay read bounces from the Inbox: "
            "docs/delivery.md.) Then limit it (and Mail.Send) to the sending mailbox with Exchange RBAC for "
            "Applications:\n" + rbac_commands(connector, token.roles or ())
        )
        return result("read", "warn", detail, remedy, granted=False)
    sent_items = SentItems(runtime.sender)
    try:
        await sent_items.find(connector, PROBE_ID)
    except (CannotCheck, DeliveryError) as exc:
        detail = f"the token has a read permission, but Sent Items of {connector.user_name} cannot be read: {exc}"
        return result(
            "read",
            "warn",
            detail,
            "Include the sending mailbox in the app's RBAC scope.\n" + rbac_commands(connector, token.roles or ()),
            granted=True,
        )
    other = await _other_mailbox(runtime, connector, token.roles or ())
    if other is None:
        unchecked = "not checked (set M365RELAY_DOCTOR_PROBE_MAILBOX, or grant User.Read.All)"
        detail = f"Sent Items of {connector.user_name} can be read: {BUYS}. Limited to this mailbox: {unchecked}"
        return result("read", "pass", detail, granted=True, scoped=None)
    return await _probe_scope(sent_items, connector, other, token.roles or ())


async def _probe_scope(
    sent_items: SentItems, connector: ConnectorConfig, other: str, roles: tuple[str, ...]
) -> CheckResult:
    try:
        await sent_items.find(connector, PROBE_ID, mailbox=other)
    except CannotCheck:  # 403: outside the app's scope, as it should be
        detail = (f"Sent Items of {connector.user_name} can be read: {BUYS}; {other} cannot (403), so the "
                  "permission is limited to the sending mailbox")  # fmt: skip
        return result("read", "pass", detail, granted=True, scoped=True, probe=other)
    except (MailboxNotFoundError, MailboxNotEnabledError) as exc:
        detail = (
            f"Sent Items of {connector.user_name} can be read; the scope probe {other} is not a mailbox ({exc.code})"
        )
        return result("read", "pass", detail, granted=True, scoped=None, probe=other)
    except DeliveryError as exc:
        detail = f"Sent Items of {connector.user_name} can be read; the scope probe of {other} failed: {exc.message}"
        return result("read", "pass", detail, granted=True, scoped=None, probe=other)
    detail = (f"the read permission is tenant-wide: the app can also read {other}'s mail. It needs only "
              f"{connector.user_name}")  # fmt: skip
    remedy = "Limit the app to the sending mailbox with Exchange RBAC for Applications:\n" + rbac_commands(
        connector, roles
    )
    return result("read", "warn", detail, remedy, granted=True, scoped=False, probe=other)


async def _other_mailbox(runtime: Runtime, connector: ConnectorConfig, roles: tuple[str, ...]) -> str | None:
    """The mailbox to probe: the configured one, or the tenant's first user other than the sending mailbox."""
    if runtime.settings.doctor_probe_mailbox:
        return runtime.settings.doctor_probe_mailbox
    if not any(r in roles for r in LIST_USERS):
        return None
    try:
        response = await runtime.sender.read(
            connector, "", {"$top": "10", "$select": "userPrincipalName,mail"}, mailbox=""
        )
        users = response.json().get("value") or []
    except (DeliveryError, ValueError, AttributeError):
        return None
    for user in users if isinstance(users, list) else []:
        address = str(user.get("mail") or user.get("userPrincipalName") or "") if isinstance(user, dict) else ""
        if address and address.lower() != connector.user_name.lower():
            return address
    return None
