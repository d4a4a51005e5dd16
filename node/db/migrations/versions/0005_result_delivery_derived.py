"""result delivery summary derived from the outbox

The result object's ``delivered_at`` and ``delivery_error`` copied what its outbox rows
(``delivery``) say; they are read from those rows now, so the copies go.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("result_object", schema=None) as batch_op:
        batch_op.drop_column("delivery_error")
        batch_op.drop_column("delivered_at")


def downgrade() -> None:
    # The columns come back empty; the outbox rows still hold the truth.
    with op.batch_alter_table("result_object", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("delivery_error", sa.Text(), nullable=False, server_default="")
        )
