"""Administrators of the web UI: a name and an argon2 password hash (``admin_users``).

``m365relay admin create-user`` and the demo create them; the admin UI signs them in with ``verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import audit
from ..clock import Clock, SystemClock
from ..db.engine import Database
from ..db.models import AdminUserRow
from ..errors import ConflictError, NotFoundError, ValidationError
from .passwords import Passwords, check_password, check_username


@dataclass(frozen=True)
class AdminUser:
    id: int
    username: str
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def from_row(cls, row: AdminUserRow) -> AdminUser:
        return cls(id=row.id, username=row.username, created_at=row.created_at, last_login_at=row.last_login_at)


class AdminStore:
    def __init__(self, db: Database, passwords: Passwords | None = None, clock: Clock | None = None) -> None:
        self.db = db
        self.passwords = passwords or Passwords()
        self.clock = clock or SystemClock()

    def create_user(self, username: str, password: str, *, actor: str = "cli") -> AdminUser:
        name = check_username(username)
        check_password(password)
        password_hash = self.passwords.hash(password)
        now = self.clock.now()
        with self.db.write() as session:
            if _by_name(session, name) is not None:
                raise ConflictError(
                    f"administrator {name!r} already exists",
                    remedy="Pick another name, or set a new password with `m365relay admin set-password`.",
                )
            row = AdminUserRow(username=name, password_hash=password_hash, created_at=now)
            session.add(row)
            session.flush()
            audit.record(session, actor, "admin.create", name, {}, at=now)
            return AdminUser.from_row(row)

    def set_password(self, username: str, password: str, *, actor: str = "cli") -> AdminUser:
        check_password(password)
        password_hash = self.passwords.hash(password)
        with self.db.write() as session:
            row = _existing(session, username)
            row.password_hash = password_hash
            audit.record(session, actor, "admin.password", row.username, {}, at=self.clock.now())
            return AdminUser.from_row(row)

    def verify(self, username: str, password: str, *, record_login: bool = True) -> AdminUser | None:
        """The administrator if name and password match, else None (the same time either way). Blocking."""
        try:
            name = check_username(username)
        except ValidationError:
            self.passwords.burn(password)
            return None
        with self.db.read() as session:
            row = _by_name(session, name)
            found = None if row is None else (AdminUser.from_row(row), row.password_hash)
        if found is None:
            self.passwords.burn(password)
            return None
        user, password_hash = found
        if not self.passwords.verify(password_hash, password):
            return None
        values: dict[str, object] = {}
        if record_login:
            values["last_login_at"] = self.clock.now()
        if self.passwords.needs_rehash(password_hash):
            values["password_hash"] = self.passwords.hash(password)
        if values:
            with self.db.write() as session:
                session.execute(update(AdminUserRow).where(AdminUserRow.id == user.id).values(**values))
        return user

    def get(self, username: str) -> AdminUser:
        with self.db.read() as session:
            return AdminUser.from_row(_existing(session, username))

    def find(self, username: str) -> AdminUser | None:
        with self.db.read() as session:
            row = _by_name(session, username)
            return None if row is None else AdminUser.from_row(row)

    def list(self) -> list[AdminUser]:
        with self.db.read() as session:
            return [
                AdminUser.from_row(r) for r in session.scalars(select(AdminUserRow).order_by(AdminUserRow.username))
            ]

    def remove(self, username: str, *, actor: str = "cli") -> None:
        with self.db.write() as session:
            row = _existing(session, username)
            session.delete(row)
            audit.record(session, actor, "admin.remove", row.username, {}, at=self.clock.now())


def _by_name(session: Session, username: str) -> AdminUserRow | None:
    return session.scalar(select(AdminUserRow).where(AdminUserRow.username == username.strip().lower()))


def _existing(session: Session, username: str) -> AdminUserRow:
    row = _by_name(session, username)
    if row is None:
        raise NotFoundError(
            f"no administrator {username.strip().lower()!r}", remedy="List them with `m365relay admin ls`."
        )
    return row
