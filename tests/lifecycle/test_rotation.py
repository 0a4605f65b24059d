"""Zero-downtime rotation against the sandbox: a stream of messages keeps flowing through the dispatcher
while a new secret is staged, verified, promoted and the old one deleted in Azure — and none is lost."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date, timedelta
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from m365relay.connectors import ConnectorConfig, ConnectorUpdate
from m365relay.db.models import AuditRow
from m365relay.dispatch import Dispatcher
from m365relay.errors import ConflictError, ConsentMissingError, InvalidSecretError, NotFoundError, ValidationError
from m365relay.graph import OutgoingMessage
from m365relay.lifecycle import Rotation
from m365relay.runtime import Runtime
from support import SandboxAdmin

NEW_EXPIRES = (date.today() + timedelta(days=700)).isoformat()
WRONG = "wrongQ~0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"
STREAM = 240


def message(connector: ConnectorConfig, n: int) -> tuple[OutgoingMessage, str]:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = connector.user_name, f"r{n}@example.com", f"stream {n}"
    msg["Message-ID"] = f"<rotation-{n}-{os.getpid()}@example.com>"
    msg.set_content(f"message {n}")
    return OutgoingMessage.from_message(msg), msg["Message-ID"]


def test_rotation_during_a_stream_of_mail_loses_nothing(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    admin.latency(15)  # each send holds its slot a little, so the stream is still running while we rotate
    rotation = Rotation(runtime.connectors, runtime.tokens)
    old_secret_id = admin.demo["secret_id"]
    message_ids: list[str] = []
    a_third_queued = asyncio.Event()
    milestones: dict[str, int] = {}

    async def produce() -> None:
        for n in range(STREAM):
            outgoing, message_id = message(connector, n)
            await asyncio.to_thread(runtime.outbox.enqueue, connector.id, outgoing, source="test")
            message_ids.append(message_id)
            if len(message_ids) == STREAM // 3:
                a_third_queued.set()
            await asyncio.sleep(0.004)

    async def rotate_midway(dispatcher: Dispatcher) -> None:
        await a_third_queued.wait()
        new = await asyncio.to_thread(admin.add_secret)
        change = ConnectorUpdate(secret=new["value"], secret_expires=NEW_EXPIRES)
        done = await rotation.rotate("default", change)
        assert done.promoted and done.roles is not None and "Mail.Send" in done.roles
        milestones["promoted_at"] = len(message_ids)
        # The admin then deletes the old secret in Azure. Workers pick the new credential up within a second
        # (they re-read connectors every CONNECTOR_REFRESH_SECONDS); wait until this one has got its first
        # token with it and sent a few more messages — docs/credentials.md gives admins the same advice.
        await until(lambda: admin.stats()["token_success"] >= 3)  # first, rotation's check, the worker's new
        sent = dispatcher.stats.sent
        await until(lambda: dispatcher.stats.sent >= sent + 20)
        await asyncio.to_thread(admin.delete_secret, old_secret_id)
        milestones["deleted_at_sent"] = dispatcher.stats.sent

    async def go() -> Dispatcher:
        dispatcher = runtime.dispatcher()
        stop = asyncio.Event()
        running = asyncio.create_task(dispatcher.run(stop))
        try:
            async with asyncio.timeout(120):
                await asyncio.gather(produce(), rotate_midway(dispatcher))
                await until(lambda: dispatcher.stats.sent >= STREAM or bool(dispatcher.stats.paused), tries=2400)
        finally:
            stop.set()
            await running
            await runtime.sender.aclose()
        return dispatcher

    dispatcher = asyncio.run(go())
    assert not dispatcher.stats.paused, "the connector never paused"
    assert dispatcher.stats.failed == 0 and dispatcher.stats.sent == STREAM
    assert STREAM // 3 <= milestones["promoted_at"] < STREAM, "the rotation happened while mail was being produced"
    assert milestones["deleted_at_sent"] < STREAM, "mail went on after the old secret was deleted"
    delivered = [m["message_id"] for m in admin.messages(limit=STREAM * 2)]
    assert sorted(delivered) == sorted(message_ids), "every message exactly once"
    after = runtime.connectors.get("default")
    assert after.credential is not None and after.credential.verified_at is not None
    assert after.old_credential is not None and after.next_credential is None
    assert after.config_version > connector.config_version
    assert not admin.stats().get("token_failures")


async def until(predicate: Callable[[], bool], tries: int = 600) -> None:
    """Poll a condition (every 50 ms, bounded) — for events that happen in other threads and processes."""
    for _ in range(tries):
        if await asyncio.to_thread(predicate):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def test_a_new_secret_that_does_not_work_stays_staged_and_changes_nothing(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    rotation = Rotation(runtime.connectors, runtime.tokens)
    with pytest.raises(InvalidSecretError) as caught:
        asyncio.run(rotation.rotate("default", ConnectorUpdate(secret=WRONG, secret_expires=NEW_EXPIRES)))
    assert "did not work" in caught.value.message and "stays staged" in caught.value.remedy
    after = runtime.connectors.get("default")
    assert after.credential == connector.credential and after.config_version == connector.config_version
    assert after.next_credential is not None and after.next_credential.verified_at is None
    # The admin fixes it by staging the right one; the wrong one is replaced.
    new = admin.add_secret()
    done = asyncio.run(rotation.rotate("default", ConnectorUpdate(secret=new["value"], secret_expires=NEW_EXPIRES)))
    assert done.promoted and done.connector.credential is not None
    assert done.connector.credential.hint == new["value"][:3]


def test_no_promotion_without_mail_send(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    admin.grant()
    new = admin.add_secret()
    rotation = Rotation(runtime.connectors, runtime.tokens)
    with pytest.raises(ConsentMissingError):
        asyncio.run(rotation.rotate("default", ConnectorUpdate(secret=new["value"], secret_expires=NEW_EXPIRES)))
    assert runtime.connectors.get("default").credential == connector.credential


def test_stage_verify_then_promote_and_confirm_removal(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    rotation = Rotation(runtime.connectors, runtime.tokens)
    with pytest.raises(ValidationError, match="already in use"):
        same = ConnectorUpdate(secret=admin.demo["secret_value"], secret_expires=NEW_EXPIRES)
        runtime.connectors.stage_next("default", same)
    with pytest.raises(ValidationError, match="Secret expires"):
        runtime.connectors.stage_next("default", ConnectorUpdate(secret=admin.add_secret()["value"]))
    with pytest.raises(NotFoundError, match="no staged"):
        asyncio.run(rotation.rotate("default"))

    first = admin.add_secret()
    staged = asyncio.run(
        rotation.rotate("default", ConnectorUpdate(secret=first["value"], secret_expires=NEW_EXPIRES), promote=False)
    )
    assert not staged.promoted and staged.connector.credential == connector.credential
    assert staged.connector.next_credential is not None and staged.connector.next_credential.verified_at is not None
    promoted = asyncio.run(rotation.rotate("default")).connector  # the staged one, verified again, promoted
    assert promoted.credential is not None and promoted.credential.hint == first["value"][:3]
    assert promoted.old_credential is not None and promoted.old_credential.id == connector.credential.id  # type: ignore[union-attr]
    assert promoted.token_key != connector.token_key

    second = admin.add_secret()
    with pytest.raises(ConflictError, match="old credential") as caught:
        asyncio.run(rotation.rotate("default", ConnectorUpdate(secret=second["value"], secret_expires=NEW_EXPIRES)))
    assert "remove-old" in caught.value.remedy
    removed = rotation.remove_old("default")
    assert removed.id == connector.credential.id  # type: ignore[union-attr]
    assert asyncio.run(rotation.rotate("default")).promoted
    with runtime.db.read() as session:
        actions = [a.action for a in session.scalars(select(AuditRow).order_by(AuditRow.id))]
    assert actions.count("connector.promote_next") == 2 and "connector.remove_old" in actions
    assert all(first["value"] not in str(a) for a in actions)


def test_cli_rotate_and_remove_old(runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin) -> None:
    env = {**os.environ, "M365RELAY_HOME": str(runtime.settings.home), "COLUMNS": "300", "NO_COLOR": "1"}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "m365relay", "connector", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    new = admin.add_secret()
    done = run("rotate", "--secret-stdin", "--secret-expires", NEW_EXPIRES, stdin=new["value"])
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout and "promoted" in done.stdout and "remove-old" in done.stdout
    assert new["value"] not in done.stdout + done.stderr

    kept = run("remove-old")  # the old secret still exists in the sandbox: say so, then forget it here
    assert kept.returncode == 0, kept.stderr
    assert "still accepts the old client secret" in kept.stdout and "removed" in kept.stdout

    wrong = run("rotate", "--secret-stdin", "--secret-expires", NEW_EXPIRES, stdin=WRONG)
    assert wrong.returncode == 78 and "AADSTS7000215" in wrong.stderr and "stays staged" in wrong.stderr
    missing = run("remove-old")
    assert missing.returncode == 1 and "no old credential" in missing.stderr
    assert run("rotate", "--secret-expires", NEW_EXPIRES).returncode == 65
