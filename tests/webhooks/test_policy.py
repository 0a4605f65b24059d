"""The webhook retry policy as a decision object, on fixed times (no clock, no sleeping)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from m365relay.events.policy import WebhookRetryPolicy

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_delays_double_from_the_base_up_to_the_maximum_with_bounded_jitter() -> None:
    policy = WebhookRetryPolicy(base=5, maximum=21_600, rng=random.Random(1))
    for attempts, raw in ((1, 5), (2, 10), (3, 20), (10, 2560), (13, 20_480), (14, 21_600), (40, 21_600)):
        delay = policy.delay(attempts)
        assert raw * 0.8 <= delay <= raw * 1.2, (attempts, delay)


def test_retries_stop_three_days_after_the_event() -> None:
    policy = WebhookRetryPolicy(base=5, maximum=21_600, jitter=0, max_age=timedelta(days=3))
    now, attempts = T0, 1
    while (when := policy.next_attempt(attempts, T0, now)) is not None:
        assert when - T0 <= timedelta(days=3)
        now, attempts = when, attempts + 1
    assert timedelta(days=3) - (now - T0) < timedelta(hours=6), "the last try is within one step of the limit"
    assert 15 <= attempts <= 30, attempts


def test_an_endpoint_is_disabled_only_after_failing_for_the_whole_period() -> None:
    policy = WebhookRetryPolicy(disable_after=timedelta(days=3))
    assert not policy.should_disable(None, T0)
    assert not policy.should_disable(T0, T0 + timedelta(days=2, hours=23))
    assert policy.should_disable(T0, T0 + timedelta(days=3))
