"""Issue 13, items 2 and 10, against the real ``serve``: parallel sign-ins cannot get past the lockout, and
X-Forwarded-For is believed only from a configured proxy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from admin_support import ADMIN_USER, AdminClient, LiveServer, create_admin, free_port, hidden
from sqlalchemy import select

from m365relay.db.models import AuditRow
from m365relay.runtime import Runtime
from support import make_settings

PARALLEL = 20


def failures(runtime: Runtime) -> list[AuditRow]:
    with runtime.db.read() as session:
        return list(session.scalars(select(AuditRow).where(AuditRow.action == "admin.login_failed")))


def test_parallel_wrong_passwords_are_not_all_checked(live: LiveServer, runtime: Runtime) -> None:
    clients = [AdminClient(live.url) for _ in range(PARALLEL)]
    forms = []
    for client in clients:  # every sign-in form is fetched first, so the posts can leave together
        page = client.get("/admin/login")
        forms.append(
            {"username": ADMIN_USER, "password": "wrong password!", "login_token": hidden(page.text, "login_token")}
        )
    start = threading.Barrier(PARALLEL)
    statuses: list[int] = []

    def post(client: AdminClient, form: dict[str, str]) -> None:
        start.wait()
        statuses.append(client.http.post("/admin/login", data=form).status_code)

    threads = [threading.Thread(target=post, args=pair) for pair in zip(clients, forms, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for client in clients:
        client.close()
    attempts = runtime.settings.admin_login_attempts
    assert len(statuses) == PARALLEL
    assert statuses.count(401) <= attempts, statuses  # today all 20 are verified
    assert statuses.count(401) + statuses.count(429) == PARALLEL
    assert len(failures(runtime)) <= attempts


@contextmanager
def served(tmp_path: Path, **overrides: object) -> Iterator[tuple[LiveServer, Runtime]]:
    runtime = Runtime(make_settings(tmp_path / "home", http_port=free_port(), **overrides))
    create_admin(runtime)
    server = LiveServer(runtime).start()
    try:
        yield server, runtime
    finally:
        server.stop()
        runtime.close()


def wrong_sign_in(url: str, forwarded_for: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        page = http.get("/admin/login")
        form = {"username": ADMIN_USER, "password": "wrong password!", "login_token": hidden(page.text, "login_token")}
        assert http.post("/admin/login", data=form, headers={"X-Forwarded-For": forwarded_for}).status_code == 401


def test_forwarded_for_is_ignored_unless_the_proxy_is_configured(tmp_path: Path) -> None:
    with served(tmp_path / "plain") as (server, runtime):
        for i in range(3):  # a local process rotating addresses is still 127.0.0.1
            wrong_sign_in(server.url, f"203.0.113.{i}")
        assert {row.remote_addr for row in failures(runtime)} == {"127.0.0.1"}
    with served(tmp_path / "proxied", trusted_proxies=["127.0.0.1/32"]) as (server, runtime):
        wrong_sign_in(server.url, "203.0.113.9")
        assert [row.remote_addr for row in failures(runtime)] == ["203.0.113.9"]
