"""Apply the Alembic migrations programmatically (``m365relay`` runs this on start; no alembic.ini needed).

Several processes may start at once against one database: on PostgreSQL an advisory lock serialises
them; on SQLite the upgrade runs inside ``BEGIN IMMEDIATE``. Either way the second process finds the
schema current and does nothing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from .engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed 64-bit number; it names m365relay's schema lock among other advisory locks.
PG_MIGRATION_LOCK = 0x6D333635  # "m365"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``. Safe to call from many processes at once."""
    config = alembic_config()
    with db.engine.connect() as raw:
        conn = raw.execution_options(sqlite_begin="IMMEDIATE") if db.dialect == "sqlite" else raw
        with conn.begin():
            if db.is_postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
