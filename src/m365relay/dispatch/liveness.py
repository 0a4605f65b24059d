"""Whether the worker that holds a lease is still alive, so that a dead worker's messages come back in
seconds instead of when their lease runs out (``M365RELAY_LEASE_SECONDS``, 120 s by default).

* ``FileLiveness`` (SQLite, one host): each dispatcher holds an exclusive ``flock`` on its own file in
  ``<database>.workers/`` for as long as it runs; the kernel drops the lock when the process dies, however
  it dies. Another dispatcher that can take a lease owner's lock knows that owner is gone, and hands its
  leases back at once — on start, and every second while it runs.
* ``AdvisoryLiveness`` (PostgreSQL): each dispatcher holds a session-level advisory lock, keyed by its
  owner name, on a connection of its own. PostgreSQL drops the lock when the session ends (a killed
  process, a crashed host once TCP keepalive notices), and ``pg_locks`` shows every lock held — so any
  worker can tell a dead owner from a live one with one query, and never takes a live worker's leases.
  A live worker whose connection merely blipped takes its lock again on its next turn; an owner must be
  seen without its lock twice, ``grace`` seconds apart, before its leases are taken.

Handing back means expiring the lease now: the message is then due exactly as if the lease had run out
(claimed again, its attempt counted), and its events say why.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import zlib
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import make_url

from ..db.engine import Database

log = logging.getLogger("m365relay.dispatch")

LIVENESS_NAMESPACE = 0x6D35  # advisory lock namespace for worker liveness ("m5")
GRACE_SECONDS = 3.0


def owner_key(owner: str) -> int:
    """The advisory lock key of an owner name (a positive 31-bit number). Two names sharing a key only
    make one of them look alive for longer: the safe direction."""
    return zlib.crc32(owner.encode()) & 0x7FFFFFFF


class Liveness:
    """Nothing is known about other workers: leases run their course (the default)."""

    async def start(self, owner: str) -> None:
        pass

    async def dead(self, owners: set[str]) -> set[str]:
        """Those of ``owners`` (lease holders other than this worker) known to be dead."""
        return set()

    async def aclose(self) -> None:
        pass


class FileLiveness(Liveness):
    """One lock file per worker in ``<database>.workers/``, held with an exclusive ``flock`` while it runs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: IO[bytes] | None = None

    @classmethod
    def for_database(cls, db: Database) -> Liveness:
        database = make_url(db.url).database
        if not database or database == ":memory:":
            return Liveness()
        return cls(Path(f"{database}.workers"))

    def _path(self, owner: str) -> Path:
        return self.directory / f"{owner_key(owner):08x}.lock"

    # A lock file on local disk costs microseconds: no thread hop for these.
    async def start(self, owner: str) -> None:
        self._take(owner)

    async def dead(self, owners: set[str]) -> set[str]:
        return {owner for owner in owners if self._is_dead(owner)}

    async def aclose(self) -> None:
        self._let_go()

    def _take(self, owner: str) -> None:
        # Private like everything in the home (docs/security.md): 0700 and 0600 whatever the umask.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        path = self._path(owner)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        path.chmod(0o600)
        handle = open(path, "a+b")  # noqa: SIM115 - held open for the dispatcher's lifetime
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            log.warning("worker liveness file %s is held by another process", self._path(owner))
            return
        handle.truncate(0)
        handle.write(f"{owner}\n".encode())
        handle.flush()
        self._file = handle

    def _is_dead(self, owner: str) -> bool:
        path = self._path(owner)
        try:
            handle = open(path, "r+b")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return False  # a worker without a liveness file: its lease runs its course
        with handle:
            try:
                # A second open file description conflicts even within one process (flock(2)), so a worker
                # that holds its lock always answers "alive"; the kernel drops the lock when a process dies.
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            if handle.read().decode(errors="replace").strip() != owner:
                return False  # another name with the same key: not the owner asked about
            path.unlink(missing_ok=True)
            return True

    def _let_go(self) -> None:
        if self._file is not None:
            Path(self._file.name).unlink(missing_ok=True)  # a clean stop released its leases already
            self._file.close()  # closing drops the flock
            self._file = None


class AdvisoryLiveness(Liveness):
    def __init__(self, db: Database, grace: float = GRACE_SECONDS) -> None:
        self.db = db
        self.grace = grace
        self.owner: str | None = None
        self._conn: Any = None
        self._suspects: dict[str, float] = {}  # owner → monotonic time first seen without its lock

    async def start(self, owner: str) -> None:
        self.owner = owner
        await self._hold()

    async def _hold(self) -> bool:
        """Hold this worker's lock (again, after a lost connection). Returns whether it is held."""
        if self._conn is not None and not self._conn.closed:
            return True
        try:
            import psycopg

            url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
            assert self.owner is not None
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (LIVENESS_NAMESPACE, owner_key(self.owner))
            )
            row = await cursor.fetchone()
        except Exception as exc:  # the database is away: its leases stay ours; try again next turn
            log.warning("worker liveness lock not taken: %s", type(exc).__name__)
            return False
        if not (row and row[0]):
            await conn.close()
            log.warning("worker liveness lock of %s is held by another session", self.owner)
            return False
        self._conn = conn
        return True

    async def live_keys(self) -> set[int]:
        """Keys of every liveness lock held in this database right now."""
        cursor = await self._conn.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2 "
            "AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (LIVENESS_NAMESPACE,),
        )
        return {int(row[0]) for row in await cursor.fetchall()}

    async def dead(self, owners: set[str]) -> set[str]:
        if not owners or not await self._hold():
            return set()
        try:
            live = await self.live_keys()
        except Exception as exc:
            log.warning("worker liveness not checked: %s", type(exc).__name__)
            await self.aclose()
            return set()
        now = time.monotonic()
        self._suspects = {o: t for o, t in self._suspects.items() if o in owners and owner_key(o) not in live}
        dead = set()
        for owner in owners:
            if owner_key(owner) in live:
                continue
            first = self._suspects.setdefault(owner, now)
            if now - first >= self.grace:
                dead.add(owner)
        return dead

    async def aclose(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()  # ends the session: PostgreSQL drops the lock with it
            self._conn = None
