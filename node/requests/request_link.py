"""Which workitem a study's new jobs belong to, while the node performs a request for it.

A workitem a RIS asked for (origin REQUESTED), or one the node pulled from another
provider (PULLED), names a study. While the node performs it (IN PROGRESS, the node the
performer, no cancel asked for), every job routing creates for that study's series is
the workitem's: it carries ``Job.workitem_pk`` (and so the workitem's priority,
``node.priority``), and only the requested model runs on it when the workitem names
one. Routing reads this at job creation (``node.routing``), whether the series just
completed (retrieved, or pushed meanwhile) or was already held (the runner,
``node.requests.request_runner``, routes those itself).
"""

from __future__ import annotations

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from node.db.models import Study
from node.db.worklist import UpsPriority, UpsState, Workitem, WorkitemOrigin
from node.ups.rows import NODE_PERFORMER

PERFORMED_ORIGINS = (WorkitemOrigin.REQUESTED, WorkitemOrigin.PULLED)

# The workitems' order: STAT first (UpsPriority.rank), then the oldest.
BY_PRIORITY = case({priority: priority.rank for priority in UpsPriority}, value=Workitem.priority)


def active_request(session: Session, study: Study) -> Workitem | None:
    """The workitem the node performs for ``study`` now (the most urgent, the oldest of
    several); None when there is none."""
    return session.scalars(
        select(Workitem)
        .where(
            Workitem.study_instance_uid == study.study_instance_uid,
            Workitem.origin.in_(PERFORMED_ORIGINS),
            Workitem.state == UpsState.IN_PROGRESS,
            Workitem.performer == NODE_PERFORMER,
            Workitem.cancel_requested_at.is_(None),
        )
        .order_by(BY_PRIORITY, Workitem.id)
        .limit(1)
    ).first()


def wanted(request: Workitem | None, model_name: str) -> bool:
    """Whether a job of ``model_name`` may be created under ``request`` (any model when
    there is no request, or the request names none)."""
    return request is None or not request.requested_model or request.requested_model == model_name
