"""The one schema, for SQLite and PostgreSQL alike. Alembic migrations in ``migrations/`` create it; a
test checks that they produce exactly these models.

Times are stored as naive UTC and handed out as aware UTC (``UTCDateTime``), so comparisons in SQL are
plain column comparisons on both backends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


# -- connectors -----------------------------------------------------------------------------------


class ConnectorRow(Base):
    """The eMail (SMTP) connector screen of the manual: one app registration + one system mailbox."""

    __tablename__ = "connectors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(36))
    tenant_id: Mapped[str] = mapped_column(String(255))
    user_name: Mapped[str] = mapped_column(String(320))
    send_as: Mapped[list[str] | None] = mapped_column(JSON)  # further sending mailboxes (PROTOCOL.md §15)
    cloud: Mapped[str] = mapped_column(String(16))
    login_url: Mapped[str | None] = mapped_column(String(2048))
    graph_url: Mapped[str | None] = mapped_column(String(2048))
    graph_resource: Mapped[str | None] = mapped_column(String(2048))  # custom clouds (PROTOCOL.md §14)
    ca_file: Mapped[str | None] = mapped_column(String(4096))
    # active | paused; a paused connector keeps its mail queued and is probed until fixed.
    state: Mapped[str] = mapped_column(String(16), default="active")
    state_reason: Mapped[str | None] = mapped_column(Text)
    state_error_kind: Mapped[str | None] = mapped_column(String(64))
    state_error_code: Mapped[str | None] = mapped_column(String(64))
    state_remedy: Mapped[str | None] = mapped_column(Text)
    state_changed_at: Mapped[datetime | None]
    next_probe_at: Mapped[datetime | None]
    probe_attempts: Mapped[int] = mapped_column(Integer, default=0)
    consent_granted_at: Mapped[datetime | None]
    # Bumped on every change of what tokens depend on; token providers rebuild when it moves.
    config_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CredentialRow(Base):
    """A client secret or certificate of a connector. ``slot`` is current, next (rotation) or old."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("connector_id", "slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    slot: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16))  # secret | certificate
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    private_key_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    certificate_pem: Mapped[str | None] = mapped_column(Text)  # public; safe to show
    thumbprint_sha1: Mapped[str | None] = mapped_column(String(40))
    thumbprint_sha256: Mapped[str | None] = mapped_column(String(64))
    hint: Mapped[str | None] = mapped_column(String(8))  # first 3 characters of a secret, as Azure shows
    expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    verified_at: Mapped[datetime | None]
    warned_days: Mapped[int | None] = mapped_column(Integer)  # smallest expiry threshold already announced


# -- outbox ---------------------------------------------------------------------------------------


class MessageRow(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("connector_id", "idempotency_scope", "idempotency_key"),
        Index("ix_messages_due", "status", "next_attempt_at"),
        Index("ix_messages_connector_due", "connector_id", "status", "next_attempt_at"),
        # (created_at, connector_id) and (status, updated_at, connector_id) cover the dashboard's counts of mail
        # accepted / sent / failed in an hour per connector (activity.py) without reading the rows.
        Index("ix_messages_created", "created_at", "connector_id"),
        Index("ix_messages_outcome", "status", "updated_at", "connector_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="RESTRICT"))
    # queued | sending | deferred | sent | failed | cancelled
    status: Mapped[str] = mapped_column(String(16))
    envelope_from: Mapped[str | None] = mapped_column(String(320))
    recipients: Mapped[list[str]]
    recipient_count: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str | None] = mapped_column(String(998))
    header_from: Mapped[str | None] = mapped_column(String(998))
    message_id: Mapped[str | None] = mapped_column(String(998))
    size: Mapped[int] = mapped_column(BigInteger)
    save_to_sent_items: Mapped[bool] = mapped_column(Boolean, default=True)
    source: Mapped[str] = mapped_column(String(16))  # smtp | api | library | cli
    source_detail: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # Who the key belongs to ("api-key:7"); '' for the relay's own sends. Keys are unique per scope only.
    idempotency_scope: Mapped[str] = mapped_column(String(64), default="", server_default="")
    content_hash: Mapped[str | None] = mapped_column(String(64))
    body_sha256: Mapped[str | None] = mapped_column(String(64))  # of the stored bytes, checked before sending
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_error_kind: Mapped[str | None] = mapped_column(String(64))
    last_error_code: Mapped[str | None] = mapped_column(String(64))
    last_error_status: Mapped[int | None] = mapped_column(Integer)
    last_error_request_id: Mapped[str | None] = mapped_column(String(64))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    last_error_remedy: Mapped[str | None] = mapped_column(Text)
    graph_request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # In-doubt sends (outbox/doubt.py): when set, the last attempt's outcome is unknown and the message must be
    # looked up in Sent Items before it is sent again; the draft of a large message's current attempt.
    doubt_since: Mapped[datetime | None]
    draft_id: Mapped[str | None] = mapped_column(String(512))
    draft_message_id: Mapped[str | None] = mapped_column(String(998))


class MessageChunkRow(Base):
    """The RFC 5322 bytes of a message, in chunks, so large messages stream in and out."""

    __tablename__ = "message_chunks"

    message_id: Mapped[int] = mapped_column(BigId, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MessageEventRow(Base):
    __tablename__ = "message_events"
    __table_args__ = (Index("ix_message_events_kind_at", "kind", "at"),)  # deferrals per hour (activity.py)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[int] = mapped_column(BigId, ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(24))
    detail: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))


