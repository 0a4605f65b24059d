"""Several worker processes on one PostgreSQL database share the work: no message is sent twice, the
per-mailbox limits hold across all processes together, and a process killed mid-run loses nothing."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from m365relay.relay import Relay
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update, make_settings

MAILBOXES = ["alpha@contoso.onmicrosoft.com", "beta@contoso.onmicrosoft.com", "gamma@contoso.onmicrosoft.com"]


@pytest.fixture
def pg_runtime(pg_url: str, tmp_path: Path, sandbox: SandboxServer, admin: SandboxAdmin) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path / "home", database_url=pg_url))
    for address in MAILBOXES:
        admin.put_mailbox(address, licensed=True)
        runtime.connectors.save(address.split("@")[0], connector_update(sandbox, user_name=address))
    yield runtime
    runtime.close()


def start_workers(runtime: Runtime, n: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "M365RELAY_HOME": str(runtime.settings.home),
        "M365RELAY_DATABASE_URL": runtime.settings.effective_database_url,
        "M365RELAY_LEASE_SECONDS": "3",
        "M365RELAY_POLL_INTERVAL": "0.05",
    }
    return [
        subprocess.Popen(
            [sys.executable, "-m", "m365relay", "worker", "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(n)
    ]


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        _, err = w.communicate(timeout=60)
        assert w.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]


def enqueue(runtime: Runtime, per_mailbox: int) -> set[str]:
    relay = Relay(runtime=runtime)
    ids = []
    for address in MAILBOXES:
        name = address.split("@")[0]
        ids += [
            relay.enqueue(to=[f"{name}{i}@example.com"], subject=f"{name} {i}", text="x", connector=name)
            for i in range(per_mailbox)
        ]
    return {runtime.outbox.get(i, events=False).message_id or "" for i in ids}


def wait_until_done(runtime: Runtime, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while runtime.outbox.pending_count():
        assert time.monotonic() < deadline, f"not done: {runtime.outbox.stats().by_status}"
        time.sleep(0.2)


@pytest.mark.slow
def test_three_workers_share_the_work_within_the_limits(pg_runtime: Runtime, admin: SandboxAdmin) -> None:
    admin.latency(30)
    message_ids = enqueue(pg_runtime, 100)
    workers = start_workers(pg_runtime, 3)
    try:
        wait_until_done(pg_runtime)
    finally:
        stop(workers)
    delivered = collections.Counter(m["message_id"] for m in admin.messages(limit=100000))
    assert {m: delivered[m] for m in message_ids} == dict.fromkeys(message_ids, 1), "each exactly once"
    stats = admin.stats()
    assert stats["throttled_429"]["total"] == 0, "the relay's shared limit kept Graph from throttling"
    assert stats["max_in_flight"] and max(stats["max_in_flight"].values()) <= 4
    owners = {
        (e.detail or "").rsplit(" by ", 1)[-1]
        for record in pg_runtime.outbox.list(limit=1000)
        for e in pg_runtime.outbox.get(record.id).events
        if e.kind == "claimed"
    }
    assert len(owners) == 3, f"all three processes worked: {owners}"


@pytest.mark.slow
def test_a_killed_worker_loses_nothing(pg_runtime: Runtime, admin: SandboxAdmin) -> None:
    admin.latency(30)
    message_ids = enqueue(pg_runtime, 80)
    workers = start_workers(pg_runtime, 3)
    try:
        while pg_runtime.outbox.stats().by_status.get("sent", 0) < 60:
            time.sleep(0.05)
        workers[0].send_signal(signal.SIGKILL)
        wait_until_done(pg_runtime)
    finally:
        stop(workers)
    delivered = collections.Counter(m["message_id"] for m in admin.messages(limit=100000))
    assert all(delivered[m] >= 1 for m in message_ids), "nothing lost"
    duplicates = sum(delivered[m] - 1 for m in message_ids)
    print(f"\nmulti-node kill: duplicates = {duplicates}")
    assert duplicates <= 4 * len(MAILBOXES), "only sends on the wire at the kill can repeat"
    assert admin.stats()["throttled_429"]["total"] == 0
