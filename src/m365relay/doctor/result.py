"""What one doctor check found, in a form the CLI, the JSON API and the admin UI all render."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

Status = Literal["pass", "warn", "fail", "skip"]

# The manual's order: the connector screen, then Register Application (tenant, app), Create Client Secret,
# API Permissions, and finally the mailbox the prerequisites ask for.
TITLES: Final[dict[str, str]] = {
    "config": "Configuration is complete and well-formed",
    "tenant": "The tenant exists in the connector's cloud",
    "app": "The app registration exists in the tenant",
    "credential": "The client secret or certificate works",
    "permission": "Mail.Send is granted (admin consent)",
    "mailbox": "The mailbox can send",
    "read": "Optional: the app can read Sent Items, limited to the sending mailbox",
}
ORDER: Final = tuple(TITLES)

EXIT_OK, EXIT_TEMPFAIL, EXIT_CONFIG = 0, 75, 78  # sysexits(3), as the rest of the CLI


@dataclass(frozen=True)
class CheckResult:
    id: str  # one of ORDER
    title: str
    status: Status
    detail: str  # what was found, one or two sentences, never a secret
    remedy: str = ""  # what the administrator should do (empty when nothing)
    data: dict[str, Any] = field(default_factory=dict)  # e.g. consent_url, request_id, code, transient

    @property
    def number(self) -> int:
        return ORDER.index(self.id) + 1

    @property
    def transient(self) -> bool:
        """A failure caused by temporary trouble (network, 5xx): run the doctor again later."""
        return bool(self.data.get("transient"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "remedy": self.remedy,
            "data": dict(self.data),
        }


def result(check: str, status: Status, detail: str, remedy: str = "", **data: Any) -> CheckResult:
    return CheckResult(check, TITLES[check], status, detail, remedy, {k: v for k, v in data.items() if v is not None})


def skipped(check: str, reason: str) -> CheckResult:
    return result(check, "skip", f"not run: {reason}")


def exit_status(results: list[CheckResult]) -> int:
    """0 when nothing failed; 78 (EX_CONFIG) when the setup is wrong; 75 (EX_TEMPFAIL) when the only
    failures were temporary trouble, so a script can tell "fix it" from "try again"."""
    failed = [r for r in results if r.status == "fail"]
    if not failed:
        return EXIT_OK
    return EXIT_TEMPFAIL if all(r.transient for r in failed) else EXIT_CONFIG
