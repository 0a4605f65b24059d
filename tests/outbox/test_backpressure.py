"""Backpressure bounds on both backends: depth and age of the waiting mail, read at most once a second."""

from __future__ import annotations

from m365relay.connectors import ConnectorStore, SecretBox
from m365relay.outbox.backpressure import Backpressure
from support_outbox import Env


def test_depth_and_age_bounds(env: Env) -> None:
    pressure = Backpressure(env.db, env.clock, max_depth=3, max_age_seconds=600)
    assert pressure.check() is None
    for n in range(3):
        env.enqueue(n)
    assert pressure.check() is None, "cached for a second"
    env.clock.advance(1.1)
    found = pressure.check()
    assert found is not None and "3 messages" in found.reason and found.retry_after == 60

    relaxed = Backpressure(env.db, env.clock, max_depth=100, max_age_seconds=600)
    assert relaxed.check() is None
    env.clock.advance(601)
    relaxed_again = Backpressure(env.db, env.clock, max_depth=100, max_age_seconds=600)
    aged = relaxed_again.check()
    assert aged is not None and "minutes old" in aged.reason

    for c in env.outbox.claim("w", env.connectors[0], 10, 60):
        env.outbox.mark_sent(c.id, "w", "r")
    env.clock.advance(1.1)
    assert relaxed_again.check() is None, "sent mail no longer counts"


def test_a_paused_connectors_backlog_does_not_close_the_door(env: Env) -> None:
    from m365relay.errors import SecretExpiredError

    store = ConnectorStore(env.db, SecretBox.from_settings(None, env.home), env.clock)
    env.enqueue(1, env.connectors[1])
    store.pause(env.connectors[1], SecretExpiredError("expired"), env.clock.now())
    env.clock.advance(3600)
    assert Backpressure(env.db, env.clock, max_depth=100, max_age_seconds=600).check() is None
