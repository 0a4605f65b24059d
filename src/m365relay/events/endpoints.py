"""Webhook endpoints: one URL, the connector whose events it receives, which events, and its secret.

The secret is generated here, returned once (``IssuedEndpoint``) and stored encrypted with the connector
secrets' key (connectors/secretbox.py); listings never carry it. Replaying requeues deliveries that already
ran — with their original ``webhook-id``, so a receiver that did get them can tell.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .. import audit
from ..clock import Clock, SystemClock
from ..connectors import ConnectorStore, SecretBox
from ..db.engine import Database
from ..db.models import WebhookDeliveryRow, WebhookEndpointRow
from ..errors import NotFoundError, ValidationError
from .fanout import ACTIVATION_DELAY
from .kinds import decode_events, encode_events, parse_events
from .signer import new_secret

MAX_URL = 2048
MAX_ID = 2**31 - 1  # webhook_endpoints.id is an INTEGER
MAX_DELIVERY_ID = 2**63 - 1
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def check_url(value: str) -> str:
    """http/https with a host, as M365RELAY_ALERT_WEBHOOK_URL. The error never repeats the URL: one with
    credentials in it is a secret."""
    text = (value or "").strip()
    if not text:
        raise ValidationError("URL", "give the URL that receives the events", key="url")
    if len(text) > MAX_URL:
        raise ValidationError("URL", f"is longer than {MAX_URL} characters", key="url")
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        raise ValidationError("URL", "is not a valid URL", key="url") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValidationError("URL", "must be an http:// or https:// URL with a host", key="url")
    if any(ord(ch) < 0x21 for ch in text):
        raise ValidationError("URL", "must not contain spaces or control characters", key="url")
    return text


def display_url(value: str) -> str:
    """The URL as pages, listings and logs show it: without credentials and without the query (tokens live
    in either), e.g. ``https://***@hooks.example.com/m365?…``."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        return "(invalid URL)"
    port = f":{url.port}" if url.port else ""
    user = "***@" if url.userinfo else ""
    query = "?…" if url.query else ""
    return f"{url.scheme}://{user}{url.host}{port}{url.path}{query}"


