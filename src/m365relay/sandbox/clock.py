"""The sandbox clock: wall time plus an offset that tests move through `/_sandbox/clock`.

Everything time-based (token `exp`/`nbf`, secret expiry, rolling budgets, upload session expiry)
reads this clock, so a test can jump 24 hours ahead without sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """Wall time shifted by `offset_seconds` (may be negative)."""

    def __init__(self, offset_seconds: float = 0.0) -> None:
        self.offset_seconds = offset_seconds

    def now(self) -> float:
        """Seconds since the epoch, as the sandbox sees them."""
        return time.time() + self.offset_seconds

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=UTC)


def iso_z(moment: datetime) -> str:
    """ISO-8601 in UTC with a `Z` suffix and no sub-second part, as Graph and Entra print dates."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; a naive one is taken as UTC."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
