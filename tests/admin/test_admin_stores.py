"""The admin UI's own storage — sessions and the sign-in lockout count — on SQLite and PostgreSQL alike."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from m365relay.access.admins import AdminStore
from m365relay.clock import ManualClock
from m365relay.db.models import AdminSessionRow
from m365relay.runtime import Runtime
from m365relay.web.admin.audit_log import last_consent, record
from m365relay.web.admin.sessions import ABSOLUTE_LIFETIME, AdminSessions
from m365relay.web.admin.throttle import LoginThrottle
from support import make_settings


@pytest.fixture
def store_runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    rt = Runtime(make_settings(tmp_path / "home", database_url), clock=ManualClock(datetime(2026, 3, 1, tzinfo=UTC)))
    yield rt
    rt.close()


def test_sessions(store_runtime: Runtime) -> None:
    clock = store_runtime.clock
    assert isinstance(clock, ManualClock)
    user = AdminStore(store_runtime.db, clock=clock).create_user("bob", "a long enough password")
    sessions = AdminSessions(store_runtime.db, clock, timedelta(minutes=30))
    cookie, created = sessions.create(user)
    with store_runtime.db.read() as session:
        assert session.scalars(select(AdminSessionRow.id)).all() == [hashlib.sha256(cookie.encode()).hexdigest()]
    clock.advance(29 * 60)
    found = sessions.load(cookie).session
    assert found is not None and found.username == "bob" and found.csrf_token == created.csrf_token
    sessions.save_data(found.id, {"consent": {"state": "s"}, "notices": [{"title": "t"}]})
    assert sessions.load(cookie).session.data["consent"] == {"state": "s"}  # type: ignore[union-attr]
    assert sessions.load("not-a-cookie").session is None and sessions.load("x" * 500).session is None
    clock.advance(31 * 60)
    lookup = sessions.load(cookie)
    assert lookup.session is None and lookup.expired
    assert sessions.load(cookie).expired is False, "gone, not expired twice"
    # Busy all day long: still ends after the absolute lifetime.
    cookie, _ = sessions.create(user)
    for _ in range(int(ABSOLUTE_LIFETIME / timedelta(minutes=20))):
        clock.advance(20 * 60)
        sessions.load(cookie)
    clock.advance(20 * 60)
    assert sessions.load(cookie).expired


def test_the_lockout_count(store_runtime: Runtime) -> None:
    clock = store_runtime.clock
    assert isinstance(clock, ManualClock)
    throttle = LoginThrottle(store_runtime.db, clock, attempts=3)
    for _ in range(3):
        assert throttle.check("10.0.0.1").allowed
        record(store_runtime, "anonymous", "admin.login_failed", "bob", {}, "10.0.0.1")
        clock.advance(60)
    verdict = throttle.check("10.0.0.1")
    assert not verdict.allowed and verdict.failures == 3
    assert verdict.retry_at == datetime(2026, 3, 1, 0, 15, tzinfo=UTC), "when the first failure leaves the window"
    assert throttle.check("10.0.0.2").allowed, "per address"
    clock.set(datetime(2026, 3, 1, 0, 15, 1, tzinfo=UTC))
    assert throttle.check("10.0.0.1").allowed
    record(store_runtime, "web:bob", "admin.login", "bob", {}, "10.0.0.1")
    clock.advance(1)
    record(store_runtime, "anonymous", "admin.login_failed", "bob", {}, "10.0.0.1")
    assert throttle.check("10.0.0.1").failures == 1, "a success starts the count again"


def test_last_consent(store_runtime: Runtime) -> None:
    assert last_consent(store_runtime, "default") is None
    record(store_runtime, "web:a", "connector.consent", "default", {"outcome": "declined"}, None)
    record(store_runtime, "web:a", "connector.consent", "other", {"outcome": "granted"}, None)
    found = last_consent(store_runtime, "default")
    assert found is not None and found.detail == {"outcome": "declined"}
