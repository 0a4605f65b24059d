"""API keys for the JSON API: created once, shown once, stored as a SHA-256 digest, scoped, revocable.

A key reads ``m365r_<prefix>_<secret>``: the prefix (8 hex digits) names the key in listings and logs
without revealing it; the secret is 256 random bits. Keys this random cannot be guessed from their digest,
so a plain SHA-256 is the right store (a slow password hash such as argon2 would only slow every request);
lookups go by the digest of the whole key, so no comparison ever touches a stored secret.

Scopes: ``send`` (submit mail, cancel or retry what the same application submitted), ``read`` (messages
and connectors), ``admin`` (everything, any message). ``admin`` implies the others.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .. import audit
from ..clock import Clock, SystemClock
from ..db.engine import Database
from ..db.models import ApiKeyRow
from ..errors import ConflictError, NotFoundError, StoreError, ValidationError

log = logging.getLogger("m365relay.access")

SCOPES = ("send", "read", "admin")
KEY_PREFIX = "m365r"
KEY_PATTERN = re.compile(r"^m365r_(?P<prefix>[0-9a-f]{8})_(?P<secret>[A-Za-z0-9_-]{43})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@:-]{0,127}$")
LAST_USED_RESOLUTION = 60.0  # seconds: last_used_at is a hint, not an audit trail; one write a minute per key


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    connector_id: int | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def label(self) -> str:
        """How messages record the key that sent them: the name, and the prefix that is never reused."""
        return f"{self.name} ({self.prefix})"

    def may_see(self, connector_id: int) -> bool:
        """A key bound to one connector sees only that connector's mail."""
        return self.connector_id is None or self.connector_id == connector_id

    @classmethod
    def from_row(cls, row: ApiKeyRow) -> ApiKey:
        return cls(
            row.id,
            row.name,
            row.prefix,
            tuple(row.scopes or ()),
            row.connector_id,
            row.created_at,
            row.last_used_at,
            row.revoked_at,
        )

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def public_view(self) -> dict[str, Any]:
        """What listings show: never the key, never its digest."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": f"{KEY_PREFIX}_{self.prefix}_…",
            "scopes": list(self.scopes),
            "connector_id": self.connector_id,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


@dataclass(frozen=True)
class IssuedKey:
    """A freshly created key: ``token`` is the only copy of the key there will ever be."""

    key: ApiKey
    token: str

    def __repr__(self) -> str:  # the token must not end up in a log by accident
        return f"IssuedKey(key={self.key!r}, token='{KEY_PREFIX}_{self.key.prefix}_…')"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalise_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    cleaned = [s.strip().lower() for s in scopes if s.strip()]
    if not cleaned:
        raise ValidationError("--scope", f"give at least one scope: {', '.join(SCOPES)}", key="scopes")
    unknown = sorted(set(cleaned) - set(SCOPES))
    if unknown:
        raise ValidationError(
            "--scope", f"unknown scope(s) {', '.join(unknown)}; use {', '.join(SCOPES)}", key="scopes"
        )
    return tuple(s for s in SCOPES if s in cleaned)


class ApiKeyStore:
    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self._touched: dict[int, float] = {}  # key id → monotonic time of the last last_used_at write
        self._lock = threading.Lock()

    def create(
        self, name: str, scopes: list[str] | tuple[str, ...], *, connector_id: int | None = None, actor: str = "cli"
    ) -> IssuedKey:
        """Make a key. The returned ``token`` is not stored anywhere: show it once."""
        name = name.strip()
        if not NAME_PATTERN.match(name):
            raise ValidationError(
                "--name", "1–128 letters, digits, spaces or . _ @ : - (starting with a letter or digit)", key="name"
            )
        clean_scopes = normalise_scopes(scopes)
        prefix = secrets.token_hex(4)
        token = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        now = self.clock.now()
        with self.db.write() as session:
            if self._active_by_name(session, name) is not None:
                raise ConflictError(
                    f"an active API key named {name!r} exists",
                    remedy="Revoke it first (m365relay api-key revoke NAME) or choose another name.",
                )
            row = ApiKeyRow(
                name=name,
                prefix=prefix,
                key_hash=digest(token),
                scopes=list(clean_scopes),
                connector_id=connector_id,
                created_at=now,
            )
            session.add(row)
            session.flush()
            audit.record(session, actor, "api_key.create", name, {"scopes": list(clean_scopes)}, at=now)
            return IssuedKey(ApiKey.from_row(row), token)

    def list(self, *, include_revoked: bool = True) -> list[ApiKey]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.id)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        with self.db.read() as session:
            return [ApiKey.from_row(row) for row in session.scalars(query)]

    def get(self, ref: str | int) -> ApiKey:
        with self.db.read() as session:
            return ApiKey.from_row(self._find(session, ref))

    def revoke(self, ref: str | int, *, actor: str = "cli") -> ApiKey:
        """Revoke by id, prefix or (active) name. Revoking twice is not an error: the key stays revoked."""
        now = self.clock.now()
        with self.db.write() as session:
            row = self._find(session, ref)
            if row.revoked_at is None:
                row.revoked_at = now
                audit.record(session, actor, "api_key.revoke", row.name, {"prefix": row.prefix}, at=now)
            session.flush()
            return ApiKey.from_row(row)

    def authenticate(self, token: str) -> ApiKey | None:
        """The key this token is (revoked keys included: the caller says why it refuses them), or None."""
        if not KEY_PATTERN.match(token):
            return None
        with self.db.read() as session:
            row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest(token)))
            key = ApiKey.from_row(row) if row is not None else None
        if key is not None and not key.revoked:
            self._touch(key.id)
        return key

    def _touch(self, key_id: int) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(key_id, -LAST_USED_RESOLUTION) < LAST_USED_RESOLUTION:
                return
            self._touched[key_id] = now
        try:
            with self.db.write() as session:
                session.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=self.clock.now()))
        except StoreError as exc:
            # last_used_at is a hint: a full disk or a database that just went away must not fail the request
            # that was authenticated already. The next request a minute on tries the stamp again.
            log.warning("API key %s: last-used time not recorded (%s)", key_id, exc.message)

    def _find(self, session: Session, ref: str | int) -> ApiKeyRow:
        text = str(ref).strip()
        row: ApiKeyRow | None = None
        if text.isdigit():
            row = session.get(ApiKeyRow, int(text))
        if row is None:
            match = re.fullmatch(r"(?:m365r_)?([0-9a-f]{8})(?:_.*)?", text)
            if match:
                row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.prefix == match.group(1)))
        if row is None:
            row = self._active_by_name(session, text) or session.scalar(
                select(ApiKeyRow).where(ApiKeyRow.name == text).order_by(ApiKeyRow.id.desc()).limit(1)
            )
        if row is None:
            shown = text if not text.startswith(f"{KEY_PREFIX}_") else f"{text[:14]}…"  # never echo a whole key
            raise NotFoundError(f"no API key {shown!r}", remedy="List the keys with `m365relay api-key ls`.")
        return row

    @staticmethod
    def _active_by_name(session: Session, name: str) -> ApiKeyRow | None:
        return session.scalar(select(ApiKeyRow).where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None)))
