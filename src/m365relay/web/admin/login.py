"""Sign-in and sign-out.

The sign-in form has no session yet, so its CSRF protection is a double-submit token: a random value in a
short-lived cookie scoped to /admin/login and the same value in the form; another site can make a browser
post the form but cannot read or set the cookie. Failed sign-ins are audited with the client address and
counted (``throttle``): after ``admin_login_attempts`` in 15 minutes the address gets 429 and its passwords
are not even checked.
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from ...access.passwords import MAX_PASSWORD_LENGTH
from .audit_log import record
from .context import COOKIE, LOGIN_PATH, Ctx, client_address, safe_next
from .throttle import Verdict

if TYPE_CHECKING:
    from .ui import AdminUI

LOGIN_COOKIE = "m365relay_login"
LOGIN_COOKIE_SECONDS = 3600

public = APIRouter(include_in_schema=False)  # reachable without a session
private = APIRouter(include_in_schema=False)  # joined to the guarded admin router


def _ui(request: Request) -> AdminUI:
    ui: AdminUI = request.app.state.admin
    return ui


def _login_page(ui: AdminUI, *, next_path: str, status_code: int = 200, **values: Any) -> Response:
    token = secrets.token_urlsafe(32)
    response = ui.render("login.html", None, status_code=status_code, next=next_path, login_token=token, **values)
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=LOGIN_COOKIE_SECONDS,
        path=LOGIN_PATH,
        httponly=True,
        samesite="lax",
        secure=ui.secure_cookies,
    )
    return response


@public.get("/admin/login", name="admin_login")
def login_form(request: Request, next: str = "", expired: str = "", signed_out: str = "") -> Response:
    ui = _ui(request)
    next_path = safe_next(next)
    if ui.sessions.load(request.cookies.get(COOKIE)).session is not None:
        return RedirectResponse(next_path, status_code=303)
    message = ""
    if expired:
        minutes = ui.runtime.settings.admin_session_idle_minutes
        message = f"Your session ended (after {minutes} minutes without activity, or 12 hours). Please sign in again."
    elif signed_out:
        message = "You have signed out."
    return _login_page(ui, next_path=next_path, info=message)


@public.post("/admin/login")
async def login_submit(request: Request) -> Response:
    ui = _ui(request)
    async with request.form(max_files=0, max_fields=10, max_part_size=4 * MAX_PASSWORD_LENGTH) as form:
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return await run_in_threadpool(_sign_in, ui, request, fields)


def _sign_in(ui: AdminUI, request: Request, fields: dict[str, str]) -> Response:
    next_path = safe_next(fields.get("next"))
    username = fields.get("username", "")[:255]
    cookie_token, form_token = request.cookies.get(LOGIN_COOKIE, ""), fields.get("login_token", "")
    if not cookie_token or not hmac.compare_digest(cookie_token.encode(), form_token.encode()):
        return _login_page(
            ui,
            next_path=next_path,
            status_code=403,
            username=username,
            error="The sign-in form had expired or did not come from this site (its security token did not "
            "match), so nothing was checked. Please sign in again.",
        )
    addr = client_address(request)
    with ui.throttle.attempt(addr or "") as verdict:  # reserved before the (slow) password check
        if not verdict.allowed:
            return _locked_out(ui, verdict, next_path=next_path, username=username)
        user = ui.admins.verify(username, fields.get("password", "")[:MAX_PASSWORD_LENGTH])
        if user is None:
            record(ui.runtime, "anonymous", "admin.login_failed", _audit_name(ui, username), {}, addr)
            return _login_page(
                ui,
                next_path=next_path,
                status_code=401,
                username=username,
                error="The username or password is not correct.",
            )
        record(ui.runtime, f"web:{user.username}", "admin.login", user.username, {}, addr)
    cookie, _session = ui.sessions.create(user)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(COOKIE, cookie, path="/admin", httponly=True, samesite="lax", secure=ui.secure_cookies)
    response.delete_cookie(LOGIN_COOKIE, path=LOGIN_PATH)
    return response


def _locked_out(ui: AdminUI, verdict: Verdict, *, next_path: str, username: str) -> Response:
    assert verdict.retry_at is not None
    return _login_page(
        ui,
        next_path=next_path,
        status_code=429,
        username=username,
        error=f"Too many failed sign-ins from your address ({verdict.failures} in the last 15 minutes). "
        f"Sign-in from it is blocked until {verdict.retry_at.strftime('%H:%M UTC')}. If you have forgotten "
        "the password, an operator can set a new one: m365relay admin set-password USERNAME.",
    )


def _audit_name(ui: AdminUI, typed: str) -> str | None:
    """The name tried, but only when it is an administrator's: a password typed into the username field by
    mistake must not end up in the audit log."""
    found = ui.admins.find(typed)
    return found.username if found is not None else "(no such administrator)"


@private.post("/admin/logout")
def logout(ctx: Ctx) -> Response:
    ctx.ui.sessions.delete(ctx.session.id)
    record(ctx.runtime, ctx.actor, "admin.logout", ctx.session.username, {}, ctx.remote_addr)
    response = RedirectResponse(f"{LOGIN_PATH}?signed_out=1", status_code=303)
    response.delete_cookie(COOKIE, path="/admin")
    return response
