"""The per-mailbox limits on both databases: each (connector, mailbox) has its own request and recipient
budgets and its own in-flight slots (PROTOCOL.md §7, §15); one mailbox at its limit leaves the others free."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sendas_support import BILLING

from m365relay.dispatch import AdvisoryGate, BudgetLimits, Budgets, LocalGate
from m365relay.dispatch.gate import mailbox_number
from support_outbox import Env


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(database_url, str(tmp_path))
    yield e
    e.close()


def test_each_mailbox_has_its_own_budgets(env: Env) -> None:
    limits = BudgetLimits(requests=1000, request_window=600, recipients=10, recipient_window=3600)
    budgets = Budgets(env.db, env.clock, limits)
    connector = env.connectors[0]
    for _ in range(10):
        assert budgets.reserve(connector, 1) is None
    assert budgets.reserve(connector, 1) is not None, "the User Name mailbox has spent its 10 recipients"
    for _ in range(10):  # billing@ of the same connector still has all of its own
        assert budgets.reserve(connector, 1, 1, BILLING) is None
    assert budgets.reserve(connector, 1, 1, BILLING) is not None
    budgets.release()
    assert budgets.usage(connector) == (10, 10) and budgets.usage(connector, BILLING) == (10, 10)
    # A second process on the same database sees the same per-mailbox counts.
    other = Budgets(env.db, env.clock, limits)
    assert other.reserve(connector, 1, 1, BILLING) is not None
    assert other.reserve(connector, 1, 1, "alerts@contoso.onmicrosoft.com") is None


def test_each_mailbox_has_its_own_in_flight_slots(env: Env) -> None:
    connector = env.connectors[0]

    async def go() -> None:
        gate = AdvisoryGate(env.db, 2) if env.db.is_postgres else LocalGate(2)
        try:
            async with gate.slot(connector), gate.slot(connector):  # the User Name mailbox is full ...
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.3), gate.slot(connector):
                        pass
                async with gate.slot(connector, BILLING), gate.slot(connector, BILLING):  # ... billing@ is not
                    assert gate.in_flight(connector, BILLING) == 2 and gate.in_flight(connector) == 2
        finally:
            await gate.aclose()

    asyncio.run(go())


def test_mailbox_lock_numbers_stay_32_bit_and_keep_the_old_one_for_the_user_name() -> None:
    assert mailbox_number(7, "") == 7
    numbers = {mailbox_number(7, f"m{i}@contoso.com") for i in range(1000)}
    assert all(1_000_000 <= n < 2_000_000 for n in numbers) and len(numbers) > 990
    assert max(numbers) * 1024 + 1023 < 2**31, "fits pg_try_advisory_lock(int, int)"
