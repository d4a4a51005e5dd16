"""receive and scheduling indexes

The queries run for every received instance or every scheduler tick no longer scan
whole tables: a series' instances (routing's count), series by state and quiet time
(completion), a study's series (routing's siblings), a patient's studies, jobs by
state (the ledger's stale sweep) and a series' jobs per model (routing).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 10:00:00.000000
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_study_patient_pk", "study", ["patient_pk"]),
    ("ix_series_state_last_received_at", "series", ["state", "last_received_at"]),
    ("ix_series_study_pk", "series", ["study_pk"]),
    ("ix_instance_series_pk", "instance", ["series_pk"]),
    ("ix_job_state", "job", ["state"]),
    ("ix_job_series_model", "job", ["series_pk", "model_name", "model_version"]),
)


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
