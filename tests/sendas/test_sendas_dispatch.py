"""One connector, three mailboxes (PROTOCOL.md §15): mail From each goes through its own
``/users/{mailbox}/sendMail``, and one mailbox throttled or missing holds only its own mail — on SQLite and
on PostgreSQL (the budgets and, there, the advisory in-flight slots are per mailbox)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest
from sendas_support import ALERTS, BILLING, DOMAIN

from m365relay.dispatch import Dispatcher
from m365relay.errors import ValidationError
from m365relay.relay import Relay
from m365relay.runtime import Runtime
from m365relay.sandbox import SandboxServer
from support import SandboxAdmin, connector_update


def enqueue_from(runtime: Runtime, senders: list[str], per_sender: int) -> dict[str, list[int]]:
    relay = Relay(runtime=runtime)
    return {
        sender: [
            relay.enqueue(to=[f"r{i}@example.com"], subject=f"{sender} {i}", text="x", sender=sender)
            for i in range(per_sender)
        ]
        for sender in senders
    }


def run_until(runtime: Runtime, condition: Callable[[], bool], seconds: float = 120) -> Dispatcher:
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
    return dispatcher


def sent_through(admin: SandboxAdmin) -> collections.Counter[tuple[str, str]]:
    """(the mailbox in the sendMail URL, the From recipients see) of every captured message."""
    return collections.Counter((m["mailbox"].lower(), m["from"].lower()) for m in admin.messages(limit=10000))


def all_sent(runtime: Runtime, ids: list[int]) -> bool:
    return all(runtime.outbox.get(i, events=False).status == "sent" for i in ids)


def test_mail_from_each_mailbox_goes_through_its_own_send_mail(
    sendas_runtime: Runtime, admin: SandboxAdmin, mailboxes: list[str]
) -> None:
    ids = enqueue_from(sendas_runtime, mailboxes, 5)
    run_until(sendas_runtime, lambda: all_sent(sendas_runtime, [i for group in ids.values() for i in group]))
    assert sent_through(admin) == {(mailbox, mailbox): 5 for mailbox in mailboxes}


def test_a_from_outside_the_list_still_goes_through_the_user_name_mailbox(
    sendas_runtime: Runtime, admin: SandboxAdmin, mailboxes: list[str]
) -> None:
    """Not a send-as mailbox: the User Name mailbox sends it, as before — and Exchange refuses another From
    without Send As rights (403 ErrorSendAsDenied), which fails only that message."""
    ids = enqueue_from(sendas_runtime, [f"stranger@{DOMAIN}", BILLING], 1)
    run_until(sendas_runtime, lambda: sendas_runtime.outbox.pending_count() == 0)
    stranger = sendas_runtime.outbox.get(ids[f"stranger@{DOMAIN}"][0], events=False)
    assert stranger.status == "failed" and stranger.last_error is not None
    assert stranger.last_error.code == "ErrorSendAsDenied"
    assert sent_through(admin) == {(BILLING, BILLING): 1}


def test_429s_on_one_mailbox_leave_the_other_two_flowing(
    sendas_runtime: Runtime, admin: SandboxAdmin, mailboxes: list[str]
) -> None:
    # Every sendMail through billing@ is throttled for a long while; the others are untouched.
    admin.faults(
        {"sendMail": {"status": 429, "code": "ApplicationThrottled", "retry_after": "600", "mailbox": BILLING}}
    )
    ids = enqueue_from(sendas_runtime, mailboxes, 12)
    others = [i for sender, group in ids.items() if sender != BILLING for i in group]
    run_until(sendas_runtime, lambda: all_sent(sendas_runtime, others))

    assert sent_through(admin) == {(m, m): 12 for m in mailboxes if m != BILLING}
    held = [sendas_runtime.outbox.get(i) for i in ids[BILLING]]
    # Waiting: deferred to the end of the hold, or given back (queued) if it was already waiting for a slot.
    assert all(r.status in ("deferred", "queued") for r in held), collections.Counter(r.status for r in held)
    # Its mail waits with the reason, in the message's events (what `queue show` prints).
    details = " ".join(e.detail or "" for r in held for e in r.events)
    assert f"mailbox {BILLING} throttled" in details
    # Far fewer throttled requests than messages: the first 429 held the whole mailbox, not each message.
    assert admin.stats()["faults_injected"]["sendMail"] <= 8
    assert sendas_runtime.connectors.get("default").state == "active"


def test_a_missing_send_as_mailbox_holds_only_its_mail(
    sendas_runtime: Runtime, admin: SandboxAdmin, sandbox: SandboxServer, mailboxes: list[str]
) -> None:
    ghost = f"ghost@{DOMAIN}"  # listed, but no such mailbox in the tenant: 404 ErrorInvalidUser
    sendas_runtime.connectors.save("default", connector_update(sandbox, send_as=[BILLING, ALERTS, ghost]))
    ids = enqueue_from(sendas_runtime, [*mailboxes, ghost], 3)
    others = [i for sender, group in ids.items() if sender != ghost for i in group]
    run_until(sendas_runtime, lambda: all_sent(sendas_runtime, others))

    waiting = [sendas_runtime.outbox.get(i) for i in ids[ghost]]
    assert all(r.status == "deferred" and r.attempts == 0 for r in waiting), [(r.status, r.attempts) for r in waiting]
    assert all(r.last_error is not None and r.last_error.code == "ErrorInvalidUser" for r in waiting)
    assert any(f"mailbox {ghost} cannot send" in (e.detail or "") for r in waiting for e in r.events)
    connector = sendas_runtime.connectors.get("default")
    assert connector.state == "active", "one missing send-as mailbox must not pause the connector"


def test_the_send_as_list_is_validated_and_stored_lower_case(sendas_runtime: Runtime, sandbox: SandboxServer) -> None:
    saved = sendas_runtime.connectors.save(
        "default", connector_update(sandbox, send_as=["Sales@Contoso.com", "@Fabrikam.COM"])
    )
    assert saved.send_as == ("sales@contoso.com", "@fabrikam.com")
    assert saved.mailbox_for("SALES@contoso.com") == "sales@contoso.com"
    assert saved.mailbox_for("anyone@fabrikam.com") == "anyone@fabrikam.com"
    assert saved.mailbox_for("other@contoso.com") == ""
    for bad in (["not an address"], ["@nodot"], ["a@b@c.com"]):
        with pytest.raises(ValidationError, match="Also send from"):
            sendas_runtime.connectors.save("default", connector_update(sandbox, send_as=bad))
    assert sendas_runtime.connectors.get("default").send_as == ("sales@contoso.com", "@fabrikam.com")
    cleared = sendas_runtime.connectors.save("default", connector_update(sandbox, send_as=[]))
    assert cleared.send_as == ()
