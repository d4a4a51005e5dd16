"""Jobs for workers under test, made without the receiving side: a series' files put in
the node's spool, its rows (patient, study, series, instances) and one queued job per
model written straight into the database, as routing would leave them."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread

from models.registry import discover_packages
from node.db.models import Instance, Job, Patient, Series, Study
from node.db.session import SessionFactory, transaction
from node.settings import Settings


def queue_series_jobs(
    sessions: SessionFactory,
    settings: Settings,
    files: Sequence[Path],
    models: Sequence[str],
    versions: dict[str, str] | None = None,
) -> list[int]:
    """Put ``files`` (one series) in the spool and record it with a QUEUED job for each
    of ``models`` (at its installed version unless ``versions`` says); the job ids."""
    headers = [dcmread(path, stop_before_pixels=True) for path in files]
    first = headers[0]
    folder = Path(str(first.StudyInstanceUID)) / str(first.SeriesInstanceUID)
    (settings.spool_dir / folder).mkdir(parents=True, exist_ok=True)
    installed = {
        p.name: p.manifest.version for p in discover_packages(settings.models_dir).packages
    }
    versions = {**installed, **(versions or {})}
    with transaction(sessions) as session:
        study = Study(
            study_instance_uid=str(first.StudyInstanceUID),
            patient=Patient(patient_id=str(first.PatientID)),
        )
        series = Series(
            series_instance_uid=str(first.SeriesInstanceUID), study=study, modality="CT"
        )
        for path, header in zip(files, headers, strict=True):
            relative = folder / f"{header.SOPInstanceUID}.dcm"
            shutil.copyfile(path, settings.spool_dir / relative)
            session.add(
                Instance(
                    sop_instance_uid=str(header.SOPInstanceUID),
                    series=series,
                    sop_class_uid=str(header.SOPClassUID),
                    transfer_syntax_uid=str(header.file_meta.TransferSyntaxUID),
                    path=str(relative),
                    size_bytes=path.stat().st_size,
                )
            )
        jobs = [
            Job(series=series, model_name=name, model_version=versions[name]) for name in models
        ]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]
