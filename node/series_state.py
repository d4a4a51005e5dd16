"""Series.state: the one module that writes it (with its reason and its completion time).

A series is RECEIVING from its first instance (the column's default) until it is
complete (:mod:`node.completion`: its data say so, or its quiet period passed). Then
completion marks it complete here, with why; routing decides what it leads to (a
:class:`RoutingVerdict`, computed without touching the state), and
:func:`record_routing` writes that verdict: ROUTED, or NO_MODEL with every model's
reason. An instance that arrives for a complete series sends it back to RECEIVING
(:func:`instance_added`, called by the index), so it is routed again once complete.

Every transition of ``Series.state``, ``state_reason``, ``completed_at`` and
``completed_by`` is in this module; any other module reads them only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from node.db.models import Job, Series, SeriesState

REOPENED = "new instances arrived after completion"
INPUT_ONLY = "an additional input of a multimodal model"


@dataclass(frozen=True)
class RoutingVerdict:
    """What routing decided for one complete series."""

    routed: bool  # False: no model applies (NO_MODEL)
    reason: str  # why no model applies, or why routed without a job of its own; else ""
    jobs: tuple[Job, ...]  # created for this series, or for a waiting series it completes


def _write(series: Series, state: SeriesState, reason: str) -> None:
    series.state = state
    series.state_reason = reason


def instance_added(series: Series) -> None:
    """A new instance arrived: a complete series is RECEIVING again, to be routed anew.

    A duplicate of an instance already held is not a new instance (the index does not
    call this), so re-sends cost nothing.
    """
    if series.state is not SeriesState.RECEIVING:
        _write(series, SeriesState.RECEIVING, REOPENED)


def completed(series: Series, now: datetime, reason: str) -> None:
    """The series is complete, for ``reason`` (its evidence, or the quiet period);
    routing follows in the same transaction."""
    series.completed_at = now
    series.completed_by = reason


def record_routing(series: Series, verdict: RoutingVerdict) -> None:
    """Write routing's verdict on ``series``, and on each series it completed a job for."""
    for job in verdict.jobs:
        # A complete series that was waiting for this one (a multimodal model's further
        # input) now has its job; one already ROUTED keeps its reason.
        if job.series is not series and job.series.state is not SeriesState.ROUTED:
            _write(job.series, SeriesState.ROUTED, "")
    if verdict.routed:
        _write(series, SeriesState.ROUTED, verdict.reason)
    else:
        _write(series, SeriesState.NO_MODEL, verdict.reason)
