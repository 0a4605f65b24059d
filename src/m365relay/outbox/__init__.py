"""The durable outbox: messages the relay has accepted and owns until they are sent, failed or cancelled."""

from __future__ import annotations

from .records import (
    CANCELLED,
    DEFERRED,
    FAILED,
    FINAL,
    PENDING,
    QUEUED,
    SENDING,
    SENT,
    STATUSES,
    Claimed,
    EnqueueResult,
    Event,
    MessageRecord,
    QueueStats,
)
from .store import Outbox

__all__ = [
    "CANCELLED",
    "DEFERRED",
    "FAILED",
    "FINAL",
    "PENDING",
    "QUEUED",
    "SENDING",
    "SENT",
    "STATUSES",
    "Claimed",
    "EnqueueResult",
    "Event",
    "MessageRecord",
    "Outbox",
    "QueueStats",
]
