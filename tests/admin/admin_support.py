"""Helpers for the admin UI tests: the real ``serve`` (HTTP + dispatcher) in a thread on a free port, and an
httpx client that signs in and posts forms the way a browser does (cookies, CSRF token from the page)."""

from __future__ import annotations

import asyncio
import html
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from m365relay.access.admins import AdminStore
from m365relay.runtime import Runtime
from m365relay.serve import Endpoints, serve
from m365relay.web import create_app

ADMIN_USER, ADMIN_PASSWORD = "alice", "correct horse battery staple"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``m365relay serve`` (SMTP only when asked) in its own thread and event loop, as the process would run it."""

    def __init__(self, runtime: Runtime, *, worker: bool = False, smtp: bool = False) -> None:
        self.runtime = runtime
        self.worker = worker
        self.smtp = smtp
        self.url = ""
        self.smtp_port: int | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="admin-serve", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def ready(endpoints: Endpoints) -> None:
                self.url = endpoints.http_url or ""
                self.smtp_port = endpoints.smtp_port
                self._ready.set()

            await serve(self.runtime, self._stop, with_smtp=self.smtp, with_worker=self.worker, on_ready=ready)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def start(self) -> LiveServer:
        self._thread.start()
        assert self._ready.wait(30), "serve did not start"
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "serve did not stop"
        if self._error is not None:
            raise self._error


def admin_routes(runtime: Runtime) -> list[tuple[str, str]]:
    """(method, path) of every admin route of the app, path parameters filled in."""
    app = create_app(runtime)
    try:  # FastAPI ≥ 0.16x keeps included routers as lazy branches; this walks them
        from fastapi.routing import iter_route_contexts

        routes: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:
        routes = list(app.routes)
    found = []
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if not path or not methods or not path.startswith("/admin"):
            continue
        path = re.sub(r"\{[^}]+\}", "1", path)
        found += [(method, path) for method in sorted(methods) if method != "HEAD"]
    return found


def create_admin(runtime: Runtime, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> None:
    AdminStore(runtime.db, clock=runtime.clock).create_user(username, password, actor="test")


def text(page: str) -> str:
    """What a reader sees: tags removed, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found, f"no hidden field {name} in the page"
    return html.unescape(found.group(1))


@dataclass
class AdminClient:
    """A browser stand-in: keeps cookies, follows nothing on its own, reads CSRF tokens from pages."""

    url: str
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, follow_redirects=False, timeout=60)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def login(self, username: str = ADMIN_USER, password: str = ADMIN_PASSWORD, next_path: str = "") -> httpx.Response:
        page = self.http.get("/admin/login", params={"next": next_path} if next_path else None)
        assert page.status_code == 200, page.text
        form = {"username": username, "password": password, "login_token": hidden(page.text, "login_token")}
        form["next"] = hidden(page.text, "next")
        return self.http.post("/admin/login", data=form)

    def csrf(self, path: str = "/admin/") -> str:
        page = self.http.get(path)
        assert page.status_code == 200, (page.status_code, page.text[:500])
        return hidden(page.text, "csrf_token")

    def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: str | None = None, **kw: Any
    ) -> httpx.Response:
        form = dict(data or {})
        form["csrf_token"] = self.csrf() if csrf is None else csrf
        return self.http.post(path, data=form, **kw)

    def follow(self, response: httpx.Response) -> httpx.Response:
        assert response.status_code in (302, 303), (response.status_code, response.text[:500])
        return self.http.get(response.headers["location"])
