"""Server-side admin sessions (``admin_sessions``).

The browser holds a random cookie value (256 bits); the database holds only its SHA-256, so a copy of the
database (a backup, a replica) cannot be replayed as a cookie. Each session carries its own CSRF token and a
small JSON ``data`` bag (the pending admin-consent ``state``, notices to show after a redirect).

A session ends after ``admin_session_idle_minutes`` without a request, after ``ABSOLUTE_LIFETIME`` whatever
happens, at sign-out, or when its administrator is removed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from ...access.admins import AdminUser
from ...clock import Clock
from ...db.engine import Database
from ...db.models import AdminSessionRow, AdminUserRow

COOKIE_BYTES = 32  # 256 bits: unguessable, and the hash of it is all the database keeps
ABSOLUTE_LIFETIME = timedelta(hours=12)  # even an always-busy session signs in again once a working day
MAX_COOKIE_LENGTH = 128  # anything longer is not one of ours: do not even hash it


@dataclass(frozen=True)
class AdminSession:
    id: str  # SHA-256 hex of the cookie value
    user_id: int
    username: str
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lookup:
    session: AdminSession | None
    expired: bool = False  # there was a session, and it ended (idle or too old): say so on the sign-in page


def session_id(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode("utf-8")).hexdigest()


class AdminSessions:
    def __init__(self, db: Database, clock: Clock, idle: timedelta) -> None:
        self.db = db
        self.clock = clock
        self.idle = idle

    def create(self, user: AdminUser) -> tuple[str, AdminSession]:
        """A new session for ``user`` (a new id at every sign-in: no session fixation). Returns the cookie
        value, which is never stored."""
        cookie = secrets.token_urlsafe(COOKIE_BYTES)
        now = self.clock.now()
        row = AdminSessionRow(
            id=session_id(cookie),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(COOKIE_BYTES),
            data={},
            created_at=now,
            last_seen_at=now,
        )
        with self.db.write() as session:
            self._delete_stale(session, now)
            session.add(row)
        return cookie, AdminSession(row.id, user.id, user.username, row.csrf_token, now, now, {})

    def load(self, cookie_value: str | None) -> Lookup:
        """The live session the cookie names, its last-seen time moved to now; or why there is none."""
        if not cookie_value or len(cookie_value) > MAX_COOKIE_LENGTH:
            return Lookup(None)
        now = self.clock.now()
        with self.db.write() as session:
            found = session.execute(
                select(AdminSessionRow, AdminUserRow.username)
                .join(AdminUserRow, AdminUserRow.id == AdminSessionRow.user_id)
                .where(AdminSessionRow.id == session_id(cookie_value))
            ).first()
            if found is None:
                return Lookup(None)
            row, username = found
            if now - row.last_seen_at > self.idle or now - row.created_at > ABSOLUTE_LIFETIME:
                session.delete(row)
                return Lookup(None, expired=True)
            row.last_seen_at = now
            return Lookup(
                AdminSession(row.id, row.user_id, username, row.csrf_token, row.created_at, now, dict(row.data or {}))
            )

    def save_data(self, sid: str, data: dict[str, Any]) -> None:
        with self.db.write() as session:
            row = session.get(AdminSessionRow, sid)
            if row is not None:
                row.data = data

    def delete(self, sid: str) -> None:
        with self.db.write() as session:
            session.execute(delete(AdminSessionRow).where(AdminSessionRow.id == sid))

    def _delete_stale(self, session: Session, now: datetime) -> None:
        session.execute(
            delete(AdminSessionRow).where(
                or_(
                    AdminSessionRow.last_seen_at < now - self.idle, AdminSessionRow.created_at < now - ABSOLUTE_LIFETIME
                )
            )
        )
