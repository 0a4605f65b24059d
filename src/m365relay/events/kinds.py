"""The message events a webhook endpoint can subscribe to, and which outbox event kinds they come from.

The outbox's event log (``message_events``) has its own, finer vocabulary; only these kinds leave the relay.
``claimed``, ``released``, ``retry`` and ``cancelled`` are bookkeeping an application has no use for.
"""

from __future__ import annotations

from ..errors import ValidationError

EVENT_TYPES: tuple[str, ...] = ("accepted", "sent", "deferred", "failed", "bounced", "delayed", "suppressed")

# message_events.kind → the webhook event it is delivered as.
FROM_OUTBOX_KIND: dict[str, str] = {
    "queued": "accepted",
    "sent": "sent",
    "deferred": "deferred",
    "failed": "failed",
    "expired": "failed",
    "bounced": "bounced",
    "delayed": "delayed",
    "suppressed": "suppressed",
}

# Events whose ``detail`` is a JSON object about one recipient (written by the bounce intake).
PER_RECIPIENT: frozenset[str] = frozenset({"bounced", "delayed", "suppressed"})

TEST_EVENT = "test"  # what ``webhook test`` sends; never stored, never subscribed to


def parse_events(values: list[str] | tuple[str, ...] | str | None) -> tuple[str, ...]:
    """``--events sent,bounced`` (or repeated, or a list) → the canonical tuple; ``all``/empty: every type.
    ``message.sent`` is accepted too, since that is how the payload's ``type`` names it."""
    if values is None:
        return EVENT_TYPES
    items = [values] if isinstance(values, str) else list(values)
    names = [part.strip().lower().removeprefix("message.") for item in items for part in item.split(",")]
    names = [n for n in names if n]
    if not names or names == ["all"]:
        return EVENT_TYPES
    unknown = sorted(set(names) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(
            "--events", f"unknown event(s) {', '.join(unknown)}; use {', '.join(EVENT_TYPES)} or all", key="events"
        )
    return tuple(t for t in EVENT_TYPES if t in names)


def event_bit(event_type: str) -> int:
    return 1 << EVENT_TYPES.index(event_type)


def encode_events(events: tuple[str, ...]) -> int:
    """The stored form: one bit per type, so the fan-out statement tests membership with one ``&``."""
    mask = 0
    for event_type in events:
        mask |= event_bit(event_type)
    return mask


def decode_events(mask: int) -> tuple[str, ...]:
    return tuple(t for t in EVENT_TYPES if mask & event_bit(t))
