"""What a webhook carries: the Standard Webhooks envelope ``{"type", "timestamp", "data"}`` with the facts
an application needs to match the event to what it sent — the relay's message id, the application's
Message-ID and idempotency key, the connector, the recipients, and for bounces the recipient's status.

Never a body, a subject or a secret: the copy in ``webhook_deliveries`` holds none of them. The JSON is
rendered the same way on every attempt (sorted keys), so retries carry identical bodies.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from ..db.models import WebhookDeliveryRow
from .kinds import PER_RECIPIENT, TEST_EVENT

RECIPIENT_FIELDS = ("recipient", "status", "diagnostic", "reported_at")


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_data(row: WebhookDeliveryRow) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event": row.event_type,
        "message": {
            "id": row.message_ref,
            "message_id": row.rfc_message_id,
            "idempotency_key": row.idempotency_key,
            "connector": row.connector_name,
            "recipients": list(row.recipients or ()),
        },
        "recipient": None,
        "status": None,
        "diagnostic": None,
        "reported_at": None,
        "detail": None,
        "graph_request_id": row.request_id,
    }
    if row.event_type in PER_RECIPIENT:
        data.update(_recipient_detail(row.detail))
    else:
        data["detail"] = row.detail
    return data


def _recipient_detail(detail: str | None) -> dict[str, Any]:
    """The bounce intake writes ``{"recipient", "status", "diagnostic", "reported_at"}``; anything else in
    the detail is not passed on, and a detail that is not that JSON object arrives as ``detail`` text."""
    try:
        parsed = json.loads(detail or "")
    except ValueError:
        return {"detail": detail}
    if not isinstance(parsed, dict):
        return {"detail": detail}
    return {key: parsed.get(key) for key in RECIPIENT_FIELDS}


def render(row: WebhookDeliveryRow) -> bytes:
    body = {"type": f"message.{row.event_type}", "timestamp": iso(row.occurred_at), "data": event_data(row)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def render_test(endpoint_id: int, connector: str, at: datetime) -> bytes:
    body = {
        "type": f"webhook.{TEST_EVENT}",
        "timestamp": iso(at),
        "data": {"endpoint": endpoint_id, "connector": connector, "text": "m365relay test event"},
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
