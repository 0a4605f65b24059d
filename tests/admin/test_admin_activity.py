"""The dashboard's numbers (``activity.py``) on real SQLite and PostgreSQL: an outbox built cheaply with one
bulk INSERT … SELECT (M365RELAY_ACTIVITY_ROWS rows, 200,000 by default; 10,000,000 works the same, only
slower to build), counted per hour and per day, checked against plain COUNT queries; every query the
dashboard runs uses an index (EXPLAIN on both backends); ``GET /api/v1/stats`` with a read key, and a key bound
to one connector sees only that one. No timed assertions: speed shows as "no full scan", not as seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from admin_support import LiveServer
from sqlalchemy import text

from m365relay.access.api_keys import ApiKeyStore
from m365relay.activity import Activity, hour_of, hour_statements, view_statements
from m365relay.clock import ManualClock
from m365relay.connectors import ConnectorUpdate
from m365relay.runtime import Runtime
from support import make_settings

ROWS = int(os.environ.get("M365RELAY_ACTIVITY_ROWS", "200000"))
NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
SPAN = timedelta(days=31)


@pytest.fixture
def rt(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(make_settings(tmp_path / "home", database_url), clock=ManualClock(NOW))
    for name, tenant in (("default", "contoso.onmicrosoft.com"), ("billing", "fabrikam.onmicrosoft.com")):
        runtime.connectors.save(
            name,
            ConnectorUpdate(
                client_id="11111111-2222-3333-4444-555555555555",
                tenant_id=tenant,
                user_name=f"noreply@{tenant}",
                secret="abcQ~" + "x1" * 17,
                secret_expires=(NOW + timedelta(days=100)).date(),
            ),
        )
    yield runtime
    runtime.close()


def bulk_outbox(runtime: Runtime, rows: int) -> None:
    """``rows`` messages spread evenly over the last 31 days, in one statement: every 10th failed, every 10th
    (+1) still queued, the rest sent 30 s after acceptance; every third to the first connector, the rest to
    the second; plus a deferral event for every 7th message."""
    start = NOW - SPAN
    step = SPAN.total_seconds() / rows
    ids = [c.id for c in runtime.connectors.all()]
    params = {"rows": rows, "start": start.replace(tzinfo=None), "step": step, "a": ids[0], "b": ids[1]}
    columns = (
        "connector_id, status, recipients, recipient_count, size, save_to_sent_items, source, attempts, "
        "next_attempt_at, expires_at, created_at, updated_at, sent_at"
    )
    status = "CASE WHEN i % 10 = 0 THEN 'failed' WHEN i % 10 = 1 THEN 'queued' ELSE 'sent' END"
    connector = "CASE WHEN i % 3 = 0 THEN :a ELSE :b END"
    if runtime.db.is_postgres:
        at = "(CAST(:start AS timestamp) + make_interval(secs => i * :step))"
        source = f"FROM generate_series(0, {rows - 1}) AS i"
        recipients = "CAST('[\"x@example.com\"]' AS json)"
        values = (
            f"{connector}, {status}, {recipients}, 1, 100, true, 'api', 1, {at}, {at} + interval '5 days', {at}, "
            f"{at} + interval '30 seconds', CASE WHEN i % 10 > 1 THEN {at} + interval '30 seconds' END"
        )
        events = "SELECT id, created_at + interval '10 seconds', 'deferred' FROM messages WHERE id % 7 = 0"
    else:
        at = "(datetime(:start, '+' || CAST(i * :step AS INTEGER) || ' seconds') || '.000000')"
        later = "(datetime(:start, '+' || (CAST(i * :step AS INTEGER) + 30) || ' seconds') || '.000000')"
        numbers = f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows - 1})"
        source = f"FROM ({numbers} SELECT i FROM n)"
        values = (
            f"{connector}, {status}, '[\"x@example.com\"]', 1, 100, 1, 'api', 1, {at}, {at}, {at}, {later}, "
            f"CASE WHEN i % 10 > 1 THEN {later} END"
        )
        events = (
            "SELECT id, datetime(created_at, '+10 seconds') || '.000000', 'deferred' FROM messages WHERE id % 7 = 0"
        )
    with runtime.db.write() as session:
        session.execute(text(f"INSERT INTO messages ({columns}) SELECT {values} {source}"), params)
        session.execute(text(f"INSERT INTO message_events (message_id, at, kind) {events}"))
    with runtime.db.write() as session:
        session.execute(text("ANALYZE"))


def count(runtime: Runtime, sql: str, **params: Any) -> int:
    with runtime.db.read() as session:
        return int(session.execute(text(sql), params).scalar_one())


def naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def test_counts_per_hour_and_day_match_plain_counts(rt: Runtime) -> None:
    bulk_outbox(rt, ROWS)
    activity = Activity(rt.db, rt.clock)
    report = {a.connector.name: a for a in activity.report(rt.connectors.all())}
    assert set(report) == {"default", "billing"}
    default = report["default"]
    cid = default.connector.id
    assert len(default.hours) == 24 and len(default.days) == 30
    assert default.hours[-1].start == datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert default.days[-1].start.date() == date(2026, 11, 30)
    # Every hour and day agrees with a plain COUNT over the messages table.
    for bucket, width in [*((h, timedelta(hours=1)) for h in default.hours[::5]), (default.days[3], timedelta(days=1))]:
        start, end = naive(bucket.start), naive(min(bucket.start + width, NOW))
        where = "connector_id = :c AND {col} >= :s AND {col} < :e"
        bounds = {"c": cid, "s": start, "e": end}
        assert bucket.accepted == count(
            rt, "SELECT count(*) FROM messages WHERE " + where.format(col="created_at"), **bounds
        )
        assert bucket.sent == count(
            rt, "SELECT count(*) FROM messages WHERE status = 'sent' AND " + where.format(col="updated_at"), **bounds
        )
        assert bucket.failed == count(
            rt, "SELECT count(*) FROM messages WHERE status = 'failed' AND " + where.format(col="updated_at"), **bounds
        )
        assert bucket.deferred == count(
            rt,
            "SELECT count(*) FROM message_events e JOIN messages m ON m.id = e.message_id WHERE e.kind = 'deferred' "
            "AND m.connector_id = :c AND e.at >= :s AND e.at < :e",
            **bounds,
        )
    assert default.totals("accepted") > 0 and default.totals("failed") > 0 and default.totals("deferred") > 0
    assert default.waiting == count(
        rt, "SELECT count(*) FROM messages WHERE status = 'queued' AND connector_id = :c", c=cid
    )
    assert default.oldest_waiting_at is not None and default.oldest_waiting_at < NOW - timedelta(days=30)
    # Closed hours were kept once; a second look adds none and says the same.
    kept = count(rt, "SELECT count(DISTINCT hour) FROM activity_hours")
    assert kept >= 24 * 30 and activity.rollup(NOW) == 0
    again = {a.connector.name: a for a in activity.report(rt.connectors.all())}
    assert again["default"].hours == default.hours and again["default"].days == default.days
    # The open hour counts live: a new message shows at once.
    with rt.db.write() as session:
        session.execute(
            text(
                "INSERT INTO messages (connector_id, status, recipients, recipient_count, size, save_to_sent_items, "
                "source, attempts, next_attempt_at, expires_at, created_at, updated_at) VALUES (:c, 'queued', "
                "'[]', 1, 1, :t, 'api', 0, :n, :n, :n, :n)"
            ),
            {"c": cid, "t": True, "n": naive(NOW - timedelta(minutes=1))},
        )
    latest = {a.connector.name: a for a in activity.report(rt.connectors.all())}["default"]
    assert latest.hours[-1].accepted == default.hours[-1].accepted + 1
    assert latest.waiting == default.waiting + 1


def plan(runtime: Runtime, statement: Any) -> str:
    dialect = runtime.db.engine.dialect
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN" if runtime.db.is_postgres else "EXPLAIN QUERY PLAN"
    with runtime.db.read() as session:
        rows = session.execute(text(f"{prefix} {sql}")).all()
    return "\n".join(" ".join(str(v) for v in row) for row in rows)


def test_every_dashboard_query_uses_an_index(rt: Runtime) -> None:
    bulk_outbox(rt, ROWS)
    start = datetime(2026, 11, 20, 7, tzinfo=UTC)
    expected = ["ix_messages_created", "ix_messages_outcome", "ix_messages_outcome", "ix_message_events_kind_at"]
    for statement, index in zip(hour_statements(start, start + timedelta(hours=1)), expected, strict=True):
        shown = plan(rt, statement)
        assert index in shown, shown
        if not rt.db.is_postgres:
            # SQLite: "SCAN messages" without "USING … INDEX" would be a full table scan.
            for line in shown.splitlines():
                if "messages" in line and "SCAN" in line:
                    assert "INDEX" in line, shown
    for statement in view_statements():
        shown = plan(rt, statement)
        assert "ix_messages" in shown, shown
        assert "Seq Scan on messages" not in shown, shown


def test_stats_api_with_read_keys(rt: Runtime, tmp_path: Path) -> None:
    bulk_outbox(rt, 20_000)
    keys = ApiKeyStore(rt.db, rt.clock)
    billing = rt.connectors.get("billing")
    reader = keys.create("dashboard", ["read"]).token
    bound = keys.create("billing-reader", ["read"], connector_id=billing.id).token
    sender = keys.create("app", ["send"]).token
    server = LiveServer(rt).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            body = http.get("/api/v1/stats", headers={"Authorization": f"Bearer {reader}"}).raise_for_status().json()
            assert [c["name"] for c in body["connectors"]] == ["default", "billing"]
            first = body["connectors"][0]
            assert len(first["hours"]) == 24 and len(first["days"]) == 30
            assert set(first["hours"][0]) == {"start", "accepted", "sent", "failed", "deferred"}
            assert first["queue"]["waiting"] > 0 and first["queue"]["oldest_waiting_seconds"] > 30 * 86400
            assert first["credential"]["days_left"] == 100 and first["credential"]["lifetime_days"] == 100
            report = {a.connector.name: a for a in Activity(rt.db, rt.clock).report(rt.connectors.all())}
            assert [h["sent"] for h in first["hours"]] == [h.sent for h in report["default"].hours]
            only = http.get("/api/v1/stats", headers={"Authorization": f"Bearer {bound}"}).raise_for_status().json()
            assert [c["name"] for c in only["connectors"]] == ["billing"]
            assert http.get("/api/v1/stats", headers={"Authorization": f"Bearer {sender}"}).status_code == 403
            assert http.get("/api/v1/stats").status_code == 401
    finally:
        server.stop()
    assert hour_of(NOW) * 3600 <= NOW.timestamp()
