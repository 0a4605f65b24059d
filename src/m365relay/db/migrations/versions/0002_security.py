"""security hardening (issue 13): idempotency keys are scoped to whoever made them

Revision ID: 0002
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Before: one key per connector, so one application could read another's message id by guessing its key,
    # or take a predictable key ("invoice-7") first. Now (connector, scope, key): the scope names the API
    # key that made it; '' is the relay's own sends (CLI, library, alerts).
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("idempotency_scope", sa.String(length=64), nullable=False, server_default=""))
        batch.drop_constraint("uq_messages_connector_id", type_="unique")
        batch.create_unique_constraint(
            "uq_messages_connector_id", ["connector_id", "idempotency_scope", "idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("uq_messages_connector_id", type_="unique")
        batch.create_unique_constraint("uq_messages_connector_id", ["connector_id", "idempotency_key"])
        batch.drop_column("idempotency_scope")
