"""What every signed-in admin request works with, and the one dependency that guards them all.

``admin_context`` is a dependency of the whole admin router, so no page can forget it: a request without a
live session is sent to the sign-in page (``SignInRequired``); a POST whose ``csrf_token`` field does not
match the session's is refused before its handler runs (``CsrfRejected``), so nothing changes.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from .sessions import AdminSession

if TYPE_CHECKING:
    from ...runtime import Runtime
    from .ui import AdminUI

COOKIE = "m365relay_admin"
LOGIN_PATH = "/admin/login"
HOME_PATH = "/admin/"
MAX_PART_SIZE = 256 * 1024  # a PEM certificate or key is a few kB; a form field far less
MAX_FIELDS = 40
MAX_FILES = 2


class SignInRequired(Exception):  # a control-flow signal, not an error
    def __init__(self, next_path: str, *, expired: bool = False) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.expired = expired


class CsrfRejected(Exception):
    pass


@dataclass(frozen=True)
class AdminContext:
    ui: AdminUI
    session: AdminSession
    remote_addr: str | None
    form: FormData | None

    @property
    def runtime(self) -> Runtime:
        return self.ui.runtime

    @property
    def actor(self) -> str:
        """How the audit log names this administrator (the CLI is ``cli``, the dispatcher ``dispatcher``)."""
        return f"web:{self.session.username}"

    def field(self, name: str) -> str:
        """A text field of the submitted form ('' when absent or a file)."""
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else ""

    def upload(self, name: str) -> UploadFile | None:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, UploadFile) and value.filename else None


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def safe_next(value: str | None) -> str:
    """Where to go after signing in: only a path inside the admin UI of this site (no open redirect)."""
    if not value or any(ord(ch) < 0x21 or ch == "\\" for ch in value) or value.startswith("//"):
        return HOME_PATH
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not (parts.path == "/admin" or parts.path.startswith("/admin/")):
        return HOME_PATH
    if parts.path.startswith((LOGIN_PATH, "/admin/logout", "/admin/static/")):
        return HOME_PATH
    return value


def _next_for(request: Request) -> str:
    if request.method in ("GET", "HEAD"):
        query = request.url.query
        return request.url.path + (f"?{query}" if query else "")
    # A form was posted without a session: come back to the page it was on, not to the POST-only URL.
    referer = urlsplit(request.headers.get("referer", ""))
    here = urlsplit(str(request.base_url))
    if referer.netloc == here.netloc:
        return safe_next(referer.path + (f"?{referer.query}" if referer.query else ""))
    return HOME_PATH


async def admin_context(request: Request) -> AsyncIterator[AdminContext]:
    ui: AdminUI = request.app.state.admin
    lookup = await run_in_threadpool(ui.sessions.load, request.cookies.get(COOKIE))
    if lookup.session is None:
        raise SignInRequired(_next_for(request), expired=lookup.expired)
    form: FormData | None = None
    if request.method == "POST":
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_PART_SIZE)
        token = form.get("csrf_token")
        expected = lookup.session.csrf_token
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), expected.encode()):
            await form.close()
            raise CsrfRejected()
    try:
        yield AdminContext(ui, lookup.session, client_address(request), form)
    finally:
        if form is not None:
            await form.close()


Ctx = Annotated[AdminContext, Depends(admin_context)]
