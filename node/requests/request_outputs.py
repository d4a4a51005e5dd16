"""The Output Information Sequence of a requested workitem: each SEG, SR, SC and KO its
jobs produced, referenced by Study, Series and SOP Instance UID and SOP Class, with
where to retrieve it: the AE titles of the DICOM archives the results went to (and the
WADO-RS URLs of the DICOMweb ones), or the node's own AE title when they went nowhere.

Only the results of jobs that succeeded are referenced: those are delivered to every
destination that takes them. A result's Series Instance UID is read from its file's
header (the result rows keep its SOP Instance UID only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom import Dataset, dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db.models import Job, JobState, ResultObject
from node.db.worklist import Workitem
from node.settings import Settings
from node.ups.job_sync import outputs_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """Where a workitem's jobs stand."""

    jobs: int
    succeeded: int
    failed: list[str]  # "model: reason" of each failed job
    delivering: int

    @property
    def settled(self) -> int:
        return self.succeeded + len(self.failed)


def outcome(session: Session, workitem: Workitem) -> Outcome:
    jobs = list(session.scalars(select(Job).where(Job.workitem_pk == workitem.id)))
    failed = [f"{j.model_name}: {j.error}" for j in jobs if j.state is JobState.FAILED]
    return Outcome(
        jobs=len(jobs),
        succeeded=sum(1 for j in jobs if j.state is JobState.SUCCEEDED),
        failed=failed,
        delivering=sum(1 for j in jobs if j.state is JobState.DELIVERING),
    )


def _series_of(settings: Settings, results: list[ResultObject]) -> dict[str, str]:
    found = {}
    for result in results:
        try:
            header = dcmread(
                settings.results_dir / result.path,
                stop_before_pixels=True,
                specific_tags=["SeriesInstanceUID"],
            )
        except (OSError, ValueError) as exc:  # gone (retention) or unreadable: left blank
            log.warning("result %s: its series is unknown: %s", result.sop_instance_uid, exc)
            continue
        found[result.sop_instance_uid] = str(header.get("SeriesInstanceUID", ""))
    return found


def request_outputs(session: Session, workitem: Workitem, settings: Settings) -> list[Dataset]:
    """The Output Information Sequence items of ``workitem``'s succeeded jobs' results."""
    items: list[Dataset] = []
    jobs = session.scalars(
        select(Job)
        .where(Job.workitem_pk == workitem.id, Job.state == JobState.SUCCEEDED)
        .order_by(Job.id)
    )
    for job in jobs:
        series_of = _series_of(settings, list(job.results))
        items.extend(outputs_for(session, job, series_of, settings.all_destinations))
    for item in items:
        if "DICOMRetrievalSequence" not in item and "WADORSRetrievalSequence" not in item:
            kept_here = Dataset()  # delivered nowhere: the node keeps it
            kept_here.RetrieveAETitle = settings.ae_title
            item.DICOMRetrievalSequence = [kept_here]
    return items
