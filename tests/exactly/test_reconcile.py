"""In-doubt sends against the sandbox, over real HTTPS: the answer is lost after Exchange accepted the send
(`drop` fault), and the dispatcher must find the message in Sent Items instead of sending it twice."""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from m365relay.connectors import ConnectorConfig
from m365relay.relay import AttachmentSpec, Relay
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update, make_settings

READ = ("Mail.Send", "Mail.ReadBasic.All")


@pytest.fixture
def make_runtime(tmp_path: Path, sandbox: SandboxServer) -> Iterator[Callable[..., tuple[Runtime, ConnectorConfig]]]:
    made: list[Runtime] = []

    def make(**settings: Any) -> tuple[Runtime, ConnectorConfig]:
        runtime = Runtime(make_settings(tmp_path / f"home{len(made)}", **settings))
        made.append(runtime)
        return runtime, runtime.connectors.save("default", connector_update(sandbox))

    yield make
    for runtime in made:
        runtime.close()


def run_until(runtime: Runtime, condition: Callable[[], bool], seconds: float = 120) -> None:
    """The dispatcher's real loop until ``condition()`` holds (generous timeout, no timing assertions)."""
    dispatcher = runtime.dispatcher()

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        try:
            async with asyncio.timeout(seconds):
                while not await asyncio.to_thread(condition):
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await task
            await runtime.sender.aclose()

    asyncio.run(go())


def kinds(runtime: Runtime, message_id: int) -> list[str]:
    return [e.kind for e in runtime.outbox.get(message_id).events]


def event(runtime: Runtime, message_id: int, kind: str) -> Any:
    return next(e for e in runtime.outbox.get(message_id).events if e.kind == kind)


def delivered(admin: SandboxAdmin) -> collections.Counter[str]:
    return collections.Counter(m["message_id"] for m in admin.messages(limit=100000))


def sent_items_delay(admin: SandboxAdmin, seconds: float) -> None:
    admin.client.put("/_sandbox/sent-items", json={"delay_seconds": seconds}).raise_for_status()


def is_sent(runtime: Runtime, message_id: int) -> Callable[[], bool]:
    return lambda: runtime.outbox.get(message_id, events=False).status == "sent"


def test_dropped_answer_is_found_in_sent_items_and_not_sent_again(
    make_runtime: Callable[..., tuple[Runtime, ConnectorConfig]], admin: SandboxAdmin
) -> None:
    admin.grant(*READ)
    sent_items_delay(admin, 0.5)
    admin.faults({"sendMail": {"kind": "drop", "count": 1}})
    runtime, _ = make_runtime(reconcile_settle_seconds=600)  # a resend would have to wait 10 minutes
    message_id = Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="dropped", text="x")
    run_until(runtime, is_sent(runtime, message_id))
    record = runtime.outbox.get(message_id)
    assert delivered(admin)[record.message_id] == 1
    history = kinds(runtime, message_id)
    assert "in_doubt" in history and history[-1] == "confirmed"
    assert "sentDateTime" in (event(runtime, message_id, "confirmed").detail or "")
    assert "may have been sent" in (event(runtime, message_id, "in_doubt").detail or "")
    stats = admin.stats()
    assert stats["sendMail"] == 1 and stats["listMessages"] >= 1
    assert stats["responses_dropped"] == {"sendMail": 1}


def test_a_copy_filed_after_the_first_lookup_is_still_found_before_any_resend(
    make_runtime: Callable[..., tuple[Runtime, ConnectorConfig]], admin: SandboxAdmin
) -> None:
    admin.grant(*READ)
    sent_items_delay(admin, 100_000)  # filed "late": only once the sandbox clock is moved past it
    admin.faults({"sendMail": {"kind": "drop", "count": 1}})
    runtime, _ = make_runtime(reconcile_settle_seconds=600)
    message_id = Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="late copy", text="x")
    run_until(runtime, lambda: "not_in_sent_yet" in kinds(runtime, message_id))
    admin.client.put("/_sandbox/clock", json={"advance_seconds": 100_001}).raise_for_status()
    run_until(runtime, is_sent(runtime, message_id))
    history = kinds(runtime, message_id)
    assert history.index("in_doubt") < history.index("not_in_sent_yet") < history.index("confirmed")
    assert "resend_checked" not in history and "possible_duplicate" not in history
    assert delivered(admin)[runtime.outbox.get(message_id).message_id] == 1


def test_a_send_that_really_failed_is_sent_again_after_the_settle_time(
    make_runtime: Callable[..., tuple[Runtime, ConnectorConfig]], admin: SandboxAdmin
) -> None:
    admin.grant(*READ)
    admin.faults({"sendMail": {"kind": "reset", "count": 1}})  # the connection breaks before Exchange acts
    runtime, _ = make_runtime(reconcile_settle_seconds=4)
    message_id = Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="lost", text="x")
    run_until(runtime, is_sent(runtime, message_id))
    history = kinds(runtime, message_id)
    assert history.index("in_doubt") < history.index("resend_checked") < history.index("sent")
    doubted, resent = event(runtime, message_id, "in_doubt"), event(runtime, message_id, "resend_checked")
    assert (resent.at - doubted.at).total_seconds() >= 4, "not resent before the settle time"
    assert delivered(admin)[runtime.outbox.get(message_id).message_id] == 1


