"""stored bytes carry a checksum

Revision ID: 0003
Revises: 0008
Create Date: 2026-12-01 21:20:00

``messages.content_hash`` exists only for messages sent with an idempotency key (it compares a resend with
the first send). ``body_sha256`` is the SHA-256 of the bytes as stored (header chunk, then body chunks), kept
for every message and checked before the bytes go to Graph: a damaged copy fails with the reason instead of
being sent. Messages stored before this revision have none and are sent unchecked.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("body_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("body_sha256")
