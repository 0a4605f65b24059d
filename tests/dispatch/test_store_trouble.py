"""Database trouble never counts against a message (real PostgreSQL): a failing budget write gives the
message back at once, uncounted, instead of leaving it leased for a whole lease; an in-flight slot whose
connection an administrator ended (pg_terminate_backend) is taken again on a fresh connection, without an
"unexpected error", a traceback or an attempt held against the message."""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
import pytest
from test_dispatcher import enqueue, run_until

from m365relay.connectors import ConnectorConfig
from m365relay.dispatch import AdvisoryGate
from m365relay.runtime import Runtime
from m365relay.settings import Settings
from support import SandboxAdmin, make_settings

pytestmark = pytest.mark.postgres


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Settings:
    return make_settings(tmp_path / "home", database_url=pg_url)


def plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def kinds(runtime: Runtime, message_id: int) -> list[str]:
    return [e.kind for e in runtime.outbox.get(message_id).events]


def test_a_failing_budget_write_gives_the_message_back_uncounted(
    runtime: Runtime, connector: ConnectorConfig, pg_url: str
) -> None:
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION no_space() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = '53100'; END $$"
        )
        conn.execute("CREATE TRIGGER full_disk BEFORE INSERT OR UPDATE ON budget_buckets "
                     "FOR EACH ROW EXECUTE FUNCTION no_space()")  # fmt: skip
    (message_id,) = enqueue(runtime, 1)
    run_until(runtime, lambda: "released" in kinds(runtime, message_id), seconds=60)
    record = runtime.outbox.get(message_id)
    assert record.status == "queued" and record.attempts == 0 and record.last_error is None
    with psycopg.connect(plain(pg_url), autocommit=True) as conn:
        conn.execute("DROP TRIGGER full_disk ON budget_buckets")
    run_until(runtime, lambda: runtime.outbox.get(message_id, events=False).status == "sent", seconds=60)
    record = runtime.outbox.get(message_id)
    assert record.attempts == 1
    assert not {"deferred", "failed"} & {e.kind for e in record.events}


def test_a_lost_slot_connection_is_not_an_attempt(
    runtime: Runtime, connector: ConnectorConfig, admin: SandboxAdmin, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = runtime.dispatcher()
    gate = dispatcher.gate
    assert isinstance(gate, AdvisoryGate)
    (first,) = enqueue(runtime, 1, prefix="first")
    later: list[int] = []

    def progress() -> bool:
        if not later:
            if runtime.outbox.get(first, events=False).status != "sent":
                return False
            with psycopg.connect(plain(pg_url), autocommit=True) as conn:  # as an administrator would
                for pid in gate.backend_pids():
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            later.extend(enqueue(runtime, 3, prefix="later"))
        return all(runtime.outbox.get(i, events=False).status == "sent" for i in later)

    with caplog.at_level(logging.WARNING):
        run_until(runtime, progress, seconds=60, dispatcher=dispatcher)
    for message_id in later:
        record = runtime.outbox.get(message_id)
        assert record.attempts == 1, [e.kind for e in record.events]
        assert "deferred" not in {e.kind for e in record.events}
    assert not [r for r in caplog.records if "unexpected" in r.getMessage() or r.exc_info]
