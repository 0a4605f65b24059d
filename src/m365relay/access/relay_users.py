"""SMTP relay users: a name, an argon2 password hash, optionally the From addresses the user may use and the
connector its mail goes through (default: the connector named ``default``).

``allowed_from`` entries are full addresses (``app@contoso.com``) or whole domains (``@contoso.com``), stored
in lower case. The SMTP relay applies them with the From policy (docs/smtp.md).

Logins are expensive on purpose (argon2: ~0.2 s and 64 MiB each). Applications that open one SMTP
connection per message would pay that every time, so a successful login is remembered for a few minutes
as a keyed digest of name and password (never the password itself), valid only while the stored hash is
unchanged — the idea of Dovecot's auth cache.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import audit
from ..clock import Clock, SystemClock
from ..db.engine import Database
from ..db.models import ConnectorRow, RelayUserRow
from ..errors import ConflictError, NotFoundError, ValidationError
from .passwords import Passwords, check_password, check_username

LOGIN_CACHE_SECONDS = 300.0
LAST_USED_RESOLUTION = timedelta(seconds=60)  # last_used_at is a hint: at most one write a minute per user
_FROM_ENTRY = re.compile(r"^[^@\s<>,;:\"()\[\]\\]*@[^@\s<>,;:\"()\[\]\\]+\.[^@\s<>,;:\"()\[\]\\]+$")


@dataclass(frozen=True)
class RelayUser:
    id: int
    username: str
    allowed_from: tuple[str, ...]
    connector_id: int | None
    connector_name: str | None
    disabled: bool
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: RelayUserRow, connector_name: str | None) -> RelayUser:
        return cls(
            id=row.id,
            username=row.username,
            allowed_from=tuple(row.allowed_from or ()),
            connector_id=row.connector_id,
            connector_name=connector_name,
            disabled=row.disabled,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
        )


@dataclass(frozen=True)
class _Remembered:
    digest: bytes
    password_hash: str
    until: float


def check_allowed_from(entries: Iterable[str]) -> tuple[str, ...]:
    """Full addresses or ``@domain`` (``*@domain`` is accepted and stored as ``@domain``)."""
    out: list[str] = []
    for raw in entries:
        entry = raw.strip().lower()
        if entry.startswith("*@"):
            entry = entry[1:]
        if not _FROM_ENTRY.match(entry):
            raise ValidationError(
                "allowed From", f"{raw!r} is neither an address (app@contoso.com) nor a domain (@contoso.com)"
            )
        if entry not in out:
            out.append(entry)
    return tuple(out)


class RelayUserStore:
    def __init__(
        self,
        db: Database,
        passwords: Passwords | None = None,
        clock: Clock | None = None,
        *,
        login_cache_seconds: float = LOGIN_CACHE_SECONDS,
    ) -> None:
        self.db = db
        self.passwords = passwords or Passwords()
        self.clock = clock or SystemClock()
        self.login_cache_seconds = login_cache_seconds
        self._cache_key = secrets.token_bytes(32)
        self._remembered: dict[int, _Remembered] = {}
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------

    def get(self, username: str) -> RelayUser:
        found = self.find(username)
        if found is None:
            raise NotFoundError(
                f"no relay user {username.strip().lower()!r}", remedy="List them with `m365relay relay-user ls`."
            )
        return found

    def find(self, username: str) -> RelayUser | None:
        with self.db.read() as session:
            row = _by_name(session, username)
            return None if row is None else RelayUser.from_row(row, _connector_name(session, row.connector_id))

    def list(self) -> list[RelayUser]:
        with self.db.read() as session:
            names = {row.id: row.name for row in session.execute(select(ConnectorRow.id, ConnectorRow.name))}
            rows = session.scalars(select(RelayUserRow).order_by(RelayUserRow.username)).all()
            return [RelayUser.from_row(row, names.get(row.connector_id or -1)) for row in rows]

    # -- writing --------------------------------------------------------------------------------

    def add(
        self,
        username: str,
        password: str,
        *,
        allowed_from: Iterable[str] = (),
        connector: str | int | None = None,
        actor: str = "cli",
    ) -> RelayUser:
        """Create a relay user. Everything is validated before anything is written."""
        name = check_username(username)
        check_password(password)
        allowed = check_allowed_from(allowed_from)
        password_hash = self.passwords.hash(password)
        now = self.clock.now()
        with self.db.write() as session:
            if _by_name(session, name) is not None:
                raise ConflictError(
                    f"relay user {name!r} already exists",
                    remedy="Pick another name, or set a new password with `m365relay relay-user passwd`.",
                )
            connector_id = _connector_id(session, connector)
            row = RelayUserRow(
                username=name,
                password_hash=password_hash,
                allowed_from=list(allowed),
                connector_id=connector_id,
                disabled=False,
                created_at=now,
            )
            session.add(row)
            session.flush()
            detail = {"allowed_from": list(allowed), "connector_id": connector_id}
            audit.record(session, actor, "relay_user.add", name, detail, at=now)
            return RelayUser.from_row(row, _connector_name(session, connector_id))

    def set_password(self, username: str, password: str, *, actor: str = "cli") -> RelayUser:
        check_password(password)
        password_hash = self.passwords.hash(password)
        with self.db.write() as session:
            row = _existing(session, username)
            row.password_hash = password_hash
            audit.record(session, actor, "relay_user.password", row.username, {}, at=self.clock.now())
            return RelayUser.from_row(row, _connector_name(session, row.connector_id))

    def update(
        self,
        username: str,
        *,
        allowed_from: Iterable[str] | None = None,
        connector: str | int | None = None,
        disabled: bool | None = None,
        actor: str = "cli",
    ) -> RelayUser:
        """Change what is given; ``connector=""`` goes back to the default connector."""
        allowed = check_allowed_from(allowed_from) if allowed_from is not None else None
        with self.db.write() as session:
            row = _existing(session, username)
            changed: list[str] = []
            if allowed is not None and tuple(row.allowed_from or ()) != allowed:
                row.allowed_from, changed = list(allowed), [*changed, "allowed_from"]
            if connector is not None:
                connector_id = _connector_id(session, connector or None)
                if connector_id != row.connector_id:
                    row.connector_id, changed = connector_id, [*changed, "connector"]
            if disabled is not None and disabled != row.disabled:
                row.disabled, changed = disabled, [*changed, "disabled"]
            if changed:
                audit.record(
                    session, actor, "relay_user.update", row.username, {"changed": changed}, at=self.clock.now()
                )
            return RelayUser.from_row(row, _connector_name(session, row.connector_id))

    def remove(self, username: str, *, actor: str = "cli") -> None:
        with self.db.write() as session:
            row = _existing(session, username)
            session.delete(row)
            audit.record(session, actor, "relay_user.remove", row.username, {}, at=self.clock.now())
        with self._lock:
            self._remembered.pop(row.id, None)

    # -- logging in -----------------------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> RelayUser | None:
        """The user, if the name and password match and the user is enabled; else None. Blocking (argon2 and
        the database): call it through ``asyncio.to_thread``. Raises ``StoreError`` if the database is down."""
        try:
            name = check_username(username)
        except ValidationError:
            self.passwords.burn(password)
            return None
        with self.db.read() as session:
            row = _by_name(session, name)
            user = None if row is None else RelayUser.from_row(row, _connector_name(session, row.connector_id))
            password_hash = row.password_hash if row is not None else ""
        if user is None or user.disabled:
            self.passwords.burn(password)
            return None
        digest = hmac.new(self._cache_key, f"{name}\x00{password}".encode(), hashlib.sha256).digest()
        if not self._remembers(user.id, digest, password_hash):
            if not self.passwords.verify(password_hash, password):
                return None
            self._remember(user.id, digest, password_hash)
            if self.passwords.needs_rehash(password_hash):
                self._rehash(user.id, password_hash, password)
        self._touch(user)
        return user

    def _remembers(self, user_id: int, digest: bytes, password_hash: str) -> bool:
        with self._lock:
            entry = self._remembered.get(user_id)
        return (
            entry is not None
            and entry.until > time.monotonic()
            and entry.password_hash == password_hash
            and hmac.compare_digest(entry.digest, digest)
        )

    def _remember(self, user_id: int, digest: bytes, password_hash: str) -> None:
        if self.login_cache_seconds <= 0:
            return
        with self._lock:
            self._remembered[user_id] = _Remembered(digest, password_hash, time.monotonic() + self.login_cache_seconds)

    def _rehash(self, user_id: int, old_hash: str, password: str) -> None:
        new_hash = self.passwords.hash(password)
        with self.db.write() as session:
            session.execute(
                update(RelayUserRow)
                .where(RelayUserRow.id == user_id, RelayUserRow.password_hash == old_hash)
                .values(password_hash=new_hash)
            )
        with self._lock:
            self._remembered.pop(user_id, None)

    def _touch(self, user: RelayUser) -> None:
        now = self.clock.now()
        if user.last_used_at is not None and now - user.last_used_at < LAST_USED_RESOLUTION:
            return
        with self.db.write() as session:
            session.execute(update(RelayUserRow).where(RelayUserRow.id == user.id).values(last_used_at=now))


def _by_name(session: Session, username: str) -> RelayUserRow | None:
    return session.scalar(select(RelayUserRow).where(RelayUserRow.username == username.strip().lower()))


def _existing(session: Session, username: str) -> RelayUserRow:
    row = _by_name(session, username)
    if row is None:
        raise NotFoundError(
            f"no relay user {username.strip().lower()!r}", remedy="List them with `m365relay relay-user ls`."
        )
    return row


def _connector_id(session: Session, ref: str | int | None) -> int | None:
    """None means "the default connector" (resolved when mail arrives, so it may be created later)."""
    if ref is None:
        return None
    if isinstance(ref, int) or ref.isdigit():
        row = session.get(ConnectorRow, int(ref))
    else:
        row = session.scalar(select(ConnectorRow).where(ConnectorRow.name == ref))
    if row is None:
        raise ValidationError(
            "connector", f"no connector {ref!r}", remedy="List connectors with `m365relay connector ls`."
        )
    return row.id


def _connector_name(session: Session, connector_id: int | None) -> str | None:
    if connector_id is None:
        return None
    return session.scalar(select(ConnectorRow.name).where(ConnectorRow.id == connector_id))
