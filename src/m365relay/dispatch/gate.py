"""The in-flight limit per connector and mailbox (PROTOCOL.md §7: 4 concurrent requests per app and mailbox;
§15: a connector with send-as mailboxes has 4 for each). A mailbox is named as ``ConnectorConfig.mailbox_for``
names it: "" for the User Name mailbox, else the send-as address.

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
import zlib
from collections.abc import AsyncIterator
from typing import Any

from ..db.engine import Database
from ..errors import StoreError

LOCK_NAMESPACE = 0x6D33  # the first key of m365relay's advisory locks ("m3")
POLL_SECONDS = 0.005


class LocalGate:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._semaphores: dict[tuple[int, str], asyncio.Semaphore] = {}
        self._held: dict[tuple[int, str], int] = {}

    @contextlib.asynccontextmanager
    async def slot(self, connector_id: int, mailbox: str = "") -> AsyncIterator[None]:
        key = (connector_id, mailbox)
        semaphore = self._semaphores.setdefault(key, asyncio.Semaphore(self.capacity))
        async with semaphore:
            self._held[key] = self._held.get(key, 0) + 1
            try:
                yield
            finally:
                self._held[key] -= 1

    def in_flight(self, connector_id: int, mailbox: str = "") -> int:
        return self._held.get((connector_id, mailbox), 0)

    async def aclose(self) -> None:
        pass


class AdvisoryGate(LocalGate):
    """Slots as PostgreSQL advisory locks on a few dedicated asyncio connections (psycopg's AsyncConnection:
    no thread hop per slot, which matters at one lock and one unlock per message). Connectors are spread
    over the connections so that mailboxes do not queue behind each other's lock requests."""

    def __init__(self, db: Database, capacity: int, connections: int = 4) -> None:
        super().__init__(capacity)
        self.db = db
        self._shards = [_Shard() for _ in range(connections)]
        self._numbers: dict[int, set[int]] = {}  # slot numbers this process holds, per mailbox_number

    @contextlib.asynccontextmanager
    async def slot(self, connector_id: int, mailbox: str = "") -> AsyncIterator[None]:
        # The local semaphore keeps this process from asking for more than the capacity at all.
        async with super().slot(connector_id, mailbox):
            connector_id = mailbox_number(connector_id, mailbox)  # below, the lock's number stands for both
            delay = POLL_SECONDS
            while (number := await self._lock_or_reconnect(connector_id)) is None:
                await asyncio.sleep(delay)  # another process holds every slot: look again shortly
                delay = min(delay * 2, 0.05)
            try:
                yield
            finally:
                await asyncio.shield(self._unlock(connector_id, number))

    async def _lock_or_reconnect(self, connector_id: int) -> int | None:
        """A slot number, or None when all are taken. A connection found dead (the server restarted, an
        administrator ended the session) is replaced once before the database counts as unavailable."""
        try:
            return await self._try_lock(connector_id)
        except StoreError:
            return await self._try_lock(connector_id)

    def backend_pids(self) -> list[int]:
        """The PostgreSQL sessions holding the slots (pg_stat_activity.pid), for operators and tests."""
        return [shard.conn.info.backend_pid for shard in self._shards if shard.conn is not None]

    async def _try_lock(self, connector_id: int) -> int | None:
        shard = self._shard(connector_id)
        async with shard.lock:
            mine = self._numbers.setdefault(connector_id, set())
            try:
                conn = await self._connection(shard)
                for number in range(self.capacity):
                    # Session-level advisory locks are re-entrant: a slot this connection already holds would
                    # be "granted" again, so the slots this process holds are never asked for.
                    if number in mine:
                        continue
                    cursor = await conn.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_NAMESPACE, _key(connector_id, number))
                    )
                    row = await cursor.fetchone()
                    if row and row[0]:
                        mine.add(number)
                        return number
                return None
            except Exception as exc:  # the connection (and so every lock on it) is gone: start afresh
                await self._reset(shard)
                raise StoreError("the database connection for in-flight slots was lost") from exc

    async def _unlock(self, connector_id: int, number: int) -> None:
        shard = self._shard(connector_id)
        async with shard.lock:
            self._numbers.get(connector_id, set()).discard(number)
            try:
                conn = await self._connection(shard)
                await conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, _key(connector_id, number)))
            except Exception:  # a lost connection released every lock it held anyway
                await self._reset(shard)

    def _shard(self, connector_id: int) -> _Shard:
        return self._shards[connector_id % len(self._shards)]

    async def _connection(self, shard: _Shard) -> Any:
        if shard.conn is None:
            import psycopg

            url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            shard.conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=5, application_name="m365relay in-flight slots"
            )
        return shard.conn

    async def _reset(self, shard: _Shard) -> None:
        for connector_id in [c for c in self._numbers if self._shard(c) is shard]:
            self._numbers[connector_id].clear()  # a closed connection holds no locks
        if shard.conn is not None:
            with contextlib.suppress(Exception):
                await shard.conn.close()
            shard.conn = None

    async def aclose(self) -> None:
        for shard in self._shards:
            await self._reset(shard)


class _Shard:
    """One dedicated connection and the lock that keeps its queries one at a time."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.lock = asyncio.Lock()


def mailbox_number(connector_id: int, mailbox: str) -> int:
    """One number per (connector, mailbox) for PostgreSQL advisory locks (a 32-bit key with room for the slot
    number): the User Name mailbox keeps the connector id, as before send-as mailboxes; a send-as mailbox gets
    a number from 1,000,000 up by CRC-32. Two mailboxes that share a number share their slots — a stricter
    limit for both, never a looser one."""
    if not mailbox:
        return connector_id
    return 1_000_000 + zlib.crc32(f"{connector_id}|{mailbox}".encode()) % 1_000_000


def _key(connector_id: int, number: int) -> int:
    return connector_id * 1024 + number
