"""The admin web UI under ``/admin/``: sign-in, the eMail (SMTP) connector screen of the setup manual (with
the registration helper, admin consent, Test connection and Send test email), the outbox and the audit log.

Server-rendered Jinja2 pages on the main app (the JSON API is its own sub-app under /api/v1). Every route but
the sign-in page and the static files hangs off one router guarded by ``context.admin_context``: no session →
the sign-in page; a POST without this session's CSRF token → 403, before its handler runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from ...errors import StoreError
from . import (
    access_pages,
    connector_list,
    connector_page,
    consent,
    login,
    outbox_pages,
    pages,
    suppression_pages,
    testing,
    webhook_pages,
)
from .context import LOGIN_PATH, CsrfRejected, SignInRequired, admin_context
from .headers import AdminHeaders
from .ui import AdminUI

if TYPE_CHECKING:
    from ...runtime import Runtime

__all__ = ["AdminUI", "install"]


def install(app: FastAPI, runtime: Runtime) -> None:
    """Add the admin UI to ``app`` (call once, from ``create_app``)."""
    ui = AdminUI(runtime)
    app.state.admin = ui
    app.include_router(login.public)
    app.mount("/admin/static", StaticFiles(packages=[("m365relay", "web/static")]), name="admin_static")
    guarded = APIRouter(dependencies=[Depends(admin_context)], include_in_schema=False)
    guarded.add_api_route("/admin", _to_home, methods=["GET"], name="admin_root")
    for router in (
        login.private,
        pages.router,
        connector_list.router,
        connector_page.router,
        access_pages.router,
        consent.router,
        testing.router,
        outbox_pages.router,
        suppression_pages.router,
        webhook_pages.router,
        pages.fallback,  # last: it answers every other /admin/ path
    ):
        guarded.include_router(router)
    app.include_router(guarded)
    app.add_exception_handler(SignInRequired, _sign_in_first)  # type: ignore[arg-type]
    app.add_exception_handler(CsrfRejected, _csrf_refused)
    app.add_exception_handler(StoreError, _store_down)  # type: ignore[arg-type]
    app.add_middleware(AdminHeaders)


def _to_home() -> Response:
    return RedirectResponse("/admin/", status_code=303)


def _sign_in_first(request: Request, exc: SignInRequired) -> Response:
    target = f"{LOGIN_PATH}?next={quote(exc.next_path, safe='')}"
    if exc.expired:
        target += "&expired=1"
    return RedirectResponse(target, status_code=303)


def _csrf_refused(request: Request, exc: Exception) -> Response:
    ui: AdminUI = request.app.state.admin
    return ui.render(
        "error.html",
        None,
        status_code=403,
        title="Refused: the form's security token did not match",
        text="This form was not sent by a page of this admin session (its CSRF token was missing, forged, or "
        "from a session that has ended), so nothing was changed.",
        remedy="Go back, reload the page, and submit the form again.",
    )


def _store_down(request: Request, exc: StoreError) -> Response:
    retry = {"Retry-After": "5"}  # a temporary condition: say when to come back (RFC 9110 §10.2.3)
    if not request.url.path.startswith("/admin"):
        return JSONResponse({"detail": exc.message}, status_code=503, headers=retry)
    ui: AdminUI = request.app.state.admin
    page = ui.render(
        "error.html", None, status_code=503, title="The database is not answering", text=exc.message, remedy=exc.remedy
    )
    page.headers.update(retry)
    return page
