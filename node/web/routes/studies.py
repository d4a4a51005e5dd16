"""``GET /api/studies``: received studies, newest first, with their series and jobs.

Patient name, patient ID and accession number are masked for roles that may not see
them (``AINODE_PHI_ROLES``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from node.db.models import Instance, Series, Study
from node.web.routes.deps import ContextDep, SessionDep, ViewerDep
from node.web.routes.schemas import INSTANCE_COUNTS, StudyOut

router = APIRouter(tags=["studies"])


@router.get("/studies")
def list_studies(
    session: SessionDep,
    context: ContextDep,
    principal: ViewerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[StudyOut]:
    studies = session.scalars(
        select(Study)
        .options(
            selectinload(Study.patient),
            selectinload(Study.series).selectinload(Series.jobs),
        )
        .order_by(Study.first_received_at.desc(), Study.id.desc())
        .limit(limit)
    ).all()
    counts = {INSTANCE_COUNTS: _instance_counts(session, studies)}
    shown = [StudyOut.model_validate(study, context=counts) for study in studies]
    if context.identifiers.may_see(principal.role):
        return shown
    return [study.masked() for study in shown]


def _instance_counts(session: Session, studies: Sequence[Study]) -> dict[int, int]:
    """Instances per series of ``studies``, in one query (not one per series)."""
    series_pks = [series.id for study in studies for series in study.series]
    if not series_pks:
        return {}
    rows = session.execute(
        select(Instance.series_pk, func.count())
        .where(Instance.series_pk.in_(series_pks))
        .group_by(Instance.series_pk)
    ).all()
    return {series_pk: count for series_pk, count in rows}
