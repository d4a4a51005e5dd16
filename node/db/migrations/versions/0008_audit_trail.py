"""audit trail

``audit_event``: one row per association, received instances, results sent,
storage commitment, sign-in, sign-out, operator action, application start/stop and
security alert; with the DICOM EventOutcomeIndicator, the actor, the peer and the
kind's details. Indexed for the newest-first list and for one kind's list.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The AuditKind member names, as a non-native enum stores them.
_KINDS = (
    "ASSOCIATION",
    "INSTANCES_RECEIVED",
    "RESULTS_SENT",
    "COMMITMENT_RECEIVED",
    "SIGN_IN",
    "SIGN_OUT",
    "OPERATOR_ACTION",
    "APPLICATION_START",
    "APPLICATION_STOP",
    "SECURITY_ALERT",
)


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(*_KINDS, name="auditkind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("actor_role", sa.String(length=32), nullable=False),
        sa.Column("peer_address", sa.String(length=255), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_event_occurred_at", "audit_event", ["occurred_at"])
    op.create_index("ix_audit_event_kind_occurred_at", "audit_event", ["kind", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_event_kind_occurred_at", table_name="audit_event")
    op.drop_index("ix_audit_event_occurred_at", table_name="audit_event")
    op.drop_table("audit_event")
