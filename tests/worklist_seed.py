"""A reading room's worth of studies for the worklist tests (API and browser).

Seven studies with jobs (and one without, which the worklist leaves out), so that every
rule of the order shows: unacknowledged critical findings first (STAT, then HIGH), then
STAT, HIGH, MEDIUM and LOW work, oldest first within each. The STAT study's
segmentation job has a real overlay: Secondary Capture images made by the node's own
encoder (``workers.encode.sc``) from a CT of a sphere, kept under the results folder
as the analysis worker keeps them. Critical findings are made as rows (their writer,
the ledger, is tested with the analysis).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydicom.uid import SecondaryCaptureImageStorage
from sqlalchemy.orm import Session, sessionmaker

from node.db.findings import CriticalFinding
from node.db.models import (
    Job,
    JobState,
    Patient,
    ResultKind,
    ResultObject,
    Series,
    SeriesState,
    Study,
)
from node.db.session import transaction
from node.db.worklist import UpsPriority
from tests.encoding import segmentation_manifest, sphere_series
from workers.encode.identity import ResultUIDs
from workers.encode.sc import encode_overlay

NOW = datetime.now(UTC).replace(microsecond=0)
SPHERE_FINDINGS = {
    "model": "test-sphere-seg",
    "version": "1.2.0",
    "segments": {"Sphere lesion": {"label": 3, "voxels": 1790, "volume_ml": 4.387}},
}
NODULE_FINDINGS = {
    "model": "ct-nodule-classifier",
    "version": "1.0.0",
    "classes": {
        "nodule": {"probability": 0.9312, "present": True, "finding": "Nodule", "threshold": 0.5}
    },
}
# The order the worklist must list them in, by accession number.
ORDER = ["ACC-STAT", "ACC-HIGHCRIT", "ACC-STAT2", "ACC-HIGH", "ACC-MED1", "ACC-MED2", "ACC-LOW"]


@dataclass
class Seeded:
    studies: dict[str, str]  # accession -> Study Instance UID
    jobs: dict[str, int]  # a name -> job id
    findings: dict[str, int]  # a name -> critical finding id
    overlay_images: int  # the STAT segmentation job's SC images
    overlay_shape: tuple[int, int]  # rows, columns of each SC image


def write_overlay(
    results_dir: Path, work_dir: Path
) -> tuple[list[tuple[str, str]], tuple[int, int]]:
    """Overlay images of a CT sphere, written under ``results_dir``: their (SOP Instance
    UID, path relative to ``results_dir``) in slice order, and their rows and columns."""
    series = sphere_series(work_dir)
    manifest = segmentation_manifest(labels=(3,))
    uids = ResultUIDs.of_volume(series.volume, manifest)
    images = encode_overlay(
        series.volume, series.labels, manifest, SPHERE_FINDINGS, uids.sc_series, uids.sc_instance
    )
    folder = results_dir / "sc"
    folder.mkdir(parents=True, exist_ok=True)
    kept = []
    for image in images:
        path = folder / f"{image.SOPInstanceUID}.dcm"
        image.save_as(path, enforce_file_format=True)
        kept.append((str(image.SOPInstanceUID), str(path.relative_to(results_dir))))
    return kept, (int(images[0].Rows), int(images[0].Columns))


def _study(
    s: Session, accession: str, name: str, modality: str, hours_ago: float, description: str
) -> Series:
    number = len(ORDER) + 1 if accession not in ORDER else ORDER.index(accession) + 1
    study = Study(
        study_instance_uid=f"1.2.826.0.7.{number}",
        patient=Patient(patient_id=f"PID-{accession}", patient_name=name),
        study_date="20240301",
        accession_number=accession,
        study_description=description,
        first_received_at=NOW - timedelta(hours=hours_ago),
    )
    series = Series(
        series_instance_uid=f"{study.study_instance_uid}.1",
        study=study,
        modality=modality,
        series_description=f"{modality} series",
        series_number=1,
        state=SeriesState.ROUTED,
        completed_at=study.first_received_at,
    )
    s.add_all([study, series])
    return series


def _job(
    series: Series, model: str, state: JobState, priority: UpsPriority, **fields: object
) -> Job:
    return Job(
        series=series,
        model_name=model,
        model_version="1.0.0",
        state=state,
        priority=priority,
        attempts=1,
        **fields,  # type: ignore[arg-type]
    )


def _finding(
    job: Job, urgency: UpsPriority, text: str, value: float, **fields: object
) -> CriticalFinding:
    is_volume = "ml" in text
    return CriticalFinding(
        job_pk=job.id,
        output="Sphere lesion" if is_volume else "nodule",
        code_value="27925004",
        code_scheme="SCT",
        code_meaning="Nodule",
        value=value,
        unit="ml" if is_volume else "",
        threshold=1.0 if is_volume else 0.9,
        urgency=urgency.value,
        text=text,
        **fields,  # type: ignore[arg-type]
    )


def seed_worklist(sessions: sessionmaker[Session], results_dir: Path, work_dir: Path) -> Seeded:
    overlay, shape = write_overlay(results_dir, work_dir)
    S, H, M, L = UpsPriority.STAT, UpsPriority.HIGH, UpsPriority.MEDIUM, UpsPriority.LOW
    done, queued = JobState.SUCCEEDED, JobState.QUEUED
    with transaction(sessions) as s:
        stat = _study(
            s, "ACC-STAT", "ROE^RICHARD", "CT", 0.2, "CT CHEST EMERGENCY"
        )  # newest, yet first
        high_crit = _study(s, "ACC-HIGHCRIT", "POE^EDGAR", "CT", 4, "CT CHEST LOW DOSE")
        stat2 = _study(s, "ACC-STAT2", "MOE^ANNA", "CT", 1, "CT CHEST TRAUMA")
        high = _study(s, "ACC-HIGH", "LOE^BRIAN", "MR", 0.5, "MR HEAD STROKE")
        med1 = _study(s, "ACC-MED1", "DOE^JANE", "CT", 3, "CT CHEST FOLLOW-UP")
        med2 = _study(s, "ACC-MED2", "KOE^KARL", "CT", 2, "CT CHEST")
        low = _study(s, "ACC-LOW", "NOE^NORA", "CT", 5, "CT CHEST SCREENING")
        nojob = _study(
            s, "ACC-NOJOB", "ZOE^ZED", "SR", 6, "DOSE REPORT"
        )  # no job: not on the worklist
        nojob.state, nojob.state_reason = SeriesState.NO_MODEL, "no model accepts modality SR"
        jobs = {
            "stat_seg": _job(stat, "test-sphere-seg", done, S, findings=SPHERE_FINDINGS),
            "stat_class": _job(stat, "ct-nodule-classifier", done, M, findings=NODULE_FINDINGS),
            "high_crit": _job(high_crit, "ct-nodule-classifier", done, M, findings=NODULE_FINDINGS),
            "stat2": _job(stat2, "ct-nodule-classifier", queued, S),
            "high": _job(high, "mr-bleed", JobState.RUNNING, H),
            "med1": _job(med1, "test-sphere-seg", done, M, findings=SPHERE_FINDINGS),
            "med2": _job(med2, "ct-nodule-classifier", done, L, findings=NODULE_FINDINGS),
            "low": _job(
                low, "ct-nodule-classifier", JobState.FAILED, L, error="CUDA out of memory"
            ),
        }
        s.add_all(jobs.values())
        s.flush()
        for uid, path in overlay:
            s.add(
                ResultObject(
                    job=jobs["stat_seg"],
                    kind=ResultKind.SC,
                    sop_class_uid=SecondaryCaptureImageStorage,
                    sop_instance_uid=uid,
                    path=path,
                )
            )
        findings = {
            "stat": _finding(
                jobs["stat_seg"], S, "Sphere lesion: 4.4 ml (critical at 1.0 ml)", 4.387
            ),
            "high_crit": _finding(
                jobs["high_crit"], H, "Nodule: probability 0.93 (critical at 0.90)", 0.93
            ),
            "med2_acknowledged": _finding(
                jobs["med2"],
                M,
                "Nodule: probability 0.93 (critical at 0.90)",
                0.93,
                acknowledged_by="operator",
                acknowledged_role="operator",
                acknowledged_at=NOW - timedelta(hours=1),
                acknowledgement_note="called the ward",
            ),
        }
        s.add_all(findings.values())
        s.flush()
        studies = {
            series.study.accession_number: series.study.study_instance_uid
            for series in (stat, high_crit, stat2, high, med1, med2, low)
        }
        return Seeded(
            studies=studies,
            jobs={name: job.id for name, job in jobs.items()},
            findings={name: finding.id for name, finding in findings.items()},
            overlay_images=len(overlay),
            overlay_shape=shape,
        )
