"""One frozen settings object, read once from the environment (prefix ``M365RELAY_``) and an optional
TOML file, validated, and passed to whatever needs it. Nothing reads ``os.environ`` after this.

Precedence, highest first: explicit keyword arguments (the CLI's flags), environment variables, the TOML
file named by ``--config`` or ``M365RELAY_CONFIG``, the defaults below. Every setting is documented in
``docs/settings.md``; a test keeps the two in step.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .errors import ValidationError

MB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of m365relay. Durations are seconds unless the name says otherwise."""

    model_config = SettingsConfigDict(env_prefix="M365RELAY_", frozen=True, extra="forbid")

    # -- storage ---------------------------------------------------------------------------------
    home: Path = Field(Path(".m365relay"), description="Data directory: SQLite database, key file, TLS files.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database; default: SQLite file m365relay.db in home. "
        "Use postgresql+psycopg://… to run several processes on several hosts.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key that encrypts client secrets and private keys at rest (urlsafe base64, 32 bytes). "
        "Default: the key file home/secret.key, created with mode 0600 on first use.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per event. json: one JSON object per line, for log shipping."
    )

    # -- HTTP: API, admin UI, health -------------------------------------------------------------
    http_host: str = Field("127.0.0.1", description="Address the HTTP server (API, admin UI) listens on.")
    http_port: int = Field(8025, description="Port of the HTTP server.")
    public_base_url: str | None = Field(
        None,
        description="The URL administrators and Azure reach this server at, e.g. https://relay.contoso.com. "
        "The admin-consent redirect URL is derived from it. Default: http://{http_host}:{http_port}.",
    )
    api_rate_limit: float = Field(50.0, description="Requests per second each API key may make (burst twice that).")
    api_max_body_bytes: int = Field(50 * MB, description="Largest request body the API accepts.")
    admin_session_idle_minutes: int = Field(30, description="Admin sessions end after this long without a request.")
    admin_login_attempts: int = Field(5, description="Failed sign-ins per address per 15 minutes before a lockout.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For/-Proto headers are "
        "believed. Empty (default): the headers are ignored and the client is the socket's peer.",
    )

    # -- SMTP relay ------------------------------------------------------------------------------
    smtp_host: str = Field("127.0.0.1", description="Address the SMTP relay listens on.")
    smtp_port: int = Field(2525, description="Port of the SMTP relay (587 with STARTTLS in production).")
    smtp_hostname: str | None = Field(None, description="Name in the SMTP greeting and Received headers.")
    smtp_tls_cert: Path | None = Field(
        None, description="PEM certificate for STARTTLS; default: a self-signed one in home."
    )
    smtp_tls_key: Path | None = Field(None, description="PEM private key for STARTTLS.")
    smtp_auth_require_tls: bool = Field(True, description="Refuse AUTH before STARTTLS (except loopback, below).")
    smtp_auth_allow_loopback_plain: bool = Field(
        True, description="Allow AUTH without TLS from 127.0.0.1/::1 (local applications)."
    )
    smtp_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Client networks (CIDR) that may relay without AUTH. Empty: AUTH is always required.",
    )
    smtp_max_message_bytes: int = Field(35 * MB, description="Largest message accepted (announced in EHLO SIZE).")
    smtp_max_recipients: int = Field(500, description="Most RCPT TO per message (Exchange's limit is 500).")
    smtp_from_policy: Literal["rewrite", "enforce"] = Field(
        "rewrite",
        description="rewrite: From becomes the system mailbox and the original goes to Reply-To. "
        "enforce: a From the mailbox may not send as is refused with 550 5.7.1.",
    )
    smtp_auth_failures_per_minute: int = Field(5, description="Failed AUTH attempts per client address per minute.")
    smtp_max_connections: int = Field(
        200, ge=0, description="Open SMTP connections the relay accepts in total (421 4.7.0 beyond); 0: no limit."
    )
    smtp_max_connections_per_client: int = Field(
        20, ge=0, description="Open SMTP connections per client address (IPv6: per /64); 0: no limit."
    )
    smtp_command_timeout: float = Field(
        300.0, gt=0, description="Seconds the relay waits for the next command (RFC 5321 §4.5.3.2.7) or data block."
    )
    smtp_idle_command_resets: int = Field(
        10, ge=0, description="NOOP/RSET/HELP/VRFY/EXPN in a row that still restart the command timeout."
    )
    smtp_max_commands_without_mail: int = Field(
        100, ge=0, description="Commands (RCPT not counted) a session may send between two messages; 0: no limit."
    )
    smtp_min_data_rate: int = Field(
        500, ge=0, description="Bytes per second DATA must keep up after its first smtp_command_timeout seconds."
    )
    smtp_data_timeout: float = Field(1800.0, gt=0, description="Seconds the whole DATA phase of one message may take.")

    # -- dispatch --------------------------------------------------------------------------------
    max_in_flight_per_mailbox: int = Field(4, description="Concurrent Graph requests per connector and mailbox.")
    request_budget: int = Field(10_000, description="Graph requests per mailbox per request_budget_window.")
    request_budget_window: int = Field(600, description="Seconds of the rolling request budget window.")
    recipient_budget: int = Field(10_000, description="Recipients per mailbox per rolling 24 hours.")
    recipient_budget_window: int = Field(86_400, description="Seconds of the rolling recipient budget window.")
    max_queue_lifetime: int = Field(
        5 * 86_400, description="Seconds a message may wait before it fails (Postfix maximal_queue_lifetime)."
    )
    retention_days: int = Field(
        30,
        ge=0,
        description="Days sent, failed and cancelled mail (with its body and events) is kept; 0 keeps it for good.",
    )
    retry_base_seconds: float = Field(5.0, description="First retry delay; doubles each attempt, with jitter.")
    retry_max_seconds: float = Field(900.0, description="Longest delay between two attempts.")
    lease_seconds: int = Field(120, description="How long a worker owns a claimed message before others may take it.")
    worker_concurrency: int = Field(64, description="Most messages one worker process sends at once.")
    poll_interval: float = Field(0.5, description="Seconds between queue polls when idle.")
    probe_base_seconds: float = Field(30.0, description="First delay before a paused connector is probed again.")
    probe_max_seconds: float = Field(900.0, description="Longest delay between probes of a paused connector.")
    graph_timeout: float = Field(60.0, description="Seconds before a Graph request is abandoned and retried.")
    reconcile_settle_seconds: float = Field(
        120.0,
        ge=0,
        description="Seconds after an in-doubt send before a message not found in Sent Items is sent again "
        "(Exchange files the copy asynchronously). Needs Mail.ReadBasic.All; see docs/delivery.md.",
    )
    reconcile_prefer_mime: bool = Field(
        True,
        description="With a mailbox read permission, send saveToSentItems=false mail as MIME too, so that a "
        "send whose outcome is unknown can be checked in Sent Items instead of repeated.",
    )
    doctor_probe_mailbox: str | None = Field(
        None,
        description="A mailbox the app should NOT be able to read; the doctor expects 403 there to confirm the "
        "read permission is scoped. Default: the tenant's first other user (with User.Read.All), else skipped.",
    )

    # -- backpressure ----------------------------------------------------------------------------
    max_queue_depth: int = Field(
        1_000_000, description="Queued messages beyond which ingress answers 451/503 with Retry-After."
    )
    max_queue_age: int = Field(
        6 * 3600, description="Age in seconds of the oldest queued message beyond which ingress pushes back."
    )

    # -- bounces and suppression (docs/delivery.md) -----------------------------------------------
    suppression_days: int = Field(
        30, ge=0, description="Days a hard-bounced address stays suppressed per connector; 0 never suppresses."
    )
    suppression_statuses: list[str] = Field(
        default_factory=lambda: ["5.1", "5.2.1", "5.4.1"],
        description="Status codes or classes (prefixes) that count as hard bounces; 5.7.708/5.7.750 never do.",
    )
    inbox_poll_seconds: float = Field(
        15.0, gt=0, description="Seconds between reads of each sending mailbox's Inbox (needs Mail.Read)."
    )

    # -- credential lifecycle --------------------------------------------------------------------
    expiry_warning_days: list[int] = Field(
        default_factory=lambda: [30, 14, 7, 3, 1], description="Days before expiry at which to warn."
    )
    alert_emails: list[str] = Field(default_factory=list, description="Addresses that receive expiry warnings.")
    alert_webhook_url: str | None = Field(None, description="URL that receives expiry warnings as JSON POSTs.")

    # -- events and webhooks -----------------------------------------------------------------------
    webhook_timeout: float = Field(15.0, description="Seconds a webhook endpoint has to answer 2xx.")
    webhook_retry_base_seconds: float = Field(5.0, description="First webhook retry delay; doubles each attempt.")
    webhook_retry_max_seconds: float = Field(21_600.0, description="Longest delay between two webhook attempts.")
    webhook_max_age: int = Field(259_200, description="Seconds a webhook delivery is retried before it is given up.")
    webhook_disable_after: int = Field(
        259_200, description="Seconds of failures without a success after which an endpoint is disabled (alerted)."
    )
    webhook_poll_interval: float = Field(1.0, description="Seconds between webhook queue polls when idle.")
    webhook_concurrency: int = Field(16, description="Most webhook requests one process has in flight.")

    @field_validator("home")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, values: list[str]) -> list[str]:
        """Each entry an address or network: a typo must not silently trust nobody (or, with "*", everybody)."""
        import ipaddress

        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
        return values

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        """Checked at start, not when the first alert is due; the message never repeats the URL (a webhook
        URL is a credential)."""
        if not value:
            return None
        import httpx

        try:
            url = httpx.URL(value)
        except httpx.InvalidURL:
            raise ValueError("is not a valid URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # load_settings merges file, environment and flags itself, so precedence is explicit in one place.
        return (init_settings,)

    # -- derived values --------------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'm365relay.db').resolve()}"

    @property
    def effective_public_base_url(self) -> str:
        return (self.public_base_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @property
    def max_queue_lifetime_delta(self) -> timedelta:
        return timedelta(seconds=self.max_queue_lifetime)


def load_settings(config_file: Path | None = None, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings: keyword overrides > environment > TOML file > defaults.

    ``environ`` replaces ``os.environ`` (tests pass their own); the TOML file may also be named by
    ``M365RELAY_CONFIG``. Unknown keys in the file are an error, so a typo does not silently do nothing.
    """
    import os

    env = dict(os.environ if environ is None else environ)
    path = config_file or (Path(env["M365RELAY_CONFIG"]) if env.get("M365RELAY_CONFIG") else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ValidationError("--config", f"settings file {str(path)!r} does not exist")
        try:
            file_values = TomlConfigSettingsSource(Settings, toml_file=path)()
        except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
            raise ValidationError("--config", f"{str(path)!r} is not valid TOML: {exc}") from exc
    env_values = {
        key[len("M365RELAY_") :].lower(): value
        for key, value in env.items()
        if key.startswith("M365RELAY_") and key not in {"M365RELAY_CONFIG", "M365RELAY_TEST_DATABASE_URL"}
    }
    merged: dict[str, Any] = {**file_values, **_parse_env(env_values), **overrides}
    try:
        return Settings(**merged)
    except PydanticValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ValidationError(
            "settings", problems, remedy="Check M365RELAY_* variables and the settings file (docs/settings.md)."
        ) from exc


def _parse_env(values: dict[str, str]) -> dict[str, Any]:
    """Environment values are strings; lists are comma-separated (or JSON)."""
    import json

    out: dict[str, Any] = {}
    list_fields = {name for name, f in Settings.model_fields.items() if "list" in str(f.annotation)}
    for key, raw in values.items():
        text = raw.strip()
        if key in list_fields:
            out[key] = json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        else:
            out[key] = raw
    return out
