"""Accepted mail is never lost: 250 only after the commit; when the relay cannot store mail (database down,
queue over max_queue_depth) the client gets 451 4.3.0, keeps the message, and its retry succeeds."""

from __future__ import annotations

import smtplib
import uuid
from pathlib import Path

import psycopg
import pytest
from smtp_support import Relay, StartRelay, assert_reply, message

from m365relay.clock import ManualClock
from m365relay.ingress import smtp_replies as R
from support import SandboxAdmin


def submit(client: smtplib.SMTP, subject: str) -> tuple[int, bytes]:
    """MAIL and RCPT, then DATA: the reply to the message."""
    client.mail("app@example.com")
    client.rcpt("someone@example.com")
    return client.data(message(subject=subject))


def assert_retry_delivers_once(relay: Relay, client: smtplib.SMTP, admin: SandboxAdmin) -> None:
    assert_reply(*submit(client, "kept by the client"), R.QUEUED)  # the client's retry
    client.quit()
    [queued] = relay.queued()
    assert queued.subject == "kept by the client"
    relay.deliver()
    assert [m["subject"] for m in admin.messages()] == ["kept by the client"]


def test_sqlite_outage_gives_451_and_the_retry_succeeds(
    start_relay: StartRelay, tmp_path: Path, admin: SandboxAdmin
) -> None:
    db_dir = tmp_path / "db"
    relay = start_relay(database_url=f"sqlite:///{db_dir / 'relay.db'}")
    client = relay.smtp()
    client.mail("app@example.com")
    client.rcpt("someone@example.com")
    # The database file disappears for real (its directory is moved away); pooled connections, which
    # still hold the old files open, are closed so the next write has to open the file — and cannot.
    away = db_dir.rename(tmp_path / "db-away")
    relay.runtime.db.dispose()
    code, reply = client.data(message(subject="kept by the client"))
    assert_reply(code, reply, R.STORE_UNAVAILABLE)
    away.rename(db_dir)
    assert relay.queued() == [], "nothing half-written"
    assert_retry_delivers_once(relay, client, admin)


@pytest.mark.postgres
def test_postgresql_outage_gives_451_and_the_retry_succeeds(
    start_relay: StartRelay, pg_url: str, admin: SandboxAdmin
) -> None:
    relay = start_relay(database_url=pg_url)
    schema = pg_url.rsplit("search_path%3D", 1)[1]
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://").split("?", 1)[0]
    client = relay.smtp()
    client.mail("app@example.com")
    client.rcpt("someone@example.com")
    parked = f"parked_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(plain, autocommit=True) as conn:  # the relay's tables vanish from its search path
        conn.execute(f'ALTER SCHEMA "{schema}" RENAME TO "{parked}"')
    try:
        code, reply = client.data(message(subject="kept by the client"))
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'ALTER SCHEMA "{parked}" RENAME TO "{schema}"')
    assert code == 451 and reply.decode().startswith("4.3.0"), (code, reply)
    assert relay.queued() == []
    assert_retry_delivers_once(relay, client, admin)


def test_a_backlog_over_max_queue_depth_gives_451(start_relay: StartRelay) -> None:
    clock = ManualClock()
    relay = start_relay(max_queue_depth=1, clock=clock)
    client = relay.smtp()
    for n in range(2):
        assert_reply(*submit(client, f"message {n}"), R.QUEUED)
    clock.advance(2)  # the relay reads the queue depth at most once a second
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail("app@example.com", ["someone@example.com"], message())
    assert_reply(refused.value.smtp_code, refused.value.smtp_error, R.QUEUE_FULL)
    client.quit()
    assert len(relay.queued()) == 2


def test_stopping_says_421_to_idle_sessions(relay: Relay) -> None:
    with relay.raw() as raw:
        raw.reply()
        raw.command("EHLO client.example")
        relay.thread.stop()
        assert_reply(*raw.reply(), R.SHUTTING_DOWN)
