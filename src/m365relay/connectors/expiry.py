"""How close a connector's credential is to expiring, in one place, for the expiry watch, the admin banner,
/readyz and /metrics alike. Client secrets last at most 24 months (PROTOCOL.md §10) and fail with
AADSTS7000222 once expired; nothing in Microsoft 365 warns anyone first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from .model import ConnectorConfig, Credential

Level = Literal["ok", "notice", "warning", "critical", "expired", "none"]
WARN_DAYS = 30  # amber from here
CRITICAL_DAYS = 7  # red from here


@dataclass(frozen=True)
class ExpiryState:
    level: Level
    days_left: int | None
    seconds_left: float | None
    expires_at: datetime | None
    credential: Credential | None
    message: str

    @property
    def alarming(self) -> bool:
        return self.level in ("warning", "critical", "expired")


def expiry_state(connector: ConnectorConfig, now: datetime) -> ExpiryState:
    """The state of the credential in use (``current``). A staged ``next`` credential is mentioned."""
    cred = connector.credential
    if cred is None:
        return ExpiryState("none", None, None, None, None, "no client secret or certificate is configured")
    if cred.expires_at is None:
        return ExpiryState("ok", None, None, None, cred, "the credential's expiry date is not known")
    seconds = (cred.expires_at - now).total_seconds()
    days = (cred.expires_at.date() - now.date()).days
    what = "client secret" if cred.kind == "secret" else "certificate"
    when = cred.expires_at.date().isoformat()
    staged = (
        " A new credential is staged; promote it (m365relay connector rotate)." if connector.next_credential else ""
    )
    if seconds <= 0:
        return ExpiryState(
            "expired", days, seconds, cred.expires_at, cred,
            f"The {what} of connector {connector.name} expired on {when}; mail cannot be sent until a new "
            f"one is stored.{staged}",
        )  # fmt: skip
    level: Level = "critical" if days <= CRITICAL_DAYS else "warning" if days <= WARN_DAYS else "ok"
    message = f"The {what} of connector {connector.name} expires on {when} ({days} days)."
    if level != "ok":
        message += (
            " Create a new client secret in the Azure portal (App registrations > the app > Certificates & "
            "secrets), then store it before the old one expires." + staged
        )
    return ExpiryState(level, days, seconds, cred.expires_at, cred, message)
