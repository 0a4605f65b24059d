"""The audit log: who changed what, when. Never records secret values — callers pass field names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from .db.models import AuditRow


def record(
    session: Session,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    *,
    remote_addr: str | None = None,
    at: datetime | None = None,
) -> None:
    session.add(
        AuditRow(
            at=at or datetime.now(UTC),
            actor=actor,
            action=action,
            target=target,
            detail=detail or {},
            remote_addr=remote_addr,
        )
    )
