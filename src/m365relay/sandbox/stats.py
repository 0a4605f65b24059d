"""Counters per endpoint, throttling reasons and the peak concurrency seen per app+mailbox."""

from __future__ import annotations

from collections import Counter
from typing import Any

ENDPOINTS = (
    "discovery",
    "jwks",
    "token",
    "adminconsent",
    "sendMail",
    "createDraft",
    "addAttachment",
    "createUploadSession",
    "uploadChunk",
    "cancelUpload",
    "sendDraft",
    "listMessages",
    "getMessage",
    "listUsers",
    "graph_other",
)
THROTTLE_REASONS = ("concurrency", "request_budget", "recipient_budget", "injected")


class Stats:
    """Plain counters; the event loop is single-threaded so no locking is needed."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.token_success = 0
        self.token_failures: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.responses_dropped: Counter[str] = Counter()  # `drop` faults: carried out, answer lost
        self.graph_errors: Counter[str] = Counter()
        self.max_in_flight: dict[str, int] = {}

    def count(self, endpoint: str) -> None:
        self.calls[endpoint] += 1

    def token_failed(self, code: int) -> None:
        self.token_failures[f"AADSTS{code}"] += 1

    def record_in_flight(self, key: str, value: int) -> None:
        if value > self.max_in_flight.get(key, 0):
            self.max_in_flight[key] = value

    def to_dict(self) -> dict[str, Any]:
        throttled = {reason: self.throttled[reason] for reason in THROTTLE_REASONS}
        return {
            "calls": {name: self.calls[name] for name in ENDPOINTS} | dict(self.calls),
            **{name: self.calls[name] for name in ENDPOINTS},
            "token_success": self.token_success,
            "token_failures": dict(self.token_failures),
            "throttled_429": {"total": sum(throttled.values()), **throttled},
            "faults_injected": dict(self.faults),
            "responses_dropped": dict(self.responses_dropped),
            "graph_errors": dict(self.graph_errors),
            "max_in_flight": dict(self.max_in_flight),
        }
