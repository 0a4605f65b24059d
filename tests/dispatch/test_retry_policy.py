"""The retry policy is a function of (error, attempts, age, now): tested with a fixed clock and random source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from m365relay import errors as e
from m365relay.dispatch import RetryPolicy

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def policy(fraction: float = 1.0) -> RetryPolicy:
    return RetryPolicy(base=5, maximum=900, lifetime=timedelta(days=5), probe_base=30, probe_max=900,
                       random_fraction=lambda: fraction)  # fmt: skip


def test_message_errors_fail_at_once() -> None:
    d = policy().decide(e.InvalidRecipientsError("bad"), attempts=1, expires_at=NOW + timedelta(days=5), now=NOW)
    assert (d.action, d.delay) == ("fail", 0.0) and "InvalidRecipientsError" in d.reason


def test_connector_errors_pause() -> None:
    d = policy().decide(e.SecretExpiredError("expired"), attempts=3, expires_at=NOW + timedelta(days=5), now=NOW)
    assert (d.action, d.delay) == ("pause", 30)


def test_retry_after_is_honoured_exactly_even_fractional() -> None:
    d = policy().decide(
        e.ThrottledError("429", retry_after=2.128), attempts=7, expires_at=NOW + timedelta(days=5), now=NOW
    )
    assert (d.action, d.delay) == ("retry", 2.128) and "Retry-After" in d.reason


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    high, low = policy(1.0), policy(0.0)
    assert [high.backoff(n) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert [low.backoff(n) for n in (1, 2, 3, 4)] == [2.5, 5, 10, 20]
    assert high.backoff(30) == 900
    d = high.decide(e.ServiceUnavailableError("503"), attempts=2, expires_at=NOW + timedelta(days=5), now=NOW)
    assert (d.action, d.delay) == ("retry", 10) and "backoff" in d.reason


def test_unexpected_exceptions_are_retried_not_lost() -> None:
    d = policy().decide(RuntimeError("bug"), attempts=1, expires_at=NOW + timedelta(days=5), now=NOW)
    assert d.action == "retry"


def test_queue_lifetime_turns_a_retry_into_a_failure() -> None:
    deadline = NOW + timedelta(seconds=3)
    d = policy().decide(e.ThrottledError("429", retry_after=5), attempts=40, expires_at=deadline, now=NOW)
    assert d.action == "fail" and "queue lifetime" in d.reason


def test_an_operator_retry_extends_the_deadline() -> None:
    # A message created six days ago and requeued by an admin has a fresh deadline: a 429 is retried.
    d = policy().decide(e.ThrottledError("429", retry_after=2), attempts=1, expires_at=NOW + timedelta(days=5), now=NOW)
    assert d.action == "retry"


def test_probe_delay_grows_to_a_ceiling() -> None:
    p = policy()
    assert [p.probe_delay(n) for n in (1, 2, 3, 10)] == [30, 60, 120, 900]
