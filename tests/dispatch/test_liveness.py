"""Recovery in seconds, not in a lease: a worker killed with SIGKILL has its leases handed back as soon as
another worker sees it is dead (SQLite: its lock file is free; PostgreSQL: its advisory lock is gone), and
a live worker's leases are never taken. The leases here are 600 s, so finishing well inside the test's
timeout proves they were not waited out. After an outage of Graph, one probe per connector finds its
end and the mail that backed off is due again at once, not on each message's own backoff."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_crash import wait_for
from test_dispatcher import enqueue, run_until

from m365relay.connectors import ConnectorConfig
from m365relay.db import Database
from m365relay.dispatch.liveness import AdvisoryLiveness, FileLiveness
from m365relay.runtime import Runtime
from m365relay.settings import Settings
from support import SandboxAdmin, make_settings

LONG_LEASE = "600"
HOLDER = """
import sys, time, asyncio
from pathlib import Path
from m365relay.dispatch.liveness import FileLiveness
held = FileLiveness(Path(sys.argv[1]))
asyncio.run(held.start(sys.argv[2]))
print("holding", flush=True)
time.sleep(600)
"""


def start_worker(runtime: Runtime) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "M365RELAY_HOME": str(runtime.settings.home),
        "M365RELAY_LEASE_SECONDS": LONG_LEASE,
        "M365RELAY_POLL_INTERVAL": "0.05",
        "M365RELAY_DATABASE_URL": runtime.settings.effective_database_url,
    }
    return subprocess.Popen([sys.executable, "-m", "m365relay", "worker", "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()[-2000:]


def holders(runtime: Runtime) -> collections.Counter[str]:
    return collections.Counter(m.lease_owner for m in runtime.outbox.list(status="sending", limit=1000))


def assert_all_sent_once(runtime: Runtime, admin: SandboxAdmin, ids: list[int]) -> None:
    records = [runtime.outbox.get(i) for i in ids]
    assert {r.status for r in records} == {"sent"}
    delivered = collections.Counter(m["message_id"] for m in admin.messages(limit=100000))
    assert all(delivered[r.message_id] >= 1 for r in records), "nothing lost"
    assert any("lease-ended" in {e.kind for e in r.events} for r in records), "the dead worker's leases were ended"


# -- the liveness signals themselves -------------------------------------------------------------------


def test_a_lock_file_tells_a_killed_worker_from_a_live_one(tmp_path: Path) -> None:
    directory = tmp_path / "outbox.db.workers"
    live, killed = f"live-{uuid.uuid4().hex}", f"killed-{uuid.uuid4().hex}"
    mine = FileLiveness(directory)
    asyncio.run(mine.start(live))
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory), killed], stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None and other.stdout.readline() == b"holding\n"
        observer = FileLiveness(directory)
        assert asyncio.run(observer.dead({live, killed, "never-started"})) == set()
    finally:
        kill(other)
    assert asyncio.run(observer.dead({live, killed})) == {killed}
    asyncio.run(mine.aclose())
    assert asyncio.run(observer.dead({live})) == set()  # a clean stop leaves no file: its leases were released


@pytest.mark.postgres
def test_an_advisory_lock_tells_a_dead_worker_from_a_live_one(pg_url: str) -> None:
    db = Database(pg_url)
    live, gone = f"live-{uuid.uuid4().hex}", f"gone-{uuid.uuid4().hex}"

    async def scenario() -> None:
        worker, leaving = AdvisoryLiveness(db), AdvisoryLiveness(db)
        observer = AdvisoryLiveness(db, grace=0)
        await worker.start(live)
        await leaving.start(gone)
        await observer.start(f"observer-{uuid.uuid4().hex}")
        assert await observer.dead({live, gone}) == set()
        await leaving.aclose()  # its session ends, as when its process is killed
        assert await observer.dead({live, gone}) == {gone}
        patient = AdvisoryLiveness(db, grace=3600)
        await patient.start(f"patient-{uuid.uuid4().hex}")
        assert await patient.dead({gone}) == set(), "seen dead once is not enough: the grace protects a blip"
        for liveness in (worker, observer, patient):
            await liveness.aclose()

    try:
        asyncio.run(scenario())
    finally:
        db.dispose()


# -- workers killed for real ---------------------------------------------------------------------------


@pytest.mark.slow
def test_sqlite_a_killed_workers_mail_goes_at_once_to_the_next(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.latency(300)
    ids = enqueue(runtime, 40, prefix="sqlitekill")
    first = start_worker(runtime)
    try:
        wait_for(lambda: holders(runtime).total() >= 4, 120)
    finally:
        kill(first)
    second = start_worker(runtime)
    try:
        wait_for(lambda: runtime.outbox.pending_count() == 0, 150)  # a lease is 600 s
    finally:
        stop(second)
    assert_all_sent_once(runtime, admin, ids)


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str) -> Settings:
    return make_settings(tmp_path / "home", database_url=pg_url)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgresql_a_live_worker_takes_over_a_killed_workers_mail(
    pg_settings: Settings, sandbox: object, admin: SandboxAdmin
) -> None:
    from support import connector_update

    runtime = Runtime(pg_settings)
    try:
        runtime.connectors.save("default", connector_update(sandbox))  # type: ignore[arg-type]
        admin.latency(300)
        ids = enqueue(runtime, 60, prefix="pgkill")
        workers = [start_worker(runtime), start_worker(runtime)]
        try:
            wait_for(lambda: len(holders(runtime)) == 2, 120)  # both hold leases: one is about to die
            kill(workers[0])
            wait_for(lambda: runtime.outbox.pending_count() == 0, 150)  # a lease is 600 s
        finally:
            for worker in workers[1:]:
                stop(worker)
        assert_all_sent_once(runtime, admin, ids)
    finally:
        runtime.close()


# -- an outage of Graph ---------------------------------------------------------------------------------


@pytest.fixture
def slow_retry_settings(tmp_path: Path) -> Settings:
    # Backoff of 150–300 s for the first retry: without the outage probe nothing would go for minutes.
    return make_settings(tmp_path / "home", retry_base_seconds=300.0, retry_max_seconds=900.0)


def test_after_a_graph_outage_the_backed_off_mail_goes_at_once(
    slow_retry_settings: Settings, sandbox: object, admin: SandboxAdmin
) -> None:
    from support import connector_update

    runtime = Runtime(slow_retry_settings)
    try:
        runtime.connectors.save("default", connector_update(sandbox))  # type: ignore[arg-type]
        admin.faults({"sendMail": {"status": 503, "probability": 1.0}})
        ids = enqueue(runtime, 12, prefix="outage")
        over: list[bool] = []

        def recovered() -> bool:
            if not over:
                deferred = runtime.outbox.stats().by_status.get("deferred", 0)
                if deferred < len(ids):
                    return False
                admin.clear_faults()  # Graph is back
                over.append(True)
            return runtime.outbox.stats().by_status.get("sent", 0) == len(ids)

        run_until(runtime, recovered, seconds=90)
        for message_id in ids:
            assert runtime.outbox.get(message_id, events=False).status == "sent"
    finally:
        runtime.close()
