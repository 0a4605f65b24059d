"""The admin UI's shared parts: the stores it uses, the Jinja2 templates (autoescaped: every value typed by
an administrator or sent by an application is shown as text), the banner on every page, and notices that
survive the redirect after a form (POST → 303 → GET, so reloading a page never repeats an action).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

from ...access.admins import AdminStore
from ...connectors.expiry import expiry_state
from .sessions import AdminSessions
from .throttle import LoginThrottle

if TYPE_CHECKING:
    from ...runtime import Runtime
    from .context import AdminContext

STATUS_LABELS = {"pass": "Passed", "warn": "Warning", "fail": "Failed", "skip": "Not run"}


@dataclass(frozen=True)
class Banner:
    level: str  # warning (amber) | critical (red)
    text: str
    action: str


class AdminUI:
    def __init__(self, runtime: Runtime) -> None:
        s = runtime.settings
        self.runtime = runtime
        self.sessions = AdminSessions(runtime.db, runtime.clock, timedelta(minutes=s.admin_session_idle_minutes))
        self.admins = AdminStore(runtime.db, clock=runtime.clock)
        self.throttle = LoginThrottle(runtime.db, runtime.clock, s.admin_login_attempts)
        # The cookie only travels over HTTPS when administrators reach this server over HTTPS.
        self.secure_cookies = s.effective_public_base_url.startswith("https://")
        self.templates = Environment(
            loader=PackageLoader("m365relay", "web/templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["when"] = when
        self.templates.filters["day"] = day
        self.templates.globals["STATUS_LABELS"] = STATUS_LABELS

    # -- rendering (blocking: reads the database; call from a worker thread) -----------------------

    def render(self, template: str, ctx: AdminContext | None, *, status_code: int = 200, **values: Any) -> HTMLResponse:
        page: dict[str, Any] = {"user": None, "csrf_token": "", "banners": [], "notices": []}
        if ctx is not None:
            page.update(
                user=ctx.session.username,
                csrf_token=ctx.session.csrf_token,
                banners=self.banners(),
                notices=self.take_notices(ctx),
            )
        page.update(values)
        html = self.templates.get_template(f"admin/{template}").render(**page)
        return HTMLResponse(html, status_code=status_code)

    def banners(self) -> list[Banner]:
        """Credentials about to expire (amber within 30 days, red within 7 and after) and paused connectors."""
        now = self.runtime.clock.now()
        found: list[Banner] = []
        for connector in self.runtime.connectors.all():
            state = expiry_state(connector, now)
            if state.level == "warning":
                found.append(Banner("warning", state.message, "Store a new secret on the connector page."))
            elif state.level in ("critical", "expired"):
                found.append(Banner("critical", state.message, "Store a new secret on the connector page now."))
            if connector.paused:
                found.append(
                    Banner(
                        "critical",
                        f"Connector {connector.name} is paused: {connector.state_reason or 'no reason recorded'}. "
                        "Its mail waits in the outbox.",
                        connector.state_remedy or "Run Test connection on the connector page.",
                    )
                )
        return found

    # -- notices: what a POST wants the next page to say ---------------------------------------------

    def add_notice(self, ctx: AdminContext, notice: dict[str, Any]) -> None:
        data = ctx.session.data  # changed in place, so later changes in the same request keep it
        data["notices"] = [*data.get("notices", []), notice][-5:]
        self.sessions.save_data(ctx.session.id, data)

    def take_notices(self, ctx: AdminContext) -> list[dict[str, Any]]:
        notices: list[dict[str, Any]] = ctx.session.data.pop("notices", [])
        if notices:
            self.sessions.save_data(ctx.session.id, ctx.session.data)
        return notices

    def update_data(self, ctx: AdminContext, **values: Any) -> None:
        """Set (or, with None, remove) keys of the session's data."""
        data = ctx.session.data
        for key, value in values.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self.sessions.save_data(ctx.session.id, data)


def notice(
    kind: str, title: str, text: str = "", *, remedy: str = "", section: str = "top", **extra: Any
) -> dict[str, Any]:
    """kind: success | info | warning | error. ``section`` places it on the page (top, consent, test, send)."""
    return {"kind": kind, "title": title, "text": text, "remedy": remedy, "section": section, **extra}


def when(value: datetime | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def day(value: datetime | date | str | None) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        return value[:10]
    return value.strftime("%Y-%m-%d")
