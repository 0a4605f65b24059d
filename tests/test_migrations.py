"""The migrations produce exactly the models' schema, on SQLite and on PostgreSQL, and are idempotent."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from m365relay.db import Database, upgrade
from m365relay.db.migrate import current_revision, head_revision
from m365relay.db.models import Base


def test_migrations_match_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        upgrade(db)
        upgrade(db)  # a second process starting finds nothing to do
        assert current_revision(db) == head_revision()
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
    finally:
        db.dispose()
