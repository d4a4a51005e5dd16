"""The instance index: Patient/Study/Series/Instance rows for what the spool holds.

``InstanceHeader`` is what the receive path reads from a header (no pixel decode);
``index_instance`` records it in one transaction. A series that gains an instance
goes (back) to RECEIVING through :mod:`node.series_state` (the one writer of a
series' state), so its quiet period starts again; a duplicate of an instance already
held replaces its file and changes nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node import series_state
from node.db.models import Instance, Patient, Series, Study, utcnow
from node.db.session import SessionFactory, transaction
from node.uids import validate_uid


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__"):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class InstanceHeader:
    """The attributes the node indexes, validated; built from a header only."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str
    issuer: str
    patient_name: str
    study_date: str
    accession_number: str
    study_description: str
    modality: str
    body_part_examined: str
    series_description: str
    series_number: int | None
    image_type: str
    instance_number: int | None

    @classmethod
    def from_dataset(cls, ds: Dataset, transfer_syntax_uid: str) -> InstanceHeader:
        """Validate the identifying UIDs (they become file names) and read the rest."""
        return cls(
            sop_class_uid=validate_uid(ds.get("SOPClassUID"), "SOP Class UID"),
            sop_instance_uid=validate_uid(ds.get("SOPInstanceUID"), "SOP Instance UID"),
            study_instance_uid=validate_uid(ds.get("StudyInstanceUID"), "Study Instance UID"),
            series_instance_uid=validate_uid(ds.get("SeriesInstanceUID"), "Series Instance UID"),
            transfer_syntax_uid=validate_uid(transfer_syntax_uid, "Transfer Syntax UID"),
            patient_id=_text(ds, "PatientID", 64),
            issuer=_text(ds, "IssuerOfPatientID", 64),
            patient_name=_text(ds, "PatientName", 324),
            study_date=_text(ds, "StudyDate", 8),
            accession_number=_text(ds, "AccessionNumber", 16),
            study_description=_text(ds, "StudyDescription", 64),
            modality=_text(ds, "Modality", 16),
            body_part_examined=_text(ds, "BodyPartExamined", 16).upper(),
            series_description=_text(ds, "SeriesDescription", 64),
            series_number=_int(ds, "SeriesNumber"),
            image_type=_text(ds, "ImageType", 128).upper(),
            instance_number=_int(ds, "InstanceNumber"),
        )

    @property
    def spool_path(self) -> str:
        """Where the instance lives, relative to the spool; built from validated UIDs only."""
        return f"{self.study_instance_uid}/{self.series_instance_uid}/{self.sop_instance_uid}.dcm"


def _patient(session: Session, header: InstanceHeader) -> Patient:
    patient = session.scalars(
        select(Patient).where(
            Patient.patient_id == header.patient_id, Patient.issuer == header.issuer
        )
    ).first()
    if patient is None:
        patient = Patient(
            patient_id=header.patient_id, issuer=header.issuer, patient_name=header.patient_name
        )
        session.add(patient)
    return patient


def _study(session: Session, header: InstanceHeader, patient: Patient) -> Study:
    study = session.scalars(
        select(Study).where(Study.study_instance_uid == header.study_instance_uid)
    ).first()
    if study is None:
        study = Study(
            study_instance_uid=header.study_instance_uid,
            patient=patient,
            study_date=header.study_date,
            accession_number=header.accession_number,
            study_description=header.study_description,
        )
        session.add(study)
    return study


def _series(session: Session, header: InstanceHeader, study: Study) -> Series:
    series = session.scalars(
        select(Series).where(Series.series_instance_uid == header.series_instance_uid)
    ).first()
    if series is None:
        series = Series(
            series_instance_uid=header.series_instance_uid,
            study=study,
            modality=header.modality,
            body_part_examined=header.body_part_examined,
            series_description=header.series_description,
            sop_class_uid=header.sop_class_uid,
            image_type=header.image_type,
            series_number=header.series_number,
        )
        session.add(series)
    return series


def _upsert(session: Session, header: InstanceHeader, size: int, calling_aet: str) -> None:
    study = _study(session, header, _patient(session, header))
    series = _series(session, header, study)
    now = utcnow()
    instance = session.scalars(
        select(Instance).where(Instance.sop_instance_uid == header.sop_instance_uid)
    ).first()
    if instance is None:
        instance = Instance(sop_instance_uid=header.sop_instance_uid, series=series)
        session.add(instance)
        series.last_received_at = now
        # A new instance for a series already routed: analyze it again once quiet.
        series_state.instance_added(series)
    instance.sop_class_uid = header.sop_class_uid
    instance.transfer_syntax_uid = header.transfer_syntax_uid
    instance.instance_number = header.instance_number
    instance.path = header.spool_path
    instance.size_bytes = size
    instance.calling_ae_title = calling_aet[:16]
    instance.received_at = now


def index_instance(
    sessions: SessionFactory, header: InstanceHeader, size: int, calling_aet: str
) -> None:
    """Record one stored instance. Safe to call again for the same instance."""
    for attempt in range(3):
        try:
            with transaction(sessions) as session:
                _upsert(session, header, size, calling_aet)
            return
        except IntegrityError:
            # Two associations created the same patient/study/series at once; the
            # row exists now, so the next attempt updates it.
            if attempt == 2:
                raise
