"""What the end of an association tells series completion, and the scheduler's wake-up.

The Storage SCP hands every association, once it has ended, to its ``on_association``
callback (in the node's process, whether a receiving process served it or not).
:class:`SeriesRelease` is that callback's completion part: when the sender released
the association, each receiving series it stored instances of is marked released
(``Series.released_at``, evidence for :mod:`node.completion_rules`); and when it
stored anything, the scheduler is woken, so it judges those series at once instead of
at its next deadline. It runs in the association's own thread after the socket
closed; the update is one short statement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import update

from node.acceptor.record import AssociationRecord
from node.audit.receiving import RELEASED
from node.db.models import Series, SeriesState, utcnow
from node.db.session import SessionFactory, transaction

log = logging.getLogger(__name__)


def released_series(record: AssociationRecord) -> list[str]:
    """The Series Instance UIDs a released association stored instances of."""
    if record.outcome != RELEASED:
        return []
    return sorted({uid for study in record.studies.values() for uid in study.series})


class SeriesRelease:
    """The SCP's ``on_association`` callback: marks, wakes, then calls ``then``."""

    def __init__(
        self,
        sessions: SessionFactory,
        wake: Callable[[], None],
        then: Callable[[AssociationRecord], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.wake = wake
        self.then = then

    def __call__(self, record: AssociationRecord) -> None:
        try:
            self.mark_released(record)
        except Exception:  # noqa: BLE001 - the series then wait for their quiet period
            log.exception("could not mark the series of an association released")
        if record.stored:
            self.wake()
        if self.then is not None:
            self.then(record)

    def mark_released(self, record: AssociationRecord) -> int:
        """Mark the receiving series the association stored into released; how many."""
        uids = released_series(record)
        if not uids:
            return 0
        with transaction(self.sessions) as session:
            result = session.execute(
                update(Series)
                .where(Series.series_instance_uid.in_(uids), Series.state == SeriesState.RECEIVING)
                .values(released_at=utcnow())
            )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
