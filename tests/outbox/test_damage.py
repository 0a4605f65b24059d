"""Damaged rows and bytes, on both backends: a row that cannot be read is failed on its own with the reason
(the rest of the claim goes on), stored bytes are checked against the checksum taken at acceptance, and
mail stuck in ``sending`` past its queue lifetime is expired like waiting mail."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from m365relay.errors import CorruptMessageError
from support_outbox import Env

OWNER = "worker-a"


def corrupt(env: Env, sql: str, **params: object) -> None:
    with env.db.write() as session:
        session.execute(text(sql), params)


@pytest.mark.parametrize("value", ["42", '"someone@example.com"', "null", '{"to": "x@example.com"}'])
def test_a_row_with_unreadable_recipients_fails_alone(env: Env, value: str) -> None:
    ids = [env.enqueue(n) for n in range(4)]
    bad = ids[1]
    # A JSON value that is not a list of addresses, as a bad manual edit or a damaged page leaves it.
    cast = "CAST(:v AS JSON)" if env.db.is_postgres else ":v"
    corrupt(env, f"UPDATE messages SET recipients = {cast} WHERE id = :id", v=value, id=bad)
    claimed = env.outbox.claim(OWNER, env.connectors[0], 10, lease_seconds=600)
    assert [c.id for c in claimed] == [i for i in ids if i != bad]
    record = env.outbox.get(bad)
    assert record.status == "failed" and record.lease_owner is None
    assert record.last_error is not None and record.last_error.kind == "CorruptMessage"
    assert "recipients" in (record.last_error.message or "")
    # Not claimed again with the healthy ones, and its attempts do not climb.
    env.clock.advance(120)
    assert env.outbox.claim(OWNER, env.connectors[0], 10, lease_seconds=60) == []
    assert env.outbox.get(bad, events=False).attempts == 1


def test_small_bodies_are_checked_against_their_checksum(env: Env) -> None:
    good, bad = env.enqueue(0), env.enqueue(1)
    corrupt(env, "UPDATE message_chunks SET data = :d WHERE message_id = :id AND seq = 1", d=b"tampered", id=bad)
    claimed = env.outbox.claim(OWNER, env.connectors[0], 10, lease_seconds=60)
    assert [c.id for c in claimed] == [good]
    record = env.outbox.get(bad)
    assert record.status == "failed" and "checksum" in (record.last_error.message or "")  # type: ignore[union-attr]


def test_large_bodies_are_checked_when_opened(env: Env) -> None:
    message_id = env.outbox.enqueue(env.connectors[0], env.message(size=600_000)).id
    with env.outbox.open_body(message_id) as body:  # intact: opens
        assert body.read(1)
    corrupt(env, "UPDATE message_chunks SET data = :d WHERE message_id = :id AND seq = 1", d=b"x" * 10, id=message_id)
    (claimed,) = env.outbox.claim(OWNER, env.connectors[0], 10, lease_seconds=60)
    assert claimed.body is None  # too large to come with the claim: checked when the dispatcher opens it
    with pytest.raises(CorruptMessageError):
        env.outbox.open_body(message_id)


def test_messages_stuck_in_sending_expire(env: Env) -> None:
    stuck, held = env.enqueue(0), env.enqueue(1)
    env.outbox.claim(OWNER, env.connectors[0], 1, lease_seconds=60)  # takes `stuck`; its worker then vanishes
    env.outbox.claim("worker-b", env.connectors[0], 1, lease_seconds=10_000)  # `held`, by a live worker
    env.clock.advance(3600 + 1)  # past the queue lifetime (3600 s in this environment)
    expired = env.outbox.expire()
    assert expired == [stuck]  # a live lease is left alone: its worker may be sending it right now
    record = env.outbox.get(stuck)
    assert record.status == "failed" and record.lease_owner is None
    assert [e.kind for e in record.events][-1] == "expired"
    assert env.outbox.get(held, events=False).status == "sending"
