"""``GET /api/studies``: received studies, newest first, with their series and jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from node.db.models import Instance, Series, Study
from node.web.routes.deps import SessionDep
from node.web.routes.schemas import PatientOut, SeriesJobOut, SeriesOut, StudyOut

router = APIRouter(tags=["studies"])


def _series_order(series: Series) -> tuple[bool, int, int]:
    return (series.series_number is None, series.series_number or 0, series.id)


@router.get("/studies")
def list_studies(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
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
    series_pks = [series.id for study in studies for series in study.series]
    counts: dict[int, int] = {}
    if series_pks:
        rows = session.execute(
            select(Instance.series_pk, func.count())
            .where(Instance.series_pk.in_(series_pks))
            .group_by(Instance.series_pk)
        ).all()
        counts = {series_pk: count for series_pk, count in rows}
    return [
        StudyOut(
            id=study.id,
            study_instance_uid=study.study_instance_uid,
            study_date=study.study_date,
            accession_number=study.accession_number,
            description=study.study_description,
            first_received_at=study.first_received_at,
            patient=PatientOut(
                patient_id=study.patient.patient_id,
                issuer=study.patient.issuer,
                name=study.patient.patient_name,
            ),
            series=[
                SeriesOut(
                    id=series.id,
                    series_instance_uid=series.series_instance_uid,
                    series_number=series.series_number,
                    modality=series.modality,
                    body_part_examined=series.body_part_examined,
                    description=series.series_description,
                    instances=counts.get(series.id, 0),
                    state=series.state,
                    state_reason=series.state_reason,
                    last_received_at=series.last_received_at,
                    completed_at=series.completed_at,
                    jobs=[
                        SeriesJobOut(
                            id=job.id,
                            model_name=job.model_name,
                            model_version=job.model_version,
                            state=job.state,
                        )
                        for job in sorted(series.jobs, key=lambda job: job.id)
                    ],
                )
                for series in sorted(study.series, key=_series_order)
            ],
        )
        for study in studies
    ]
