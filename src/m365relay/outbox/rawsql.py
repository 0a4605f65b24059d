"""Driver-level statements for the ingest hot path.

An enqueue is three inserts (message, chunks, event). Through SQLAlchemy each costs ~100 µs of Python
before the database sees it; through the DB-API cursor of the same transaction, a few µs. The column
lists come from the SQLAlchemy tables, so the schema stays defined in one place (db/models.py); values
are converted here exactly as SQLAlchemy's types would store them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

RETURNING_ID = " RETURNING id"


class RawStatements:
    def __init__(self, dialect: str, messages: Table, chunks: Table, events: Table) -> None:
        self.postgres = dialect == "postgresql"
        self._placeholder = "%s" if self.postgres else "?"
        self.message_columns = [c.name for c in messages.columns if c.name != "id"]
        self.event_columns = [c.name for c in events.columns if c.name != "id"]
        self.message_sql = self._insert(messages.name, self.message_columns) + RETURNING_ID
        self.chunk_sql = self._insert(chunks.name, ["message_id", "seq", "data"])
        self.event_sql = self._insert(events.name, self.event_columns)
        mark = self._placeholder
        self.checksum_sql = f"UPDATE {messages.name} SET body_sha256 = {mark} WHERE id = {mark}"  # noqa: S608

    def _insert(self, table: str, columns: list[str]) -> str:
        marks = ", ".join(self._placeholder for _ in columns)
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - names from the schema

    def cursor(self, session: Session) -> Any:
        return session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]

    def insert_message(self, cursor: Any, values: dict[str, Any]) -> int:
        cursor.execute(self.message_sql, [self._value(values.get(c)) for c in self.message_columns])
        return int(cursor.fetchone()[0])

    def insert_chunk(self, cursor: Any, message_id: int, seq: int, data: bytes) -> None:
        cursor.execute(self.chunk_sql, (message_id, seq, data))

    def set_checksum(self, cursor: Any, message_id: int, hex_digest: str) -> None:
        cursor.execute(self.checksum_sql, (hex_digest, message_id))

    def insert_event(self, cursor: Any, values: dict[str, Any]) -> None:
        cursor.execute(self.event_sql, [self._value(values.get(c)) for c in self.event_columns])

    def _value(self, value: Any) -> Any:
        if isinstance(value, datetime):
            naive = value.astimezone(UTC).replace(tzinfo=None)
            # SQLAlchemy's SQLite DateTime stores this exact text form; PostgreSQL takes the datetime.
            return naive if self.postgres else naive.strftime("%Y-%m-%d %H:%M:%S.%f")
        if isinstance(value, list | dict):
            if self.postgres:
                from psycopg.types.json import Json

                return Json(value)
            return json.dumps(value)
        return value
