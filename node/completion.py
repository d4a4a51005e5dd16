"""Series completion: which receiving series are complete now, and when to look again.

DICOM has no "end of series" signal on C-STORE. A series is complete as soon as its
data say so (:mod:`node.completion_rules`: a single multi-frame instance, Images in
Acquisition or Number of Temporal Positions reached, a sender's expected count, a
released association after Instance Numbers 1..N evenly spaced, or a sender whose
rule says its associations carry whole series: at once), once a short grace
(AINODE_COMPLETION_GRACE_SECONDS) has passed since its last instance; otherwise after
the quiet period (AINODE_STABLE_SECONDS), as archives such as Orthanc do with their
stable-age setting. Each complete series is marked complete, with why, through
:mod:`node.series_state` (the one writer of a series' state); routing follows in the
caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from node import series_state
from node.completion_rules import (
    InstanceLayout,
    SeriesEvidence,
    complete_at_release,
    complete_by_evidence,
)
from node.completion_settings import ANY_SENDER, CompletionRule
from node.db.models import Instance, Series, SeriesState

_RECEIVING = Series.state == SeriesState.RECEIVING
_RELEASED = Series.released_at >= Series.last_received_at  # after its last instance
# What the judgement reads of a receiving series: its row only, no instance.
_EVIDENCE = (
    Series.id,
    Series.last_received_at,
    Series.released_at,
    Series.instance_count,
    Series.min_instance_number,
    Series.max_instance_number,
    Series.number_of_frames,
    Series.images_in_acquisition,
    Series.temporal_positions,
    Series.calling_ae_title,
)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they were UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _layout(session: Session, series_pk: int) -> InstanceLayout:
    rows = session.execute(
        select(Instance.instance_number, Instance.slice_position, Instance.temporal_position)
        .where(Instance.series_pk == series_pk)
    ).all()  # fmt: skip
    return InstanceLayout(
        numbers=[row[0] for row in rows],
        positions=[row[1] for row in rows],
        temporal=[row[2] for row in rows],
    )


class SeriesCompletion:
    """Judges the receiving series (module docstring); one per scheduler, it remembers
    which series it found incomplete until their rows change."""

    def __init__(
        self,
        stable_seconds: float,
        grace_seconds: float = 2.0,
        rules: Mapping[str, CompletionRule] | None = None,
    ) -> None:
        self.stable = timedelta(seconds=stable_seconds)
        self.grace = timedelta(seconds=min(grace_seconds, stable_seconds))  # quiet comes first
        self.rules = dict(rules or {})
        # Series judged incomplete, by what was judged: not read again until it changes.
        self._incomplete: dict[int, tuple[object, ...]] = {}

    def rule_for(self, calling_ae_title: str) -> CompletionRule | None:
        return self.rules.get(calling_ae_title) or self.rules.get(ANY_SENDER)

    def _reason(self, session: Session, row: Row, now: datetime) -> str | None:
        last = _utc(row.last_received_at)
        if last <= now - self.stable:
            return f"quiet period ({self.stable.total_seconds():g} s without a new instance)"
        judged = (row.last_received_at, row.released_at, row.instance_count)
        if self._incomplete.get(row.id) == judged:
            return None
        evidence = SeriesEvidence(
            instances=row.instance_count,
            lowest_number=row.min_instance_number,
            highest_number=row.max_instance_number,
            frames=row.number_of_frames,
            images_in_acquisition=row.images_in_acquisition,
            temporal_positions=row.temporal_positions,
            released=row.released_at is not None and _utc(row.released_at) >= last,
            sender=row.calling_ae_title,
        )
        rule = self.rule_for(row.calling_ae_title)
        if last > now - self.grace:  # released within its grace: only its sender's rule counts
            at_release = complete_at_release(evidence, rule)
            return None if at_release is None else f"evidence: {at_release}"
        reason = complete_by_evidence(evidence, rule, lambda: _layout(session, row.id))
        if reason is None:
            self._incomplete[row.id] = judged
        return None if reason is None else f"evidence: {reason}"

    def complete_series(self, session: Session, now: datetime) -> list[Series]:
        """The receiving series complete at ``now``, locked and marked complete (with the
        reason, ``Series.completed_by``) for routing in the caller's transaction."""
        judged = (Series.last_received_at <= now - self.grace) | _RELEASED
        rows = session.execute(select(*_EVIDENCE).where(_RECEIVING, judged)).all()
        held = {row.id for row in rows}
        self._incomplete = {k: v for k, v in self._incomplete.items() if k in held}
        due = {}
        for row in rows:
            reason = self._reason(session, row, now)
            if reason is not None:
                due[row.id] = (reason, row.last_received_at)
        if not due:
            return []
        complete = []
        for series in session.scalars(
            select(Series)
            .where(Series.id.in_(due), _RECEIVING)
            .order_by(Series.last_received_at)
            .with_for_update(skip_locked=True)
        ):
            reason, judged_at = due[series.id]
            if series.last_received_at != judged_at:
                continue  # an instance arrived since it was judged: judge it again
            series_state.completed(series, now, reason)
            complete.append(series)
        return complete

    def next_deadline(self, session: Session, now: datetime) -> datetime | None:
        """When the earliest receiving series may be complete without any news: its
        grace's end, or its quiet period's once its grace is over; None if none."""
        in_grace = session.scalar(
            select(func.min(Series.last_received_at)).where(
                _RECEIVING, Series.last_received_at > now - self.grace
            )
        )
        oldest = session.scalar(select(func.min(Series.last_received_at)).where(_RECEIVING))
        deadlines = [_utc(in_grace) + self.grace] if in_grace is not None else []
        if oldest is not None:
            deadlines.append(_utc(oldest) + self.stable)
        return min(deadlines, default=None)