class ActivityHourRow(Base):
    """What each connector did in one closed UTC hour, counted once from the outbox and kept: the dashboard's
    24-hour and 30-day charts read these instead of counting millions of messages on every view."""

    __tablename__ = "activity_hours"

    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # Unix time // 3600
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    deferred: Mapped[int] = mapped_column(Integer, default=0)


class BudgetBucketRow(Base):
    """Requests and recipients per connector, mailbox and minute; rolling budgets sum the buckets in the window."""

    __tablename__ = "budget_buckets"

    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"), primary_key=True)
    # "" is the User Name mailbox; a send-as mailbox has its own budgets (PROTOCOL.md §7, §15)
    mailbox: Mapped[str] = mapped_column(String(320), primary_key=True, default="", server_default="")
    minute: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # Unix time // 60
    requests: Mapped[int] = mapped_column(Integer, default=0)
    recipients: Mapped[int] = mapped_column(Integer, default=0)


# -- access: relay users, API keys, admins ----------------------------------------------------------


class RelayUserRow(Base):
    __tablename__ = "relay_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    allowed_from: Mapped[list[str]]
    connector_id: Mapped[int | None] = mapped_column(ForeignKey("connectors.id", ondelete="SET NULL"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scopes: Mapped[list[str]]
    connector_id: Mapped[int | None] = mapped_column(ForeignKey("connectors.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AdminUserRow(Base):
    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]


class AdminSessionRow(Base):
    __tablename__ = "admin_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the cookie value
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[dict[str, Any]]
    remote_addr: Mapped[str | None] = mapped_column(String(64))


# -- delivery truth: recipients' states, suppressions, mailbox reading ------------------------------


class MessageRecipientRow(Base):
    """A recipient whose state differs from its message's: bounced, delayed or suppressed (others are ``sent``)."""

    __tablename__ = "message_recipients"

    message_id: Mapped[int] = mapped_column(BigId, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    address: Mapped[str] = mapped_column(String(320), primary_key=True)  # lower-case
    state: Mapped[str] = mapped_column(String(16))  # bounced | delayed | suppressed
    status: Mapped[str | None] = mapped_column(String(16))  # RFC 3463, e.g. 5.1.10
    diagnostic: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime]  # the report's date (or when it was suppressed)


class SuppressionRow(Base):
    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("connector_id", "address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320))  # lower-case
    status: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    bounced_at: Mapped[datetime]
    message_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("messages.id", ondelete="SET NULL"))
    source: Mapped[str] = mapped_column(String(16))  # bounce | manual
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]


class MailboxCursorRow(Base):
    """Where the Inbox reading of one connector's mailbox stands; its lease keeps other processes out."""

    __tablename__ = "mailbox_cursors"

    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"), primary_key=True)
    delta_link: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_read_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    reports: Mapped[int] = mapped_column(Integer, default=0)


# -- events and webhooks ------------------------------------------------------------------------------


class WebhookEndpointRow(Base):
    """A URL that receives one connector's message events, signed per the Standard Webhooks specification."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connector_id: Mapped[int] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    event_mask: Mapped[int] = mapped_column(Integer)  # one bit per event type (events/kinds.py)
    secret_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Events from this moment on are delivered (a few seconds after adding or re-enabling: see events/fanout.py).
    active_from: Mapped[datetime]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    failing_since: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookDeliveryRow(Base):
    """One event for one endpoint: the durable queue the delivery loop claims from. The message's facts are
    copied in when the event happens, so a purged message does not take its undelivered events with it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    # The webhook-id header, given at the first claim (off the enqueue path); the same on every retry.
    webhook_id: Mapped[str | None] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(24))
    occurred_at: Mapped[datetime]
    message_ref: Mapped[int | None] = mapped_column(BigInteger)  # messages.id; no foreign key (see above)
    rfc_message_id: Mapped[str | None] = mapped_column(String(998))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    connector_name: Mapped[str] = mapped_column(String(64))
    recipients: Mapped[list[str]]
    detail: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
