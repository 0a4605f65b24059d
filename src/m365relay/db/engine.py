"""The database handle: one engine per process, built from settings and passed in (never global).

SQLite runs in WAL mode with ``synchronous=FULL`` (a 250/202 answer means the message is on disk) and
every write transaction starts with ``BEGIN IMMEDIATE``, so two writers never deadlock upgrading read
locks; PostgreSQL runs in READ COMMITTED and claims work with ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoreError
from ..homedir import private_sqlite

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """Engine + session factory. ``write()`` and ``read()`` are the only ways in."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                private_sqlite(Path(parsed.database))  # 0600 before SQLite creates it with the umask's mode
            self.engine: Engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
            _configure_sqlite(self.engine)
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":
                url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
            self.engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        else:
            raise StoreError(f"unsupported database {self.dialect!r}: use sqlite:/// or postgresql+psycopg://")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction, committed on success. Database failures become ``StoreError``."""
        with self._translate(), self._sessions() as session, session.begin():
            if self.dialect == "sqlite":
                # The first connection of the transaction carries the option; _on_begin reads it.
                session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._translate(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            if exc.connection_invalidated or _is_operational(exc):
                raise StoreError(f"database unavailable: {type(exc.orig).__name__}") from exc
            raise
        except SQLAlchemyError as exc:
            if type(exc).__name__ in {"TimeoutError", "DisconnectionError"}:
                raise StoreError(f"database unavailable: {type(exc).__name__}") from exc
            raise

    def ping(self) -> None:
        with self.read() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


RETRYABLE = ("DeadlockDetected", "SerializationFailure", "LockNotAvailable")


def is_retryable(error: BaseException) -> bool:
    """A transaction aborted by the database's own concurrency control: running it again is the fix."""
    seen: BaseException | None = error
    while seen is not None:
        original = getattr(seen, "orig", None) or seen
        if type(original).__name__ in RETRYABLE or "database is locked" in str(original).lower():
            return True
        seen = seen.__cause__
    return False


def _is_operational(exc: DBAPIError) -> bool:
    # By class, not by name: psycopg raises subclasses such as DiskFull (SQLSTATE 53100) or AdminShutdown
    # (57P01), which SQLAlchemy wraps as OperationalError too.
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    name = type(exc.orig).__name__
    return name in {"OperationalError", "InterfaceError"} or "locked" in str(exc.orig).lower()


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that BEGIN is ours (see write()).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())
