"""in-doubt sends: messages.doubt_since, draft_id, draft_message_id

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("doubt_since", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("draft_id", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("draft_message_id", sa.String(length=998), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("draft_message_id")
        batch.drop_column("draft_id")
        batch.drop_column("doubt_since")
