"""graph resource of custom clouds; indexes and an hourly rollup for the dashboard

Revision ID: 0008
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("connectors", sa.Column("graph_resource", sa.String(length=2048), nullable=True))
    # The created_at index gains connector_id, so counting an hour's mail per connector reads only the index.
    op.drop_index("ix_messages_created", table_name="messages")
    op.create_index("ix_messages_created", "messages", ["created_at", "connector_id"], unique=False)
    op.create_index("ix_messages_outcome", "messages", ["status", "updated_at", "connector_id"], unique=False)
    op.create_index("ix_message_events_kind_at", "message_events", ["kind", "at"], unique=False)
    op.create_table(
        "activity_hours",
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("deferred", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name=op.f("fk_activity_hours_connector_id_connectors"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connector_id", "hour", name=op.f("pk_activity_hours")),
    )


def downgrade() -> None:
    op.drop_table("activity_hours")
    op.drop_index("ix_message_events_kind_at", table_name="message_events")
    op.drop_index("ix_messages_outcome", table_name="messages")
    op.drop_index("ix_messages_created", table_name="messages")
    op.create_index("ix_messages_created", "messages", ["created_at"], unique=False)
    op.drop_column("connectors", "graph_resource")
