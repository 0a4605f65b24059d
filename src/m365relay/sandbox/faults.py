"""Fault injection per stage: `PUT /_sandbox/faults` decides which calls fail and how.

Kinds: `status` answers an error and changes nothing; `reset` drops the connection before the call is
carried out; `slow` delays it; `drop` carries the call out (a send is delivered and filed in Sent Items)
and then resets the connection instead of answering — an in-doubt send, as a client sees it when the
answer is lost after Exchange accepted the request.

A stage takes one rule or a list of rules, tried in order (`"sendMail": [{"kind": "drop", "probability":
0.02}, {"status": 503, "probability": 0.05}]`). A rule is either random (`probability`, from a seedable
RNG) or deterministic (`count`: the next N calls of that stage fail, then the rule is spent). Faults are
decided before any state change, so a faulted sendMail delivers nothing — exactly what a client sees when
Graph answers 503 (only `drop` lets the call happen).
A rule with `mailbox` applies only to Graph calls for that mailbox (`/users/{mailbox}/…`), as Exchange
throttles one mailbox of an app while its others go on (PROTOCOL.md §7, §15).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

# Which stages a call belongs to, most specific first; a rule on any of them applies.
STAGES: dict[str, tuple[str, ...]] = {
    "discovery": ("discovery",),
    "jwks": ("jwks", "discovery"),
    "token": ("token",),
    "adminconsent": ("adminconsent",),
    "sendMail": ("sendMail", "graph"),
    "createDraft": ("createDraft", "draft", "graph"),
    "addAttachment": ("addAttachment", "draft", "graph"),
    "sendDraft": ("sendDraft", "draft", "graph"),
    "listMessages": ("listMessages", "read", "graph"),
    "getMessage": ("getMessage", "read", "graph"),
    "listUsers": ("listUsers", "graph"),
    "createUploadSession": ("createUploadSession", "upload", "graph"),
    "uploadChunk": ("uploadChunk", "upload"),
    "cancelUpload": ("cancelUpload", "upload"),
}
KINDS = ("status", "reset", "slow", "drop")


@dataclass(frozen=True)
class FaultRule:
    kind: str = "status"
    status: int = 503
    probability: float = 1.0
    count: int | None = None
    retry_after: str | None = None
    delay_ms: float = 0.0
    code: str | None = None
    message: str | None = None
    mailbox: str | None = None  # only calls for this mailbox (lower case); None: every call of the stage

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultRule:
        kind = str(data.get("kind", "status"))
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {kind!r}")
        status = int(data.get("status", 503))
        if kind == "status" and not 400 <= status <= 599:
            raise ValueError("fault status must be an HTTP error status (400-599)")
        probability = float(data.get("probability", 1.0))
        if not 0.0 <= probability <= 1.0:
            raise ValueError("fault probability must be between 0 and 1")
        count = data.get("count")
        retry_after = data.get("retry_after")
        if retry_after is None and status == 429 and kind == "status":
            retry_after = "1"  # Graph always sends Retry-After with 429
        return cls(
            kind=kind,
            status=status,
            probability=probability,
            count=None if count is None else int(count),
            retry_after=None if retry_after is None else str(retry_after),
            delay_ms=float(data.get("delay_ms", data.get("ms", 0.0))),
            code=data.get("code"),
            message=data.get("message"),
            mailbox=str(data["mailbox"]).lower() if data.get("mailbox") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "probability": self.probability}
        if self.kind == "status":
            out["status"] = self.status
        if self.count is not None:
            out["count"] = self.count
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.kind == "slow":
            out["delay_ms"] = self.delay_ms
        if self.code:
            out["code"] = self.code
        if self.message:
            out["message"] = self.message
        if self.mailbox:
            out["mailbox"] = self.mailbox
        return out


class FaultPlan:
    """The rules in force plus the RNG that draws the random ones."""

    def __init__(self) -> None:
        self.rules: dict[str, list[FaultRule]] = {}
        self.seed: int | None = None
        self._rng = random.Random()  # noqa: S311 - fault dice, not cryptography

    def configure(self, data: dict[str, Any]) -> None:
        """Replace every rule; `{"seed": N}` makes the random draws repeatable."""
        rules: dict[str, list[FaultRule]] = {}
        known = {stage for stages in STAGES.values() for stage in stages}
        for name, value in data.items():
            if name == "seed":
                continue
            if name not in known:
                raise ValueError(f"unknown fault stage {name!r}; one of {sorted(known)}")
            if value is None:
                continue
            items = value if isinstance(value, list) else [value]
            if not items or not all(isinstance(item, dict) for item in items):
                raise ValueError(f"fault {name!r} must be an object or a list of objects")
            rules[name] = [FaultRule.from_dict(item) for item in items]
        self.rules = rules
        self.seed = None if data.get("seed") is None else int(data["seed"])
        self._rng = random.Random(self.seed)  # noqa: S311

    def clear(self) -> None:
        self.configure({})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: rules[0].to_dict() if len(rules) == 1 else [r.to_dict() for r in rules]
            for name, rules in self.rules.items()
        }
        if self.seed is not None:
            out["seed"] = self.seed
        return out

    def decide(self, endpoint: str, mailbox: str | None = None) -> FaultRule | None:
        """The fault to inject into this call of `endpoint` (for `mailbox`), if any (consumes a `count`)."""
        if not self.rules:
            return None
        for stage in STAGES.get(endpoint, (endpoint,)):
            rules = self.rules.get(stage, [])
            for index, rule in enumerate(rules):
                if rule.mailbox is not None and rule.mailbox != (mailbox or "").lower():
                    continue
                if rule.count is not None:
                    if rule.count <= 0:
                        continue
                    rules[index] = replace(rule, count=rule.count - 1)
                    return rule
                if self._rng.random() < rule.probability:
                    return rule
        return None
