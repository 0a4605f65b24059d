"""The dispatcher against the sandbox: faults, throttling, pauses and recovery, limits, fairness."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from m365relay.clock import ManualClock
from m365relay.connectors import ConnectorConfig, ConnectorUpdate
from m365relay.dispatch import Dispatcher
from m365relay.relay import Relay
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update, make_settings


def enqueue(runtime: Runtime, n: int, *, connector: str = "default", prefix: str = "m", **kw: Any) -> list[int]:
    relay = Relay(runtime=runtime)
    return [
        relay.enqueue(to=[f"{prefix}{i}@example.com"], subject=f"{prefix} {i}", text="x", connector=connector, **kw)
        for i in range(n)
    ]


def drain(runtime: Runtime, seconds: float = 60) -> Dispatcher:
    """Run the dispatcher until no message is queued, deferred or being sent."""
    return run_until(runtime, lambda: runtime.outbox.pending_count() == 0, seconds=seconds)


def run_until(
    runtime: Runtime,
    condition: Callable[[], bool],
    *,
    seconds: float = 60,
    dispatcher: Dispatcher | None = None,
) -> Dispatcher:
    """Run the dispatcher's real loop until ``condition()`` holds."""
    dispatcher = dispatcher or runtime.dispatcher()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            async with asyncio.timeout(seconds):
                while not await asyncio.to_thread(condition):
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task
            await runtime.sender.aclose()

    asyncio.run(go())
    return dispatcher


def delivered_by_message_id(admin: SandboxAdmin) -> collections.Counter[str]:
    return collections.Counter(m["message_id"] for m in admin.messages(limit=100000))


def statuses(runtime: Runtime, ids: list[int]) -> collections.Counter[str]:
    return collections.Counter(runtime.outbox.get(i, events=False).status for i in ids)


