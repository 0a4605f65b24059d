"""Two real ``m365relay worker`` processes on one PostgreSQL database: each sends mail and delivers
webhooks; every event reaches the receiver once, signed."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from webhook_support import add_active, receiver, wait_for

from m365relay.client import verify_webhook
from m365relay.relay import Relay
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import connector_update, make_settings

COUNT = 20


@pytest.mark.postgres
def test_two_worker_processes_deliver_each_event_once(pg_url: str, tmp_path: Path, sandbox: SandboxServer) -> None:
    home = tmp_path / "home"
    runtime = Runtime(make_settings(home, pg_url))
    env = {
        **os.environ,
        "M365RELAY_HOME": str(home),
        "M365RELAY_DATABASE_URL": pg_url,
        "M365RELAY_POLL_INTERVAL": "0.05",
        "M365RELAY_WEBHOOK_POLL_INTERVAL": "0.05",
        "M365RELAY_WEBHOOK_CONCURRENCY": "4",
    }
    workers: list[subprocess.Popen[str]] = []
    try:
        runtime.connectors.save("default", connector_update(sandbox))
        with receiver() as hook:
            secret = add_active(runtime, hook.url, "accepted,sent").secret
            relay = Relay(runtime=runtime)
            ids = [relay.enqueue(to=[f"r{n}@example.com"], subject="s", text="x") for n in range(COUNT)]
            for _ in range(2):
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "m365relay", "worker", "--quiet"],
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
            wait_for(lambda: len(hook.accepted()) >= 2 * COUNT or any(w.poll() is not None for w in workers), 240)
            assert all(w.poll() is None for w in workers), [w.communicate()[0] for w in workers]
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            outputs = [w.communicate(timeout=120)[0] for w in workers]
            assert all(w.returncode == 0 for w in workers), outputs
            requests = hook.accepted()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        runtime.close()
    events = [verify_webhook(r.body, r.headers, secret) for r in requests]
    kinds = collections.Counter((e["type"], e["data"]["message"]["id"]) for e in events)
    assert set(kinds) == {(t, i) for t in ("message.accepted", "message.sent") for i in ids}
    assert set(kinds.values()) == {1}, "no event arrived twice"
    assert len({r.headers["webhook-id"] for r in requests}) == 2 * COUNT
