"""completion evidence: per-series aggregates, per-instance position, why complete

``series`` keeps what the receive path learns of its size (instance count, lowest and
highest Instance Number, Number of Frames, Images in Acquisition, Number of Temporal
Positions), its latest sender, when an association that stored into it was released,
and why it counted as complete (``completed_by``); ``instance`` keeps its position
along the slice normal and its Temporal Position Identifier. Counts and Instance
Numbers of the series already held are filled in from their instances.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-10 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_SERIES_COLUMNS = (
    ("completed_by", sa.Text(), False, ""),
    ("instance_count", sa.Integer(), False, "0"),
    ("min_instance_number", sa.Integer(), True, None),
    ("max_instance_number", sa.Integer(), True, None),
    ("number_of_frames", sa.Integer(), True, None),
    ("images_in_acquisition", sa.Integer(), True, None),
    ("temporal_positions", sa.Integer(), True, None),
    ("calling_ae_title", sa.String(length=16), False, ""),
    ("released_at", sa.DateTime(timezone=True), True, None),
)

_BACKFILL = """
UPDATE series SET
    instance_count = (SELECT count(*) FROM instance WHERE instance.series_pk = series.id),
    min_instance_number =
        (SELECT min(instance_number) FROM instance WHERE instance.series_pk = series.id),
    max_instance_number =
        (SELECT max(instance_number) FROM instance WHERE instance.series_pk = series.id)
"""


def upgrade() -> None:
    with op.batch_alter_table("series", schema=None) as batch_op:
        for name, type_, nullable, default in _SERIES_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=nullable, server_default=default))
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slice_position", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("temporal_position", sa.Integer(), nullable=True))
    op.execute(_BACKFILL)


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("temporal_position")
        batch_op.drop_column("slice_position")
    with op.batch_alter_table("series", schema=None) as batch_op:
        for name, _type, _nullable, _default in reversed(_SERIES_COLUMNS):
            batch_op.drop_column(name)