def test_faults_everywhere_still_deliver_every_message_exactly_once(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.faults({
        "sendMail": {"status": 503, "probability": 0.2, "seed": 7},
        "graph": {"status": 429, "code": "ApplicationThrottled", "retry_after": "0.3", "probability": 0.1, "seed": 8},
        "token": {"status": 503, "retry_after": "1", "count": 2},
    })  # fmt: skip
    ids = enqueue(runtime, 60)
    records = {i: runtime.outbox.get(i, events=False).message_id for i in ids}
    drain(runtime, seconds=120)
    assert statuses(runtime, ids) == {"sent": 60}
    delivered = delivered_by_message_id(admin)
    assert {mid: delivered[mid] for mid in records.values()} == dict.fromkeys(records.values(), 1)
    stats = admin.stats()
    assert stats["faults_injected"], "faults were really injected"
    assert stats["token_failures"] or stats["faults_injected"].get("token")
    deferred = [e for i in ids for e in runtime.outbox.get(i).events if e.kind == "deferred"]
    assert deferred, "some attempts were deferred and retried"


@pytest.fixture
def manual_runtime(tmp_path: Path, sandbox: SandboxServer) -> Iterator[tuple[Runtime, ManualClock]]:
    from datetime import UTC, datetime

    clock = ManualClock(datetime.now(UTC))
    rt = Runtime(make_settings(tmp_path / "manual"), clock=clock)
    rt.connectors.save("default", connector_update(sandbox))
    yield rt, clock
    rt.close()


def test_retry_after_is_honoured_on_the_injected_clock(
    manual_runtime: tuple[Runtime, ManualClock], admin: SandboxAdmin
) -> None:
    runtime, clock = manual_runtime
    admin.faults({"sendMail": {"status": 429, "code": "ApplicationThrottled", "retry_after": "2.5", "count": 1}})
    [message_id] = enqueue(runtime, 1)
    run_until(runtime, lambda: runtime.outbox.get(message_id, events=False).status == "sent")
    events = {e.kind: e for e in reversed(runtime.outbox.get(message_id).events)}  # first of each kind
    deferred_at, sent_at = events["deferred"].at, events["sent"].at
    assert "next attempt in 2.5 s (Retry-After)" in (events["deferred"].detail or "")
    waited = (sent_at - deferred_at).total_seconds()
    assert 2.5 <= waited < 2.5 + 0.5, f"sent {waited} s (injected clock) after the 429"
    assert clock.slept, "the dispatcher waited on the injected clock, not on wall time"


def test_expired_secret_pauses_the_connector_and_a_new_one_resumes_it(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.expire_secret()
    ids = enqueue(runtime, 5)
    run_until(runtime, lambda: runtime.connectors.get().paused)
    paused = runtime.connectors.get()
    assert paused.state_error_kind == "SecretExpiredError" and "New client secret" in (paused.state_remedy or "")
    assert statuses(runtime, ids) == {"queued": 5}, "mail waits; nothing is burned"
    assert all(runtime.outbox.get(i, events=False).attempts == 0 for i in ids)
    assert admin.messages() == []

    fresh = admin.add_secret()
    runtime.connectors.save(
        "default", ConnectorUpdate(secret=fresh["value"], secret_expires=str(date.today() + timedelta(days=200)))
    )
    run_until(runtime, lambda: statuses(runtime, ids) == {"sent": 5})
    assert runtime.connectors.get().state == "active"
    assert sorted(delivered_by_message_id(admin).values()) == [1] * 5


def test_missing_consent_pauses_and_granting_it_resumes_without_config_change(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.grant()
    ids = enqueue(runtime, 3)
    run_until(runtime, lambda: runtime.connectors.get().paused)
    assert runtime.connectors.get().state_error_kind == "ConsentMissingError"
    admin.grant("Mail.Send")  # the admin clicks "Grant admin consent" in Azure; nothing changes on our side
    run_until(runtime, lambda: statuses(runtime, ids) == {"sent": 3}, seconds=60)
    assert runtime.connectors.get().state == "active"


def test_a_permanent_message_error_fails_only_that_message(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    good = enqueue(runtime, 3)
    bad = Relay(runtime=runtime).enqueue(
        to=["ok@example.com"], subject="bad", text="x", envelope=["nobody@bad_domain.example"]
    )
    drain(runtime)
    assert statuses(runtime, good) == {"sent": 3}
    record = runtime.outbox.get(bad)
    assert record.status == "failed" and record.last_error is not None
    assert record.last_error.kind == "InvalidRecipientsError" and record.last_error.remedy
    assert record.last_error.request_id, "Graph's request-id is kept for support cases"
    assert runtime.connectors.get().state == "active"


def test_in_flight_limit_holds_and_the_relay_causes_no_429(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.latency(40)
    ids = enqueue(runtime, 24)
    drain(runtime)
    assert statuses(runtime, ids) == {"sent": 24}
    stats = admin.stats()
    assert stats["throttled_429"]["total"] == 0
    assert max(stats["max_in_flight"].values()) == 4


def test_connectors_do_not_wait_behind_each_other(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin, sandbox: SandboxServer
) -> None:
    admin.put_mailbox("second@contoso.onmicrosoft.com", licensed=True)
    runtime.connectors.save("second", connector_update(sandbox, user_name="second@contoso.onmicrosoft.com"))
    admin.latency(30)
    busy = enqueue(runtime, 40, prefix="a")
    quiet = enqueue(runtime, 4, connector="second", prefix="b")
    drain(runtime)
    assert statuses(runtime, busy + quiet) == {"sent": 44}
    order = [m["mailbox"] for m in reversed(admin.messages(limit=1000))]  # oldest first
    # The second mailbox's mail went out alongside the first's, not behind its 40 messages (its first send
    # waits only for its own token request).
    assert order.index("second@contoso.onmicrosoft.com") < 16, order
    assert max(i for i, box in enumerate(order) if box.startswith("second")) < 24, order


def test_recipient_budget_defers_instead_of_failing(
    tmp_path: Path, sandbox: SandboxServer, admin: SandboxAdmin
) -> None:
    runtime = Runtime(make_settings(tmp_path / "budget", recipient_budget=3))
    try:
        runtime.connectors.save("default", connector_update(sandbox))
        ids = enqueue(runtime, 5)
        run_until(runtime, lambda: statuses(runtime, ids)["sent"] == 3 and statuses(runtime, ids)["deferred"] >= 1)
        held = [runtime.outbox.get(i) for i in ids if runtime.outbox.get(i, events=False).status != "sent"]
        assert len(held) == 2 and {r.status for r in held} <= {"deferred", "queued"}, "waiting, not failed"
        assert all(r.attempts == 0 for r in held), "a budget hold is not an attempt"
        assert any("budget" in (e.detail or "") for r in held for e in r.events)
        assert admin.stats()["throttled_429"]["total"] == 0, "the relay stopped before Exchange had to"
    finally:
        runtime.close()


def test_graceful_shutdown_finishes_in_flight_mail(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.latency(400)
    ids = enqueue(runtime, 12)

    dispatcher = runtime.dispatcher()
    run_until(runtime, lambda: dispatcher.stats.in_flight > 0, dispatcher=dispatcher)  # requests on the wire
    final = statuses(runtime, ids)
    assert final["sending"] == 0, "stop waited for in-flight sends"
    assert final["sent"] >= 1 and final["sent"] + final["queued"] == 12
    second = drain(runtime)
    assert statuses(runtime, ids) == {"sent": 12}
    assert sorted(delivered_by_message_id(admin).values()) == [1] * 12
    assert second.budgets is not None
    # Both stopped dispatchers gave their unspent chunks (64 recipients each) back; what stays counted is what
    # was sent plus what the first reserved for messages it then handed back unsent at shutdown.
    assert 12 <= second.budgets.usage(connector.id)[1] < 24


def test_a_credential_that_no_longer_decrypts_pauses_only_its_connector(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin, sandbox: SandboxServer
) -> None:
    from sqlalchemy import update

    from m365relay.db.models import CredentialRow

    admin.put_mailbox("second@contoso.onmicrosoft.com", licensed=True)
    second = runtime.connectors.save("second", connector_update(sandbox, user_name="second@contoso.onmicrosoft.com"))
    with runtime.db.write() as session:  # as if it had been encrypted with another server's key
        session.execute(
            update(CredentialRow)
            .where(CredentialRow.connector_id == second.id)
            .values(secret_ciphertext=b"gAAAA-not-ours")
        )
    assert runtime.connectors.get("second").credential.unreadable  # type: ignore[union-attr]
    good = enqueue(runtime, 3)
    stuck = enqueue(runtime, 2, connector="second", prefix="s")
    run_until(runtime, lambda: statuses(runtime, good) == {"sent": 3} and runtime.connectors.get("second").paused)
    paused = runtime.connectors.get("second")
    assert paused.state_error_kind == "CredentialUnreadableError" and "M365RELAY_SECRET_KEY" in (
        paused.state_remedy or ""
    )
    assert statuses(runtime, stuck) == {"queued": 2}, "its mail waits for the fix"
