"""Connectors in the database: saving what the admin typed (validated, secrets encrypted), reading it back
decrypted, and the active/paused state the dispatcher drives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from .. import audit
from ..clock import Clock, SystemClock
from ..clouds import DEFAULT_GRAPH_RESOURCE, resolve_cloud
from ..db.engine import Database
from ..db.models import ConnectorRow, CredentialRow, MessageRow
from ..errors import ConflictError, DeliveryError, NotFoundError, ValidationError
from . import validation
from .certificates import CertificateInfo
from .model import ConnectorConfig, Credential
from .secretbox import SecretBox, SecretKeyError

DEFAULT_NAME = "default"
FIELD_KEYS = {"cloud": "cloud", "login URL": "login_url", "Graph URL": "graph_url", "Graph resource": "graph_resource"}
T = TypeVar("T")


@dataclass(frozen=True)
class ConnectorUpdate:
    """What the connector screen submits. ``None`` keeps the stored value (an empty secret field keeps the
    stored secret, as the manual's screen does)."""

    client_id: str | None = None
    tenant_id: str | None = None
    user_name: str | None = None
    cloud: str | None = None
    login_url: str | None = None
    graph_url: str | None = None
    graph_resource: str | None = None  # custom cloud only; empty → the default (clouds.DEFAULT_GRAPH_RESOURCE)
    ca_file: str | Path | None = None
    secret: str | None = None
    secret_expires: date | str | None = None
    certificate: CertificateInfo | None = None
    send_as: list[str] | None = None  # None keeps the list; [] clears it


class ConnectorStore:
    def __init__(self, db: Database, box: SecretBox, clock: Clock | None = None) -> None:
        self.db = db
        self.box = box
        self.clock = clock or SystemClock()

    # -- reading --------------------------------------------------------------------------------

    def get(self, ref: str | int = DEFAULT_NAME) -> ConnectorConfig:
        with self.db.read() as session:
            row = _find(session, ref)
            if row is None:
                raise NotFoundError(
                    f"no connector {ref!r}",
                    remedy="Create it with `m365relay connector set` or on the admin page.",
                )
            return self._config(session, row)

    def find(self, ref: str | int = DEFAULT_NAME) -> ConnectorConfig | None:
        try:
            return self.get(ref)
        except NotFoundError:
            return None

    def all(self) -> list[ConnectorConfig]:
        with self.db.read() as session:
            rows = session.scalars(select(ConnectorRow).order_by(ConnectorRow.id)).all()
            return [self._config(session, row) for row in rows]

    # -- writing --------------------------------------------------------------------------------

    def save(
        self, name: str, change: ConnectorUpdate, *, actor: str = "cli", remote_addr: str | None = None
    ) -> ConnectorConfig:
        """Create or update the connector ``name``. All fields are validated before anything is written."""
        now = self.clock.now()
        with self.db.write() as session:
            row = _find(session, name)
            values, errors = _validated(change, row, now.date())
            moved = _moved(row, values) if not errors else []
            if moved and not (change.secret or change.certificate):
                errors.extend(self._reentry_errors(session, row, moved))
            if row is None:
                _collect(errors, "name", validation.connector_name, name)
            if errors:
                raise ValidationError.combine(errors)
            if row is None:
                row = ConnectorRow(name=name, created_at=now, updated_at=now, state="active", config_version=1)
                session.add(row)
            changed = [key for key, value in values.items() if getattr(row, key) != value]
            for key in changed:
                setattr(row, key, values[key])
            changed += self._store_credential(session, row, change, now)
            if moved:
                changed += self._forget_staged(session, row)
            if changed:
                row.config_version = (row.config_version or 0) + 1
                row.updated_at = now
                if row.state == "paused":
                    row.next_probe_at = now  # the admin changed something: try again at once
                session.flush()
                audit.record(
                    session,
                    actor,
                    "connector.save",
                    name,
                    {"changed": sorted(set(changed))},
                    remote_addr=remote_addr,
                    at=now,
                )
            session.flush()
            return self._config(session, row)

    def _reentry_errors(self, session: Session, row: ConnectorRow | None, moved: list[str]) -> list[ValidationError]:
        """A stored credential is sent only where it was entered for: when the place it goes to (cloud, login
        or Graph URL, CA file) or who it is for (tenant, client id) changes, it must be entered again, or an
        admin could point the connector at a host of their own and read the write-only secret there."""
        assert row is not None
        current = _slot_row(session, row.id, "current")
        if current is None:
            return []
        what = "client secret" if current.kind == "secret" else "certificate and private key"
        return [
            ValidationError(
                "Credential",
                f"changing the {_joined(moved)} needs the {what} entered again: the stored one is sent only to "
                "the endpoints and app it was entered for",
                key="secret",
                remedy="Enter the client secret (with its expiry date) or the certificate together with the change.",
            )
        ]

    def _forget_staged(self, session: Session, row: ConnectorRow) -> list[str]:
        """Credentials staged for a rotation (or kept from the last one) belonged to the old endpoints."""
        dropped = []
        for slot in ("next", "old"):
            staged = _slot_row(session, row.id, slot)
            if staged is not None:
                session.delete(staged)
                dropped.append(f"{slot}_credential")
        return dropped

    def _store_credential(
        self, session: Session, row: ConnectorRow, change: ConnectorUpdate, now: datetime
    ) -> list[str]:
        session.flush()  # a new connector needs its id before credentials can point at it
        current = session.scalar(
            select(CredentialRow).where(CredentialRow.connector_id == row.id, CredentialRow.slot == "current")
        )
        if change.secret or change.certificate:
            if current is not None:
                session.delete(current)
                session.flush()
            session.add(self.credential_row(row.id, "current", change, now))
            return ["secret" if change.secret else "certificate"]
        if change.secret_expires is not None and current is not None and current.kind == "secret":
            expires = _expiry_datetime(validation.secret_expiry(change.secret_expires, today=now.date()))
            if current.expires_at != expires:
                current.expires_at = expires
                current.warned_days = None
                return ["secret_expires"]
        return []

    def credential_row(self, connector_id: int, slot: str, change: ConnectorUpdate, now: datetime) -> CredentialRow:
        """A new, encrypted credential row (validated already)."""
        if change.certificate is not None:
            cert = change.certificate
            return CredentialRow(
                connector_id=connector_id,
                slot=slot,
                kind="certificate",
                private_key_ciphertext=self.box.encrypt(cert.private_key_pem),
                certificate_pem=cert.certificate_pem,
                thumbprint_sha1=cert.thumbprint_sha1,
                thumbprint_sha256=cert.thumbprint_sha256,
                expires_at=cert.not_after,
                created_at=now,
            )
        assert change.secret is not None and change.secret_expires is not None
        secret = validation.client_secret(change.secret)
        return CredentialRow(
            connector_id=connector_id,
            slot=slot,
            kind="secret",
            secret_ciphertext=self.box.encrypt(secret),
            hint=secret[:3],
            expires_at=_expiry_datetime(validation.secret_expiry(change.secret_expires, today=now.date())),
            created_at=now,
        )

    def delete(self, ref: str | int, *, actor: str = "cli", remote_addr: str | None = None) -> None:
        """Remove a connector and its credentials. Refused while the outbox holds any of its messages (the
        foreign key is RESTRICT: accepted mail must never lose the connector it goes out through)."""
        with self.db.write() as session:
            row = _find(session, ref)
            if row is None:
                raise NotFoundError(f"no connector {ref!r}")
            held = session.scalar(select(func.count()).where(MessageRow.connector_id == row.id))
            if held:
                raise ConflictError(
                    f"connector {row.name} still has {held} message(s) in the outbox",
                    remedy="Wait until they are sent, or cancel and purge them (m365relay queue cancel / purge), "
                    "then delete the connector.",
                )
            session.execute(delete(CredentialRow).where(CredentialRow.connector_id == row.id))
            session.delete(row)
            audit.record(session, actor, "connector.delete", row.name, {}, remote_addr=remote_addr, at=self.clock.now())

    # -- state, driven by the dispatcher ---------------------------------------------------------

    def pause(self, connector_id: int, error: DeliveryError, next_probe_at: datetime, probe_attempts: int = 1) -> None:
        now = self.clock.now()
        with self.db.write() as session:
            row = session.get(ConnectorRow, connector_id)
            if row is None:
                return
            if row.state != "paused":
                row.state_changed_at = now
                audit.record(
                    session,
                    "dispatcher",
                    "connector.paused",
                    row.name,
                    {"error": error.kind, "code": error.code},
                    at=now,
                )
            row.state = "paused"
            row.state_reason = error.message
            row.state_error_kind = error.kind
            row.state_error_code = error.code
            row.state_remedy = error.remedy
            row.next_probe_at = next_probe_at
            row.probe_attempts = probe_attempts

    def note_need(self, connector_id: int, error: DeliveryError) -> None:
        """An active connector whose mail partly waits for something only the admin can give (a permission such
        as Mail.ReadWrite for large messages): the state says so, with the remedy, and nothing is paused."""
        with self.db.write() as session:
            row = session.get(ConnectorRow, connector_id)
            if row is None or row.state != "active" or row.state_error_kind == error.kind:
                return
            row.state_reason, row.state_remedy = error.message, error.remedy
            row.state_error_kind, row.state_error_code = error.kind, error.code
            audit.record(session, "dispatcher", "connector.needs", row.name, {"error": error.kind}, at=self.clock.now())

    def clear_need(self, connector_id: int, kind: str) -> None:
        """What ``note_need`` recorded is no longer true (the waiting mail went)."""
        with self.db.write() as session:
            session.execute(
                update(ConnectorRow)
                .where(ConnectorRow.id == connector_id, ConnectorRow.state == "active")
                .where(ConnectorRow.state_error_kind == kind)
                .values(state_reason=None, state_remedy=None, state_error_kind=None, state_error_code=None)
            )

    def record_consent(
        self, connector_id: int, *, actor: str, detail: dict[str, Any], remote_addr: str | None = None
    ) -> None:
        """Admin consent was granted (the v2.0 adminconsent callback said so): keep the date, audit it."""
        now = self.clock.now()
        with self.db.write() as session:
            row = session.get(ConnectorRow, connector_id)
            if row is None:
                raise NotFoundError(f"no connector {connector_id}")
            row.consent_granted_at = now
            audit.record(session, actor, "connector.consent", row.name, detail, remote_addr=remote_addr, at=now)

    def set_next_probe(self, connector_id: int, when: datetime) -> None:
        with self.db.write() as session:
            session.execute(update(ConnectorRow).where(ConnectorRow.id == connector_id).values(next_probe_at=when))

    def resume(self, connector_id: int, *, actor: str = "dispatcher") -> bool:
        """Mark the connector active. Returns whether it was paused."""
        now = self.clock.now()
        with self.db.write() as session:
            row = session.get(ConnectorRow, connector_id)
            if row is None or row.state == "active":
                return False
            row.state = "active"
            row.state_changed_at = now
            row.state_reason = row.state_error_kind = row.state_error_code = row.state_remedy = None
            row.next_probe_at = None
            row.probe_attempts = 0
            audit.record(session, actor, "connector.resumed", row.name, {}, at=now)
            return True

    def mark_verified(self, credential_id: int) -> None:
        with self.db.write() as session:
            session.execute(
                update(CredentialRow).where(CredentialRow.id == credential_id).values(verified_at=self.clock.now())
            )

    # -- rotation and expiry warnings (the next/old credential slots) -----------------------------

    def stage_next(
        self, ref: str | int, change: ConnectorUpdate, *, actor: str = "cli", remote_addr: str | None = None
    ) -> ConnectorConfig:
        """Store a new secret or certificate in the ``next`` slot, replacing one staged before. The credential
        in use (``current``) is untouched: tokens keep coming from it until ``promote_next``."""
        now = self.clock.now()
        errors = _credential_errors(change, now.date())
        if errors:
            raise ValidationError.combine(errors)
        with self.db.write() as session:
            row = self._row_or_missing(session, ref)
            current = _slot_row(session, row.id, "current")
            if current is not None and self._same_credential(current, change):
                raise ValidationError(
                    "Credential", "is the one already in use; create a new one in Certificates & secrets", key="secret"
                )
            session.execute(
                delete(CredentialRow).where(CredentialRow.connector_id == row.id, CredentialRow.slot == "next")
            )
            session.flush()
            session.add(self.credential_row(row.id, "next", change, now))
            kind = "certificate" if change.certificate is not None else "secret"
            audit.record(
                session, actor, "connector.stage_next", row.name, {"kind": kind}, remote_addr=remote_addr, at=now
            )
            session.flush()
            return self._config(session, row)

    def promote_next(
        self, ref: str | int, *, expected_id: int | None = None, actor: str = "cli", remote_addr: str | None = None
    ) -> ConnectorConfig:
        """In one transaction: current → old, next → current, config_version + 1 (token providers rebuild).
        ``expected_id`` is the staged credential that was verified; if another one was staged since, refuse."""
        now = self.clock.now()
        with self.db.write() as session:
            row = self._row_or_missing(session, ref)
            slots = {
                c.slot: c for c in session.scalars(select(CredentialRow).where(CredentialRow.connector_id == row.id))
            }
            staged = slots.get("next")
            if staged is None:
                raise NotFoundError(
                    f"connector {row.name} has no staged (next) credential",
                    remedy="Stage one: m365relay connector rotate --secret-stdin --secret-expires YYYY-MM-DD",
                )
            if expected_id is not None and staged.id != expected_id:
                raise ConflictError("another credential was staged while this one was verified; verify it again")
            if "old" in slots:
                raise ConflictError(
                    f"connector {row.name} still keeps an old credential from the previous rotation",
                    remedy="Delete it in the Azure portal (Certificates & secrets), then confirm its removal here: "
                    "m365relay connector remove-old",
                )
            if "current" in slots:
                slots["current"].slot = "old"
                session.flush()  # (connector_id, slot) is unique: free "current" before taking it
            staged.slot = "current"
            staged.warned_days = None
            row.config_version = (row.config_version or 0) + 1
            row.updated_at = now
            if row.state == "paused":
                row.next_probe_at = now  # a new credential may be the fix: probe at once
            audit.record(
                session,
                actor,
                "connector.promote_next",
                row.name,
                {"kind": staged.kind},
                remote_addr=remote_addr,
                at=now,
            )
            session.flush()
            return self._config(session, row)

    def remove_old(self, ref: str | int, *, actor: str = "cli", remote_addr: str | None = None) -> ConnectorConfig:
        """The admin confirms the previous credential is gone (deleted in Azure): forget it here too."""
        return self._drop_slot(ref, "old", "connector.remove_old", actor, remote_addr)

    def discard_next(self, ref: str | int, *, actor: str = "cli", remote_addr: str | None = None) -> ConnectorConfig:
        """Drop a staged credential that will not be promoted."""
        return self._drop_slot(ref, "next", "connector.discard_next", actor, remote_addr)

    def mark_warned(self, credential_id: int, days: int) -> bool:
        """Record that the ``days`` expiry threshold was announced (0: expiry itself). True for exactly one
        caller across all processes; False when this or a later threshold was announced already."""
        with self.db.write() as session:
            result = session.execute(
                update(CredentialRow)
                .where(
                    CredentialRow.id == credential_id,
                    or_(CredentialRow.warned_days.is_(None), CredentialRow.warned_days > days),
                )
                .values(warned_days=days)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

    def release_warned(self, credential_id: int, days: int) -> None:
        """Undo ``mark_warned(credential_id, days)`` when the announcement did not get through, so that the
        next pass (in this process or another) announces the threshold again; a later claim is left alone."""
        with self.db.write() as session:
            session.execute(
                update(CredentialRow)
                .where(CredentialRow.id == credential_id, CredentialRow.warned_days == days)
                .values(warned_days=None)
            )

    def _drop_slot(
        self, ref: str | int, slot: str, action: str, actor: str, remote_addr: str | None
    ) -> ConnectorConfig:
        now = self.clock.now()
        with self.db.write() as session:
            row = self._row_or_missing(session, ref)
            found = _slot_row(session, row.id, slot)
            if found is None:
                raise NotFoundError(f"connector {row.name} has no {slot} credential")
            session.delete(found)
            audit.record(session, actor, action, row.name, {"kind": found.kind}, remote_addr=remote_addr, at=now)
            session.flush()
            return self._config(session, row)

    def _row_or_missing(self, session: Session, ref: str | int) -> ConnectorRow:
        row = _find(session, ref)
        if row is None:
            raise NotFoundError(
                f"no connector {ref!r}", remedy="Create it with `m365relay connector set` or on the admin page."
            )
        return row

    def _same_credential(self, current: CredentialRow, change: ConnectorUpdate) -> bool:
        if change.certificate is not None:
            return current.thumbprint_sha256 == change.certificate.thumbprint_sha256
        if change.secret and current.secret_ciphertext:
            return self.box.decrypt(current.secret_ciphertext).reveal() == change.secret.strip()
        return False

    # -- mapping --------------------------------------------------------------------------------

    def _config(self, session: Session, row: ConnectorRow) -> ConnectorConfig:
        creds = {
            c.slot: self._credential(c)
            for c in session.scalars(select(CredentialRow).where(CredentialRow.connector_id == row.id))
        }
        cloud = resolve_cloud(
            row.cloud,
            login_url=row.login_url,
            graph_url=row.graph_url,
            ca_file=Path(row.ca_file) if row.ca_file else None,
            graph_resource=row.graph_resource,
        )
        return ConnectorConfig(
            id=row.id,
            name=row.name,
            client_id=row.client_id,
            tenant_id=row.tenant_id,
            user_name=row.user_name,
            cloud=cloud,
            state=row.state,
            state_reason=row.state_reason,
            state_error_kind=row.state_error_kind,
            state_error_code=row.state_error_code,
            state_remedy=row.state_remedy,
            state_changed_at=row.state_changed_at,
            next_probe_at=row.next_probe_at,
            probe_attempts=row.probe_attempts or 0,
            consent_granted_at=row.consent_granted_at,
            config_version=row.config_version,
            credential=creds.get("current"),
            next_credential=creds.get("next"),
            old_credential=creds.get("old"),
            created_at=row.created_at,
            updated_at=row.updated_at,
            send_as=tuple(row.send_as or ()),
        )

    def _credential(self, row: CredentialRow) -> Credential:
        # A credential that does not decrypt (the key changed) spoils only its own connector: it loads as
        # "unreadable" and sending with it pauses that connector with the remedy, while the rest works on.
        try:
            secret = self.box.decrypt(row.secret_ciphertext) if row.secret_ciphertext else None
            private_key = self.box.decrypt(row.private_key_ciphertext) if row.private_key_ciphertext else None
            unreadable = False
        except SecretKeyError:
            secret = private_key = None
            unreadable = True
        return Credential(
            id=row.id,
            slot=row.slot,
            kind=row.kind,
            secret=secret,
            private_key=private_key,
            unreadable=unreadable,
            certificate_pem=row.certificate_pem,
            thumbprint_sha1=row.thumbprint_sha1,
            thumbprint_sha256=row.thumbprint_sha256,
            hint=row.hint,
            expires_at=row.expires_at,
            created_at=row.created_at,
            verified_at=row.verified_at,
            warned_days=row.warned_days,
        )


def _find(session: Session, ref: str | int) -> ConnectorRow | None:
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        return session.get(ConnectorRow, int(ref))
    return session.scalar(select(ConnectorRow).where(ConnectorRow.name == ref))


def _expiry_datetime(day: date) -> datetime:
    # A secret is treated as gone from the start of its expiry day: warnings err on the early side.
    return datetime.combine(day, time.min, tzinfo=UTC)


def _validated(
    change: ConnectorUpdate, row: ConnectorRow | None, today: date
) -> tuple[dict[str, Any], list[ValidationError]]:
    """Validate every submitted field; fill the rest from the stored row. Returns values and all errors."""
    errors: list[ValidationError] = []
    values: dict[str, Any] = {}
    for key, rule in (
        ("client_id", validation.client_id),
        ("tenant_id", validation.tenant_id),
        ("user_name", validation.user_name),
    ):
        submitted = getattr(change, key)
        if submitted is None and row is not None:
            values[key] = getattr(row, key)
            continue
        values[key] = _collect(errors, key, rule, submitted or "")
    values.update(_validated_cloud(change, row, errors))
    if change.send_as is not None:
        wanted = _collect(errors, "send_as", validation.send_as, change.send_as) or []
        if wanted != list((row.send_as if row is not None else None) or []):  # None and [] both mean "none"
            values["send_as"] = wanted
    if change.secret:
        _collect(errors, "secret", validation.client_secret, change.secret)
    if change.secret or change.secret_expires is not None:
        _collect(errors, "secret_expires", lambda v: validation.secret_expiry(v, today=today), change.secret_expires)
    if change.secret and change.certificate:
        errors.append(ValidationError("Credential", "give a client secret or a certificate, not both", key="secret"))
    return values, errors


# Fields that decide where the credential is sent or whom it identifies (RFC 6749 §2.3: the client
# authenticates to the token endpoint, so the endpoint must be the one the secret was issued for).
CREDENTIAL_BOUND = {
    "client_id": "client id",
    "tenant_id": "tenant id",
    "cloud": "cloud",
    "login_url": "login URL",
    "graph_url": "Graph URL",
    "ca_file": "CA file",
}


def _moved(row: ConnectorRow | None, values: dict[str, Any]) -> list[str]:
    """The credential-bound fields this save changes on an existing connector (their display names)."""
    if row is None:
        return []
    return [
        label
        for key, label in CREDENTIAL_BOUND.items()
        if key in values and (getattr(row, key) or None) != (values[key] or None)
    ]


def _joined(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _validated_cloud(
    change: ConnectorUpdate, row: ConnectorRow | None, errors: list[ValidationError]
) -> dict[str, Any]:
    def pick(key: str, default: Any = None) -> Any:
        submitted = getattr(change, key)
        return submitted if submitted is not None else (getattr(row, key) if row is not None else default)

    cloud, login_url, graph_url = pick("cloud", "global"), pick("login_url"), pick("graph_url")
    resource = pick("graph_resource")
    try:
        ca_path = validation.ca_file(pick("ca_file"))
        resolved = resolve_cloud(
            cloud,
            login_url=login_url or None,
            graph_url=graph_url or None,
            ca_file=ca_path,
            graph_resource=resource or None,
        )
        if resolved.name == "custom":
            validation.endpoint_host("login URL", resolved.login_url)
            validation.endpoint_host("Graph URL", resolved.graph_url)
    except ValidationError as exc:
        exc.key = FIELD_KEYS.get(exc.field, "ca_file")
        errors.append(exc)
        return {"cloud": cloud}
    custom = resolved.name == "custom"
    return {
        "cloud": cloud,
        "login_url": resolved.login_url if custom else None,
        "graph_url": resolved.graph_url if custom else None,
        # Stored only when it differs from the default, so "not set" and "the default" read the same.
        "graph_resource": resolved.resource if custom and resolved.resource != DEFAULT_GRAPH_RESOURCE else None,
        "ca_file": str(ca_path) if (custom and ca_path) else None,
    }


def _collect(errors: list[ValidationError], key: str, rule: Callable[[Any], T], value: Any) -> T | None:
    try:
        return rule(value)
    except ValidationError as exc:
        exc.key = key
        errors.append(exc)
        return None


def _slot_row(session: Session, connector_id: int, slot: str) -> CredentialRow | None:
    return session.scalar(
        select(CredentialRow).where(CredentialRow.connector_id == connector_id, CredentialRow.slot == slot)
    )


def _credential_errors(change: ConnectorUpdate, today: date) -> list[ValidationError]:
    """A credential on its own (rotation): exactly one of secret + expiry date, or certificate."""
    errors: list[ValidationError] = []
    if not change.secret and change.certificate is None:
        errors.append(
            ValidationError("Credential", "give a client secret (with its expiry date) or a certificate", key="secret")
        )
    if change.secret:
        _collect(errors, "secret", validation.client_secret, change.secret)
        _collect(errors, "secret_expires", lambda v: validation.secret_expiry(v, today=today), change.secret_expires)
    if change.secret and change.certificate is not None:
        errors.append(ValidationError("Credential", "give a client secret or a certificate, not both", key="secret"))
    return errors
