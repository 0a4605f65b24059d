"""Finding a sent message in the sending mailbox's Sent Items, and reading a draft (PROTOCOL.md §12).

`GET /users/{mailbox}/mailFolders/sentitems/messages?$filter=internetMessageId eq '<id>'&$select=…` answers
200 with the matching copies (an empty list when there is none — which, right after a send, proves nothing:
Exchange files the copy asynchronously). A `'` inside the value is doubled [doc: OData string literals].
Needs Mail.ReadBasic.All, Mail.Read or Mail.ReadWrite; a mailbox outside the app's RBAC scope or access
policy answers 403 ErrorAccessDenied.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from ..connectors.model import ConnectorConfig
from ..errors import AccessPolicyError, MailboxNotFoundError, MessageError, PermissionMissingError
from ..graph import GraphSender

SELECT = "id,internetMessageId,sentDateTime"


class CannotCheck(Exception):
    """The mailbox cannot be read for this message (no permission, out of scope, a refused query)."""


@dataclass(frozen=True)
class SentCopy:
    item_id: str
    internet_message_id: str
    sent_at: str | None  # Graph's sentDateTime, as Graph wrote it
    request_id: str | None


def odata_string(value: str) -> str:
    """An OData string literal: quoted, with every `'` doubled."""
    return "'" + value.replace("'", "''") + "'"


class SentItems:
    def __init__(self, sender: GraphSender) -> None:
        self.sender = sender

    async def find(
        self, connector: ConnectorConfig, internet_message_id: str, *, mailbox: str | None = None
    ) -> SentCopy | None:
        """The Sent Items copy with this internetMessageId (in the connector's mailbox, or ``mailbox``), or None.
        Raises CannotCheck or a transient error."""
        query = {"$filter": f"internetMessageId eq {odata_string(internet_message_id)}", "$select": SELECT}
        try:
            response = await self.sender.read(connector, "mailFolders/sentitems/messages", query, mailbox=mailbox)
        except (PermissionMissingError, AccessPolicyError, MessageError) as exc:
            raise CannotCheck(exc.message) from exc
        try:
            items = response.json().get("value")
        except (ValueError, AttributeError) as exc:
            raise CannotCheck("Graph's answer to the Sent Items lookup is not JSON") from exc
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("internetMessageId") == internet_message_id:
                return SentCopy(
                    str(item.get("id") or ""),
                    internet_message_id,
                    item.get("sentDateTime") if isinstance(item.get("sentDateTime"), str) else None,
                    response.headers.get("request-id"),
                )
        return None

    async def draft_exists(self, connector: ConnectorConfig, draft_id: str, *, mailbox: str | None = None) -> bool:
        """Whether the draft is still in the mailbox (a sent draft leaves Drafts)."""
        try:
            path, query = f"messages/{quote(draft_id, safe='')}", {"$select": "id,isDraft"}
            await self.sender.read(connector, path, query, mailbox=mailbox)
        except MailboxNotFoundError as exc:
            if exc.code == "ErrorItemNotFound":
                return False
            raise
        except (PermissionMissingError, AccessPolicyError, MessageError) as exc:
            raise CannotCheck(exc.message) from exc
        return True
