"""worklist and critical findings: UPS workitems, subscriptions, events; job priority

``workitem``: Unified Procedure Steps the node provides or performs; ``ups_subscription``
and ``ups_event``: who is told of their changes, and what is still to be told;
``critical_finding``: outputs over their critical threshold and who acknowledged them;
``job.priority`` and ``job.workitem_pk``: the order jobs are taken in and the workitem
each belongs to. Result objects may now be Key Object Selection documents (``KO``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-12 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_PRIORITIES = ("STAT", "HIGH", "MEDIUM", "LOW")
_STATES = ("SCHEDULED", "IN_PROGRESS", "CANCELED", "COMPLETED")
_ORIGINS = ("NODE", "REQUESTED", "PULLED")
_RESULT_KINDS_BEFORE = ("SEG", "SR", "SC")
_RESULT_KINDS = (*_RESULT_KINDS_BEFORE, "KO")


def _enum(values: tuple[str, ...], name: str, length: int) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=length)


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "workitem",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("origin", _enum(_ORIGINS, "workitemorigin", 16), nullable=False),
        sa.Column("state", _enum(_STATES, "upsstate", 16), nullable=False),
        sa.Column("priority", _enum(_PRIORITIES, "upspriority", 8), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("worklist_label", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("requested_model", sa.String(length=64), nullable=False),
        sa.Column("transaction_uid", sa.String(length=64), nullable=True),
        sa.Column("performer", sa.String(length=64), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=True),
        sa.Column("progress_description", sa.Text(), nullable=False),
        _when("cancel_requested_at"),
        sa.Column("cancel_reason", sa.Text(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("provider_transaction_uid", sa.String(length=64), nullable=True),
        sa.Column("dataset", sa.JSON(), nullable=False),
        _when("created_at", nullable=False),
        _when("updated_at", nullable=False),
        _when("finished_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_instance_uid"),
    )
    op.create_index("ix_workitem_state_priority", "workitem", ["state", "priority"])
    op.create_index("ix_workitem_study", "workitem", ["study_instance_uid"])
    op.create_table(
        "ups_subscription",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber", sa.String(length=64), nullable=False),
        sa.Column("workitem_uid", sa.String(length=64), nullable=False),
        sa.Column("deletion_lock", sa.Boolean(), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        _when("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber", "workitem_uid", name="uq_ups_subscription"),
    )
    op.create_table(
        "ups_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber", sa.String(length=64), nullable=False),
        sa.Column("workitem_uid", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.Integer(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        _when("created_at", nullable=False),
        _when("sent_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ups_event_pending", "ups_event", ["sent_at", "id"])
    op.create_table(
        "critical_finding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_pk", sa.Integer(), nullable=False),
        sa.Column("output", sa.String(length=64), nullable=False),
        sa.Column("code_value", sa.String(length=64), nullable=False),
        sa.Column("code_scheme", sa.String(length=16), nullable=False),
        sa.Column("code_meaning", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=16), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("urgency", sa.String(length=8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _when("detected_at", nullable=False),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=False),
        sa.Column("acknowledged_role", sa.String(length=16), nullable=False),
        _when("acknowledged_at"),
        sa.Column("acknowledgement_note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_pk"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_critical_finding_job_pk", "critical_finding", ["job_pk"])
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "priority",
                _enum(_PRIORITIES, "upspriority", 8),
                nullable=False,
                server_default="MEDIUM",
            )
        )
        batch_op.add_column(sa.Column("workitem_pk", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_job_workitem_pk", "workitem", ["workitem_pk"], ["id"])
        batch_op.create_index("ix_job_workitem_pk", ["workitem_pk"])
    with op.batch_alter_table("result_object", schema=None) as batch_op:
        batch_op.alter_column(
            "kind",
            existing_type=_enum(_RESULT_KINDS_BEFORE, "resultkind", 8),
            type_=_enum(_RESULT_KINDS, "resultkind", 8),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("result_object", schema=None) as batch_op:
        batch_op.alter_column(
            "kind",
            existing_type=_enum(_RESULT_KINDS, "resultkind", 8),
            type_=_enum(_RESULT_KINDS_BEFORE, "resultkind", 8),
            existing_nullable=False,
        )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_workitem_pk")
        batch_op.drop_constraint("fk_job_workitem_pk", type_="foreignkey")
        batch_op.drop_column("workitem_pk")
        batch_op.drop_column("priority")
    op.drop_index("ix_critical_finding_job_pk", table_name="critical_finding")
    op.drop_table("critical_finding")
    op.drop_index("ix_ups_event_pending", table_name="ups_event")
    op.drop_table("ups_event")
    op.drop_table("ups_subscription")
    op.drop_index("ix_workitem_study", table_name="workitem")
    op.drop_index("ix_workitem_state_priority", table_name="workitem")
    op.drop_table("workitem")
