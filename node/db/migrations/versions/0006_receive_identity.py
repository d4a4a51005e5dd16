"""receive identity: instance digest, sizes past 2 GiB, patient attributes per study

``instance.digest`` (sha256 of the kept file) tells an identical resend from a
changed one; ``instance.size_bytes`` becomes 64-bit; the patient keeps its birth date
and sex; ``study.patient_conflicts`` records patient attributes a study's instances
disagree on.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("digest", sa.String(length=64), nullable=False, server_default="")
        )
        batch_op.alter_column(
            "size_bytes", existing_type=sa.Integer(), type_=sa.BigInteger(), nullable=False
        )
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("birth_date", sa.String(length=8), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("sex", sa.String(length=16), nullable=False, server_default="")
        )
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("patient_conflicts", sa.Text(), nullable=False, server_default="")
        )


def downgrade() -> None:
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_column("patient_conflicts")
    with op.batch_alter_table("patient", schema=None) as batch_op:
        batch_op.drop_column("sex")
        batch_op.drop_column("birth_date")
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.alter_column(
            "size_bytes", existing_type=sa.BigInteger(), type_=sa.Integer(), nullable=False
        )
        batch_op.drop_column("digest")