@dataclass(frozen=True)
class Endpoint:
    id: int
    connector_id: int
    connector: str
    url: str  # as entered; only the delivery loop and ``test`` use it — show ``display_url``
    events: tuple[str, ...]
    enabled: bool
    active_from: datetime
    disabled_reason: str | None
    failing_since: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    created_at: datetime

    @property
    def shown_url(self) -> str:
        return display_url(self.url)

    def public_view(self) -> dict[str, Any]:
        """What the API and ``webhook ls --json`` return: never the secret, never the URL's credentials."""
        return {
            "id": self.id,
            "connector": self.connector,
            "url": self.shown_url,
            "events": list(self.events),
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "failing_since": _iso(self.failing_since),
            "last_success_at": _iso(self.last_success_at),
            "last_failure_at": _iso(self.last_failure_at),
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class IssuedEndpoint:
    """A new endpoint and its signing secret — the only time the secret is handed out."""

    endpoint: Endpoint
    secret: str

    def __repr__(self) -> str:
        return f"IssuedEndpoint(endpoint={self.endpoint!r}, secret='whsec_…')"


class EndpointStore:
    def __init__(self, db: Database, box: SecretBox, connectors: ConnectorStore, clock: Clock | None = None) -> None:
        self.db = db
        self.box = box
        self.connectors = connectors
        self.clock = clock or SystemClock()

    def add(
        self,
        url: str,
        events: list[str] | tuple[str, ...] | str | None,
        connector: str | None,
        *,
        actor: str = "cli",
        remote_addr: str | None = None,
    ) -> IssuedEndpoint:
        errors: list[ValidationError] = []
        checked_url = ""
        chosen: tuple[str, ...] = ()
        try:
            checked_url = check_url(url)
        except ValidationError as exc:
            errors.append(exc)
        try:
            chosen = parse_events(events)
        except ValidationError as exc:
            errors.append(exc)
        name = (connector or "default").strip()
        target = next((c for c in self.connectors.all() if c.name == name), None)
        if target is None:
            errors.append(ValidationError("--connector", f"there is no connector {name!r}", key="connector"))
        if errors:
            raise ValidationError.combine(errors)
        assert target is not None
        secret, now = new_secret(), self.clock.now()
        with self.db.write() as session:
            row = WebhookEndpointRow(
                connector_id=target.id,
                url=checked_url,
                event_mask=encode_events(chosen),
                active_from=now + timedelta(seconds=ACTIVATION_DELAY),
                secret_ciphertext=self.box.encrypt(secret),
                enabled=True,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            detail = {"connector": target.name, "url": display_url(checked_url), "events": list(chosen)}
            audit.record(session, actor, "webhook.add", str(row.id), detail, remote_addr=remote_addr, at=now)
            endpoint = _endpoint(row, target.name)
        return IssuedEndpoint(endpoint, secret)

    def list(self, connector: str | None = None) -> list[Endpoint]:
        names = {c.id: c.name for c in self.connectors.all()}
        with self.db.read() as session:
            rows = session.scalars(select(WebhookEndpointRow).order_by(WebhookEndpointRow.id)).all()
            found = [_endpoint(r, names.get(r.connector_id, str(r.connector_id))) for r in rows]
        return [e for e in found if connector is None or e.connector == connector]

    def get(self, endpoint_id: int) -> Endpoint:
        with self.db.read() as session:
            row = _row(session, endpoint_id)
            return _endpoint(row, self._name(row.connector_id))

    def secret(self, endpoint_id: int) -> str:
        """The decrypted signing secret — for the delivery loop only."""
        with self.db.read() as session:
            return self.box.decrypt(_row(session, endpoint_id).secret_ciphertext).reveal()

    def remove(self, endpoint_id: int, *, actor: str = "cli", remote_addr: str | None = None) -> Endpoint:
        with self.db.write() as session:
            row = _row(session, endpoint_id)
            endpoint = _endpoint(row, self._name(row.connector_id))
            session.delete(row)  # its deliveries go with it (ON DELETE CASCADE)
            audit.record(
                session, actor, "webhook.remove", str(endpoint_id), {"url": endpoint.shown_url},
                remote_addr=remote_addr, at=self.clock.now(),
            )  # fmt: skip
        return endpoint

    def replay(
        self,
        endpoint_id: int,
        *,
        since: datetime | None = None,
        delivery_id: int | None = None,
        actor: str = "cli",
        remote_addr: str | None = None,
    ) -> int:
        """Queue the endpoint's deliveries again (one, or every one created since ``since``) and enable the
        endpoint if it was disabled: asking for a replay is asking for delivery. Returns how many."""
        now = self.clock.now()
        with self.db.write() as session:
            row = _row(session, endpoint_id, lock=True)
            which = [WebhookDeliveryRow.endpoint_id == endpoint_id]
            if delivery_id is not None:
                if not 0 < delivery_id <= MAX_DELIVERY_ID:
                    raise NotFoundError(f"webhook endpoint {endpoint_id} has no delivery {delivery_id}")
                which.append(WebhookDeliveryRow.id == delivery_id)
            if since is not None:
                which.append(WebhookDeliveryRow.created_at >= since)
            result = session.execute(
                update(WebhookDeliveryRow)
                .where(*which)
                .values(status=PENDING, next_attempt_at=now, attempts=0, lease_owner=None, lease_expires_at=None)
            )
            count = int(getattr(result, "rowcount", 0) or 0)
            if delivery_id is not None and count == 0:
                raise NotFoundError(f"webhook endpoint {endpoint_id} has no delivery {delivery_id}")
            was_disabled = not row.enabled
            if was_disabled:
                row.active_from = now + timedelta(seconds=ACTIVATION_DELAY)
            row.enabled, row.disabled_reason, row.failing_since, row.updated_at = True, None, None, now
            detail = {"deliveries": count, "re_enabled": was_disabled}
            audit.record(session, actor, "webhook.replay", str(endpoint_id), detail, remote_addr=remote_addr, at=now)
        return count

    def deliveries(self, endpoint_id: int, limit: int = 50) -> builtins.list[WebhookDeliveryRow]:
        """The newest deliveries of an endpoint (for ``webhook ls`` details, the UI, and tests)."""
        with self.db.read() as session:
            _row(session, endpoint_id)
            rows = session.scalars(
                select(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.endpoint_id == endpoint_id)
                .order_by(WebhookDeliveryRow.id.desc())
                .limit(limit)
            ).all()
            session.expunge_all()
            return list(rows)

    def counts(self) -> dict[int, dict[str, int]]:
        """Deliveries per endpoint and status."""
        with self.db.read() as session:
            rows = session.execute(
                select(WebhookDeliveryRow.endpoint_id, WebhookDeliveryRow.status, func.count()).group_by(
                    WebhookDeliveryRow.endpoint_id, WebhookDeliveryRow.status
                )
            ).all()
        found: dict[int, dict[str, int]] = {}
        for endpoint_id, status, count in rows:
            found.setdefault(endpoint_id, {})[status] = count
        return found

    def _name(self, connector_id: int) -> str:
        connector = self.connectors.find(connector_id)
        return connector.name if connector is not None else str(connector_id)


def _row(session: Session, endpoint_id: int, *, lock: bool = False) -> WebhookEndpointRow:
    # An id past the column's range names nothing (and must not reach the driver as an overflow).
    row = session.get(WebhookEndpointRow, endpoint_id, with_for_update=lock) if 0 < endpoint_id <= MAX_ID else None
    if row is None:
        raise NotFoundError(f"no webhook endpoint {endpoint_id}", remedy="List them with: m365relay webhook ls")
    return row


def _endpoint(row: WebhookEndpointRow, connector: str) -> Endpoint:
    return Endpoint(
        row.id,
        row.connector_id,
        connector,
        row.url,
        decode_events(row.event_mask),
        row.enabled,
        row.active_from,
        row.disabled_reason,
        row.failing_since,
        row.last_success_at,
        row.last_failure_at,
        row.last_error,
        row.created_at,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
