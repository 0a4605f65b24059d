"""The in-flight limit per connector (PROTOCOL.md §7: 4 concurrent requests per app and mailbox).

A slot is held only while the Graph request is on the wire — database bookkeeping happens outside it —
so the limit is used to the full.

* ``LocalGate`` counts in this process (SQLite deployments: one dispatcher process per database).
* ``AdvisoryGate`` (PostgreSQL) holds each slot as a session-level advisory lock on a dedicated
  connection, so any number of processes on any number of hosts hold the limit *together*. Taking a
  slot writes nothing (no fsync), and a process that dies loses its connection, which releases its
  slots at once — no lease to wait out.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

from ..db.engine import Database
from ..errors import StoreError

LOCK_NAMESPACE = 0x6D33  # the first key of m365relay's advisory locks ("m3")
POLL_SECONDS = 0.005


class LocalGate:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._semaphores: dict[int, asyncio.Semaphore] = {}
        self._held: dict[int, int] = {}

    @contextlib.asynccontextmanager
    async def slot(self, connector_id: int) -> AsyncIterator[None]:
        semaphore = self._semaphores.setdefault(connector_id, asyncio.Semaphore(self.capacity))
        async with semaphore:
            self._held[connector_id] = self._held.get(connector_id, 0) + 1
            try:
                yield
            finally:
                self._held[connector_id] -= 1

    def in_flight(self, connector_id: int) -> int:
        return self._held.get(connector_id, 0)

    def close(self) -> None:
        pass


class AdvisoryGate(LocalGate):
    def __init__(self, db: Database, capacity: int) -> None:
        super().__init__(capacity)
        self.db = db
        self._conn: Any = None
        self._lock = threading.Lock()
        self._numbers: dict[int, set[int]] = {}  # slot numbers this process holds, per connector

    @contextlib.asynccontextmanager
    async def slot(self, connector_id: int) -> AsyncIterator[None]:
        # The local semaphore keeps this process from asking for more than the capacity at all.
        async with super().slot(connector_id):
            delay = POLL_SECONDS
            while (number := await asyncio.to_thread(self._try_lock, connector_id)) is None:
                await asyncio.sleep(delay)  # another process holds every slot: look again shortly
                delay = min(delay * 2, 0.05)
            try:
                yield
            finally:
                await asyncio.shield(asyncio.to_thread(self._unlock, connector_id, number))

    def _try_lock(self, connector_id: int) -> int | None:
        with self._lock:
            mine = self._numbers.setdefault(connector_id, set())
            try:
                cursor = self._connection().cursor()
                for number in range(self.capacity):
                    # Session-level advisory locks are re-entrant: a slot this connection already holds would
                    # be "granted" again, so the slots this process holds are never asked for.
                    if number in mine:
                        continue
                    cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, _key(connector_id, number)))
                    if cursor.fetchone()[0]:
                        mine.add(number)
                        return number
                return None
            except Exception as exc:  # the connection (and so every lock on it) is gone: start afresh
                self._reset()
                raise StoreError("the database connection for in-flight slots was lost") from exc

    def _unlock(self, connector_id: int, number: int) -> None:
        with self._lock:
            self._numbers.get(connector_id, set()).discard(number)
            try:
                self._connection().cursor().execute(
                    "SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, _key(connector_id, number))
                )
            except Exception:  # a lost connection released every lock it held anyway
                self._reset()

    def _connection(self) -> Any:
        if self._conn is None:
            raw = self.db.engine.raw_connection()
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
            self._conn = raw
        return self._conn.driver_connection

    def _reset(self) -> None:
        self._numbers.clear()  # a closed connection holds no locks
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._reset()  # invalidate, not return to the pool: it was switched to autocommit


def _key(connector_id: int, number: int) -> int:
    return connector_id * 1024 + number
