"""Admin UI page times (issue 7): median milliseconds per GET of each main page over a real socket, with an
outbox of N messages (SQLite), and the time of one sign-in (argon2id verification dominates).

    python -m bench.admin_pages [--quick]
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, row

PASSWORD = "bench password 0123456789"
PAGES = {
    "overview": "/admin/",
    "connector": "/admin/connectors/smtp",
    "outbox": "/admin/outbox",
    "outbox_recipient_filter": "/admin/outbox?recipient=user77",
    "message": "/admin/outbox/{id}",
    "audit": "/admin/audit",
}


def _fill(runtime: Any, count: int) -> int:
    from m365relay import Relay
    from m365relay.connectors import ConnectorUpdate

    runtime.connectors.save(
        "default",
        ConnectorUpdate(
            client_id="4e7a1d93-c2b8-4f60-9a15-8d3c6e2b0f71",
            tenant_id="contoso.onmicrosoft.com",
            user_name="noreply@contoso.com",
            secret="abcQ~0123456789abcdefghijklmnopqrstuvwx",
            secret_expires=(date.today() + timedelta(days=20)).isoformat(),  # the banner shows
        ),
    )
    relay = Relay(runtime=runtime)
    last = 0
    for i in range(count):
        last = relay.enqueue(to=[f"user{i}@contoso.com"], subject=f"Report {i}", text="hello")
    return last


def _serve(runtime: Any) -> tuple[str, threading.Thread, list[Any]]:
    from m365relay.serve import serve

    box: list[Any] = []
    ready = threading.Event()

    def run() -> None:
        async def main() -> None:
            stop = asyncio.Event()
            box.extend([asyncio.get_running_loop(), stop])
            await serve(runtime, stop, with_smtp=False, with_worker=False, on_ready=lambda _e: ready.set())

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30)
    s = runtime.settings
    return f"http://{s.http_host}:{s.http_port}", thread, box


def measure(count: int, repeats: int) -> list[dict[str, Any]]:
    from m365relay.access.admins import AdminStore
    from m365relay.runtime import Runtime
    from m365relay.settings import load_settings

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-admin-") as tmp:
        runtime = Runtime(load_settings(environ={}, home=Path(tmp), http_port=free_port()))
        try:
            AdminStore(runtime.db).create_user("bench", PASSWORD)
            last_id = _fill(runtime, count)
            url, thread, box = _serve(runtime)
            try:
                with httpx.Client(base_url=url, timeout=60) as http:
                    sign_ins = []
                    for _ in range(5):
                        http.cookies.clear()
                        page = http.get("/admin/login")
                        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
                        assert token
                        started = time.perf_counter()
                        done = http.post(
                            "/admin/login", data={"username": "bench", "password": PASSWORD, "login_token": token[1]}
                        )
                        sign_ins.append((time.perf_counter() - started) * 1000)
                        assert done.status_code == 303, done.text
                    rows.append(row("admin_sign_in", "median", round(statistics.median(sign_ins), 1), "ms"))
                    for name, template in PAGES.items():
                        path = template.format(id=last_id)
                        times = []
                        for _ in range(repeats):
                            started = time.perf_counter()
                            response = http.get(path)
                            times.append((time.perf_counter() - started) * 1000)
                            assert response.status_code == 200, (path, response.status_code)
                        rows.append(
                            row(
                                f"admin_page_{name}",
                                "median",
                                round(statistics.median(times), 1),
                                "ms",
                                notes=f"{count} messages in the outbox, {repeats} requests",
                            )
                        )
            finally:
                loop, stop = box
                loop.call_soon_threadsafe(stop.set)
                thread.join(30)
        finally:
            runtime.close()
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    return measure(count=2_000 if quick else 20_000, repeats=10 if quick else 30)


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
