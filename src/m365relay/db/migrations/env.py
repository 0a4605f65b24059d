"""Alembic environment: runs on the connection handed over by ``m365relay.db.migrate.upgrade``."""

from __future__ import annotations

from alembic import context

from m365relay.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached by running the alembic CLI by hand
    raise SystemExit("run migrations with `m365relay db upgrade`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
