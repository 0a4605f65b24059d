"""A permission the admin grants while a token is cached is seen: before a large message is held for a
missing Mail.ReadWrite, one fresh token is fetched. And a message that only needs a permission the admin
can grant waits for it (deferred, with the remedy), instead of failing."""

from __future__ import annotations

import os

from test_dispatcher import enqueue, run_until

from m365relay.compose import AttachmentSpec, MessageSpec
from m365relay.connectors import ConnectorConfig
from m365relay.relay import Relay
from m365relay.runtime import Runtime
from support import SandboxAdmin


def large(runtime: Runtime) -> int:
    spec = MessageSpec(to=["big@example.com"], subject="large", text="see attachment",
                       attachments=[AttachmentSpec("data.bin", os.urandom(5 * 1024 * 1024))])  # fmt: skip
    return Relay(runtime=runtime).enqueue(spec)


def status(runtime: Runtime, message_id: int) -> str:
    return runtime.outbox.get(message_id, events=False).status


def test_a_permission_granted_after_the_token_was_cached_is_used(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    (small,) = enqueue(runtime, 1)
    run_until(runtime, lambda: status(runtime, small) == "sent")  # the process now holds a token
    admin.grant("Mail.Send", "Mail.ReadWrite")  # the admin adds the permission meanwhile
    big = large(runtime)
    run_until(runtime, lambda: status(runtime, big) not in ("queued", "sending"))
    record = runtime.outbox.get(big)
    assert record.status == "sent", record.last_error
    assert admin.stats()["createUploadSession"] == 1


def test_a_message_needing_a_grantable_permission_waits_for_it(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    big = large(runtime)
    (small,) = enqueue(runtime, 1, prefix="small")
    run_until(runtime, lambda: status(runtime, big) == "deferred" and status(runtime, small) == "sent")
    record = runtime.outbox.get(big)
    assert record.last_error is not None and record.last_error.kind == "PermissionNeededError"
    assert "Mail.ReadWrite" in (record.last_error.remedy or "")
    assert not runtime.connectors.get(connector.id).paused  # other mail keeps going


def test_the_connector_says_what_to_grant_and_forgets_it_once_granted(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin
) -> None:
    big = large(runtime)
    run_until(runtime, lambda: status(runtime, big) == "deferred")
    waiting = runtime.connectors.get(connector.id)
    assert not waiting.paused  # other mail keeps going
    assert waiting.state_error_kind == "PermissionNeededError"
    assert "Mail.ReadWrite" in (waiting.state_remedy or "")
    admin.grant("Mail.Send", "Mail.ReadWrite")  # the admin follows the remedy
    runtime.outbox.retry(big, actor="test")  # instead of waiting the five minutes of its recheck
    run_until(runtime, lambda: status(runtime, big) == "sent")
    done = runtime.connectors.get(connector.id)
    assert done.state_reason is None and done.state_error_kind is None and not done.paused
