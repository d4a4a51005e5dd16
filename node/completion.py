"""Series completion: a series counts as complete once no instance arrived for a while.

DICOM has no "end of series" signal on C-STORE, so completeness is a quiet period
(AINODE_STABLE_SECONDS) after the last instance, as archives such as Orthanc do with
their stable-age setting. This module only finds such series; marking them complete
and writing their state is :mod:`node.series_state`'s.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db.models import Series, SeriesState


class SeriesCompletion:
    def __init__(self, stable_seconds: float) -> None:
        self.stable = timedelta(seconds=stable_seconds)

    def complete_series(self, session: Session, now: datetime) -> list[Series]:
        """The receiving series whose quiet period has passed, locked for routing."""
        return list(
            session.scalars(
                select(Series)
                .where(
                    Series.state == SeriesState.RECEIVING,
                    Series.last_received_at <= now - self.stable,
                )
                .order_by(Series.last_received_at)
                .with_for_update(skip_locked=True)
            )
        )
