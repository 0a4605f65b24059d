"""graph resource of custom clouds; indexes and hourly rollup for the dashboard

Revision ID: 0008
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("connectors", sa.Column("graph_resource", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    op.drop_column("connectors", "graph_resource")
