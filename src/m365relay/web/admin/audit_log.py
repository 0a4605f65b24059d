"""The audit log as the admin UI writes and reads it: sign-ins, consent outcomes, tests, outbox actions, and
every change the stores record themselves (connector settings, administrators, API keys, relay users).

Details are field names and outcomes, never values of secrets (``m365relay.audit``'s rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select

from ... import audit
from ...db.models import AuditRow

if TYPE_CHECKING:
    from ...runtime import Runtime

PAGE_SIZE = 50

ACTIONS = {
    "admin.login": "Signed in",
    "admin.login_failed": "Failed sign-in",
    "admin.logout": "Signed out",
    "admin.create": "Administrator created",
    "admin.password": "Administrator's password changed",
    "admin.remove": "Administrator removed",
    "connector.save": "Connector settings changed",
    "connector.delete": "Connector deleted",
    "connector.consent": "Admin consent",
    "connector.consent_refused": "Admin consent answer refused",
    "connector.test": "Test connection",
    "connector.test_email": "Test email",
    "connector.paused": "Connector paused",
    "connector.resumed": "Connector resumed",
    "connector.stage_next": "New credential staged",
    "connector.promote_next": "New credential put in use",
    "connector.remove_old": "Old credential forgotten",
    "connector.discard_next": "Staged credential discarded",
    "message.retry": "Message retried",
    "message.cancel": "Message cancelled",
    "api_key.create": "API key created",
    "api_key.revoke": "API key revoked",
    "relay_user.add": "SMTP relay user added",
    "relay_user.update": "SMTP relay user changed",
    "relay_user.password": "SMTP relay user's password changed",
    "relay_user.remove": "SMTP relay user removed",
    "webhook.add": "Webhook endpoint added",
    "webhook.remove": "Webhook endpoint removed",
    "webhook.replay": "Webhook events replayed",
    "webhook.test": "Webhook test event",
}

# The filter on the audit page: what each choice matches (action names, or prefixes ending in ".").
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "": ("Everything", ()),
    "signin": ("Sign-ins and sign-outs", ("admin.login", "admin.login_failed", "admin.logout")),
    "connector": ("Connector settings and credentials", ("connector.",)),
    "consent": ("Admin consent", ("connector.consent", "connector.consent_refused")),
    "outbox": ("Outbox actions", ("message.",)),
    "webhooks": ("Webhook endpoints", ("webhook.",)),
    "accounts": ("Administrators, API keys, relay users", ("admin.create", "admin.password", "admin.remove",
                                                          "api_key.", "relay_user.")),
}  # fmt: skip

FIELD_LABELS = {
    "client_id": "OAuth Client ID",
    "tenant_id": "Tenant ID",
    "user_name": "User Name",
    "send_as": "Also send from",
    "secret": "Public Key (secret)",
    "secret_expires": "Secret expires",
    "certificate": "Certificate",
    "cloud": "Cloud",
    "login_url": "Login URL",
    "graph_url": "Graph URL",
    "graph_resource": "Graph resource",
    "ca_file": "CA file",
}


@dataclass(frozen=True)
class Entry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]
    remote_addr: str | None

    @property
    def title(self) -> str:
        return ACTIONS.get(self.action, self.action)

    @property
    def facts(self) -> list[tuple[str, str]]:
        """The detail as (label, text) pairs; setting names as the connector screen shows them."""
        shown: list[tuple[str, str]] = []
        for key, value in self.detail.items():
            if key == "changed" and isinstance(value, list):
                shown.append(("changed", ", ".join(FIELD_LABELS.get(str(v), str(v)) for v in value)))
            elif isinstance(value, dict):
                shown.append((key, ", ".join(f"{k}: {v}" for k, v in value.items())))
            elif isinstance(value, list):
                shown.append((key, ", ".join(str(v) for v in value) or "none"))
            elif value is not None:
                shown.append((key, str(value)))
        return shown


def record(
    runtime: Runtime,
    actor: str,
    action: str,
    target: str | None,
    detail: dict[str, Any],
    remote_addr: str | None,
) -> None:
    with runtime.db.write() as session:
        audit.record(session, actor, action, target, detail, remote_addr=remote_addr, at=runtime.clock.now())


def entries(runtime: Runtime, *, kind: str = "", before_id: int | None = None, limit: int = PAGE_SIZE) -> list[Entry]:
    """Newest first; page with ``before_id`` (the last id shown)."""
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    matches = KINDS[kind][1]
    if matches:
        query = query.where(
            or_(*(AuditRow.action.startswith(m) if m.endswith(".") else AuditRow.action == m for m in matches))
        )
    if before_id is not None:
        query = query.where(AuditRow.id < before_id)
    with runtime.db.read() as session:
        return [_entry(row) for row in session.scalars(query)]


def last_consent(runtime: Runtime, connector_name: str) -> Entry | None:
    """The latest recorded admin-consent outcome for a connector (what the checklist shows)."""
    with runtime.db.read() as session:
        row = session.scalar(
            select(AuditRow)
            .where(AuditRow.action == "connector.consent", AuditRow.target == connector_name)
            .order_by(AuditRow.id.desc())
            .limit(1)
        )
        return None if row is None else _entry(row)


def _entry(row: AuditRow) -> Entry:
    return Entry(row.id, row.at, row.actor, row.action, row.target, dict(row.detail or {}), row.remote_addr)
