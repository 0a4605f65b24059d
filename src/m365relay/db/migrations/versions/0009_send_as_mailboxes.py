"""send-as mailboxes per connector, budgets per mailbox

Revision ID: 0009
Revises: 0004
Create Date: 2026-12-01 22:30:00

``connectors.send_as`` lists the further mailboxes a connector's app sends from ("Also send from": addresses
or ``@domain``), each through its own ``/users/{mailbox}/sendMail`` (PROTOCOL.md §15). Microsoft counts the
request and recipient budgets per app *and mailbox* (§7), so ``budget_buckets`` gains a ``mailbox`` column in
its key: "" is the connector's User Name mailbox (the rows counted before this revision), any other value a
send-as mailbox.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.add_column(sa.Column("send_as", sa.JSON(), nullable=True))
    with op.batch_alter_table("budget_buckets", recreate="always") as batch:
        batch.add_column(sa.Column("mailbox", sa.String(length=320), nullable=False, server_default=""))
        batch.drop_constraint("pk_budget_buckets", type_="primary")
        batch.create_primary_key("pk_budget_buckets", ["connector_id", "mailbox", "minute"])


def downgrade() -> None:
    op.execute("DELETE FROM budget_buckets WHERE mailbox <> ''")
    with op.batch_alter_table("budget_buckets", recreate="always") as batch:
        batch.drop_constraint("pk_budget_buckets", type_="primary")
        batch.drop_column("mailbox")
        batch.create_primary_key("pk_budget_buckets", ["connector_id", "minute"])
    with op.batch_alter_table("connectors") as batch:
        batch.drop_column("send_as")
