"""Budgets are leased in chunks and spent locally: what the database counts stays within one chunk of what
was really sent, the windows roll, and several processes share one budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from m365relay.db.models import BudgetBucketRow
from m365relay.dispatch import BudgetLimits, Budgets
from m365relay.dispatch.budget import CHUNK_RECIPIENTS, CHUNK_REQUESTS
from support_outbox import Env


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(database_url, str(tmp_path))
    yield e
    e.close()


def test_counted_usage_stays_within_a_chunk_of_real_usage(env: Env) -> None:
    budgets = Budgets(env.db, env.clock, BudgetLimits())
    connector = env.connectors[0]
    sent_requests = sent_recipients = 0
    for n in range(300):
        recipients = 1 if n % 10 else 7  # mostly one recipient, now and then several
        assert budgets.reserve(connector, recipients) is None
        sent_requests, sent_recipients = sent_requests + 1, sent_recipients + recipients
    counted_requests, counted_recipients = budgets.usage(connector)
    assert sent_requests <= counted_requests <= sent_requests + CHUNK_REQUESTS
    assert sent_recipients <= counted_recipients <= sent_recipients + CHUNK_RECIPIENTS


def test_the_budget_defers_then_the_window_rolls(env: Env) -> None:
    limits = BudgetLimits(requests=1000, request_window=600, recipients=10, recipient_window=3600)
    budgets = Budgets(env.db, env.clock, limits)
    connector = env.connectors[0]
    for _ in range(10):
        assert budgets.reserve(connector, 1) is None
    wait = budgets.reserve(connector, 1)
    assert wait is not None and 3500 < wait <= 3660, "wait until the oldest minute leaves the hour"
    env.clock.advance(wait)
    assert budgets.reserve(connector, 1) is None


def test_processes_share_one_budget(env: Env) -> None:
    limits = BudgetLimits(recipients=100, recipient_window=3600)
    one, two = Budgets(env.db, env.clock, limits), Budgets(env.db, env.clock, limits)
    granted = 0
    for _ in range(100):
        for budgets in (one, two):
            if budgets.reserve(env.connectors[0], 1) is None:
                granted += 1
    assert granted <= 100, "together they never exceed the mailbox's budget"
    assert granted >= 100 - 2 * CHUNK_RECIPIENTS, "and each wastes at most its unspent chunk"


def test_a_quiet_relay_does_not_use_up_its_budget_on_unspent_chunks(env: Env) -> None:
    """One message every few minutes: each send leases a chunk, the chunk's remainder expires unspent. It must
    be given back, or 157 sparse messages would count as 10,000 recipients and hold mail back for a day."""
    limits = BudgetLimits(requests=500, request_window=600, recipients=200, recipient_window=86_400)
    budgets = Budgets(env.db, env.clock, limits)
    connector = env.connectors[0]
    for n in range(150):
        assert budgets.reserve(connector, 1) is None, f"send {n + 1} was held back"
        env.clock.advance(120)
    counted_requests, counted_recipients = budgets.usage(connector)
    assert counted_recipients <= 150 + CHUNK_RECIPIENTS and counted_requests <= 5 + CHUNK_REQUESTS


def test_stopping_gives_the_unspent_chunk_back(env: Env) -> None:
    budgets = Budgets(env.db, env.clock, BudgetLimits())
    connector = env.connectors[0]
    for _ in range(3):
        assert budgets.reserve(connector, 2) is None
    assert budgets.usage(connector) == (CHUNK_REQUESTS, CHUNK_RECIPIENTS), "a whole chunk is counted while leased"
    budgets.release()
    assert budgets.usage(connector) == (3, 6), "what was really spent stays counted; the rest is back"
    assert budgets.reserve(connector, 1) is None and budgets.usage(connector)[1] == 6 + CHUNK_RECIPIENTS


def test_each_minute_counts_what_was_spent_in_it(env: Env) -> None:
    """A top-up in a later minute gives the old remainder back and leases afresh in that minute, so no bucket
    counts less than was sent in it (else the window would forget sends early)."""
    budgets = Budgets(env.db, env.clock, BudgetLimits())
    connector = env.connectors[0]
    first = int(env.clock.now().timestamp() // 60)
    assert budgets.reserve(connector, 60) is None  # leases 64 in this minute, spends 60
    env.clock.advance(60)
    assert budgets.reserve(connector, 60) is None  # 4 left over is not enough: given back, 64 leased anew
    budgets.release()
    with env.db.read() as session:
        counted = {m: n for m, n in session.execute(select(BudgetBucketRow.minute, BudgetBucketRow.recipients))}
    assert counted == {first: 60, first + 1: 60}


def test_buckets_that_left_every_window_are_deleted(env: Env) -> None:
    budgets = Budgets(env.db, env.clock, BudgetLimits())
    connector = env.connectors[0]
    assert budgets.reserve(connector, 1) is None
    env.clock.advance(25 * 3600 + 7 * 60)  # not on the hour: the sweep must not depend on the minute
    assert budgets.reserve(connector, 1) is None
    with env.db.read() as session:
        minutes = list(session.scalars(select(BudgetBucketRow.minute)))
    assert minutes == [int(env.clock.now().timestamp() // 60)]