def test_lookups_stay_inside_the_in_flight_limit(
    make_runtime: Callable[..., tuple[Runtime, ConnectorConfig]], admin: SandboxAdmin
) -> None:
    admin.grant(*READ)
    admin.latency(50)
    sent_items_delay(admin, 0)
    admin.faults({"sendMail": {"kind": "drop"}})  # every answer lost: every message is looked up
    runtime, _ = make_runtime(reconcile_settle_seconds=600)
    relay = Relay(runtime=runtime)
    ids = [relay.enqueue(to=[f"m{i}@example.com"], subject=f"m {i}", text="x") for i in range(24)]
    run_until(runtime, lambda: runtime.outbox.stats().by_status == {"sent": len(ids)})
    counts = delivered(admin)
    assert all(counts[runtime.outbox.get(i, events=False).message_id] == 1 for i in ids)
    stats = admin.stats()
    assert stats["throttled_429"]["total"] == 0
    assert max(stats["max_in_flight"].values()) <= 4
    assert stats["listMessages"] >= len(ids)


def test_without_a_read_permission_the_resend_is_a_visible_possible_duplicate(
    make_runtime: Callable[..., tuple[Runtime, ConnectorConfig]], admin: SandboxAdmin
) -> None:
    admin.faults({"sendMail": {"kind": "drop", "count": 1}})  # the demo app has Mail.Send only
    runtime, _ = make_runtime()
    message_id = Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="twice", text="x")
    run_until(runtime, is_sent(runtime, message_id))
    detail = event(runtime, message_id, "possible_duplicate").detail or ""
    assert "add Mail.ReadBasic.All to avoid" in detail
    assert delivered(admin)[runtime.outbox.get(message_id).message_id] == 2, "sent again, as it must be"
    assert admin.stats()["listMessages"] == 0
    metrics = runtime.metrics.reconciliations.labels("default", "possible_duplicate")._value.get()
    assert metrics == 1


def test_json_sends_say_they_cannot_be_checked_and_mime_is_preferred_with_the_permission(
    make_runtime: Callable[..., tuple[Runtime, ConnectorConfig]], admin: SandboxAdmin
) -> None:
    admin.faults({"sendMail": {"kind": "drop", "count": 1}})
    admin.grant(*READ)
    sent_items_delay(admin, 0)
    honouring, _ = make_runtime(reconcile_prefer_mime=False)
    first = Relay(runtime=honouring).enqueue(to=["a@example.com"], subject="json", text="x", save_to_sent_items=False)
    run_until(honouring, is_sent(honouring, first))
    assert "saveToSentItems=false" in (event(honouring, first, "possible_duplicate").detail or "")
    preferring, _ = make_runtime()
    second = Relay(runtime=preferring).enqueue(to=["b@example.com"], subject="mime", text="x", save_to_sent_items=False)
    run_until(preferring, is_sent(preferring, second))
    [captured] = admin.messages(message_id=preferring.outbox.get(second).message_id)
    assert captured["source"] == "mime"
    assert "sent as MIME" in (event(preferring, second, "sent").detail or "")


@pytest.mark.slow
def test_a_large_message_whose_send_answer_was_lost_is_resolved_by_its_draft(
    make_runtime: Callable[..., tuple[Runtime, ConnectorConfig]], admin: SandboxAdmin
) -> None:
    admin.grant("Mail.Send", "Mail.ReadWrite")
    sent_items_delay(admin, 0.5)
    admin.faults({"sendDraft": {"kind": "drop", "count": 1}})
    runtime, _ = make_runtime(reconcile_settle_seconds=600)
    big = AttachmentSpec("data.bin", os.urandom(5 * 1024 * 1024), "application/octet-stream")
    message_id = Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="big", text="x", attachments=[big])
    run_until(runtime, is_sent(runtime, message_id))
    assert kinds(runtime, message_id)[-1] == "confirmed"
    assert len(admin.messages(limit=100)) == 1
    assert admin.stats()["sendDraft"] == 1


def test_a_message_stored_without_its_message_id_gets_it_stored_at_send_time(
    make_runtime: Callable[..., tuple[Runtime, ConnectorConfig]], admin: SandboxAdmin
) -> None:
    from sqlalchemy import update

    from m365relay.db.models import MessageRow

    runtime, _ = make_runtime()
    message_id = Relay(runtime=runtime).enqueue(to=["a@example.com"], subject="old row", text="x")
    with runtime.db.write() as session:  # a row from before acceptance stored Message-IDs
        session.execute(update(MessageRow).where(MessageRow.id == message_id).values(message_id=None))
    run_until(runtime, is_sent(runtime, message_id))
    stored = runtime.outbox.get(message_id).message_id
    assert stored and delivered(admin)[stored] == 1
