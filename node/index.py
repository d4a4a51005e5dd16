"""The instance index: Patient/Study/Series/Instance rows for what the spool holds.

``InstanceHeader`` is what the receive path reads from a header (no pixel decode);
``record`` decides what a received instance is (new, an identical resend, a changed
resend, or a conflict with what is held) and records it in the caller's transaction
(the SCP's group committer, :mod:`node.group_commit`, or ``index_instance``'s own),
placing its file (through the caller's ``place``) before the row commits. A series
that gains an instance goes (back) to RECEIVING through :mod:`node.series_state` (the
one writer of a series' state), so completion judges it again.

A known SOP Instance UID is handled as dcm4chee-arc-light does (StoreServiceEJB
``updateDB``): an equal digest is ignored, other content follows the overwrite policy
(``AINODE_DUPLICATE_POLICY``), and an instance never moves to another series, study
or patient: that is refused, as dcm4chee refuses a study mismatch (its
``STUDY_MISMATCH``, a C8xx failure) and a conflicting Patient ID
(``CONFLICTING_PID_NOT_ACCEPTED``). Patient attributes that disagree within a study
are flagged on the study, never overwritten.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from node import series_state
from node.completion_evidence import SERIES_EVIDENCE, HeaderEvidence, evidence_parameters
from node.db.models import Instance, Patient, Series, SeriesState, Study, utcnow
from node.db.session import SessionFactory, transaction
from node.identity_cache import IdentityCache, SeriesKey
from node.uids import validate_uid

log = logging.getLogger(__name__)


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    # As DICOM writes them: values joined by backslash; a PersonName is one value
    # (iterating it would yield its characters).
    if isinstance(value, MultiValue | list | tuple):
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
    birth_date: str
    sex: str
    study_date: str
    accession_number: str
    study_description: str
    modality: str
    body_part_examined: str
    series_description: str
    series_number: int | None
    image_type: str
    instance_number: int | None
    evidence: HeaderEvidence  # what completion judges by, kept by _TOUCH and the row

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
            birth_date=_text(ds, "PatientBirthDate", 8),
            sex=_text(ds, "PatientSex", 16),
            study_date=_text(ds, "StudyDate", 8),
            accession_number=_text(ds, "AccessionNumber", 16),
            study_description=_text(ds, "StudyDescription", 64),
            modality=_text(ds, "Modality", 16),
            body_part_examined=_text(ds, "BodyPartExamined", 16).upper(),
            series_description=_text(ds, "SeriesDescription", 64),
            series_number=_int(ds, "SeriesNumber"),
            image_type=_text(ds, "ImageType", 128).upper(),
            instance_number=_int(ds, "InstanceNumber"),
            evidence=HeaderEvidence.from_dataset(ds),
        )

    @property
    def spool_path(self) -> str:
        """Where the instance lives, relative to the spool; built from validated UIDs only."""
        return f"{self.study_instance_uid}/{self.series_instance_uid}/{self.sop_instance_uid}.dcm"


class Outcome(enum.StrEnum):
    """What a received instance turned out to be; every one is a C-STORE success."""

    STORED = "stored"  # new: file kept, row written
    IDENTICAL = "identical"  # same UID, same digest: nothing changes
    KEPT_FIRST = "kept_first"  # same UID, other content, policy keep_first: discarded
    REPLACED = "replaced"  # same UID, other content, policy replace: series re-opened


class IdentityConflict(Exception):
    """The instance contradicts what is held (another series, study or patient)."""


@dataclass(frozen=True)
class Received:
    """What the receive path knows about the bytes, beyond the header."""

    size: int
    digest: str
    calling_aet: str
    duplicate_policy: str  # "keep_first" or "replace"


# Patient attributes a study's instances must agree on: (header field, row field, keyword).
_PATIENT_ATTRIBUTES = (
    ("patient_id", "patient_id", "PatientID"),
    ("issuer", "issuer", "IssuerOfPatientID"),
    ("patient_name", "patient_name", "PatientName"),
    ("birth_date", "birth_date", "PatientBirthDate"),
    ("sex", "sex", "PatientSex"),
)


def _patient(session: Session, header: InstanceHeader) -> Patient:
    patient = session.scalars(
        select(Patient).where(
            Patient.patient_id == header.patient_id, Patient.issuer == header.issuer
        )
    ).first()
    if patient is None:
        patient = Patient(
            patient_id=header.patient_id,
            issuer=header.issuer,
            patient_name=header.patient_name,
            birth_date=header.birth_date,
            sex=header.sex,
        )
        session.add(patient)
    return patient


def _flag_patient_conflicts(study: Study, header: InstanceHeader) -> None:
    """Note on the study every patient attribute this instance gives differently."""
    lines = [line for line in study.patient_conflicts.splitlines() if line]
    for field, column, keyword in _PATIENT_ATTRIBUTES:
        kept, received = getattr(study.patient, column), getattr(header, field)
        line = f"{keyword}: {kept!r} / {received!r}"
        if kept != received and line not in lines:
            lines.append(line)
            log.warning("study %s: %s differs (kept / received)", study.study_instance_uid, line)
    study.patient_conflicts = "\n".join(lines)


def _study(session: Session, header: InstanceHeader) -> Study:
    study = session.scalars(
        select(Study).where(Study.study_instance_uid == header.study_instance_uid)
    ).first()
    if study is not None:
        _flag_patient_conflicts(study, header)
        return study
    study = Study(
        study_instance_uid=header.study_instance_uid,
        patient=_patient(session, header),
        study_date=header.study_date,
        accession_number=header.accession_number,
        study_description=header.study_description,
        patient_conflicts="",
    )
    session.add(study)
    return study


def _series(session: Session, header: InstanceHeader) -> Series:
    series = session.scalars(
        select(Series).where(Series.series_instance_uid == header.series_instance_uid)
    ).first()
    if series is not None:
        if series.study.study_instance_uid != header.study_instance_uid:
            raise IdentityConflict("Series Instance UID is held under another study")
        _flag_patient_conflicts(series.study, header)
        return series
    series = Series(
        series_instance_uid=header.series_instance_uid,
        study=_study(session, header),
        modality=header.modality,
        body_part_examined=header.body_part_examined,
        series_description=header.series_description,
        sop_class_uid=header.sop_class_uid,
        image_type=header.image_type,
        series_number=header.series_number,
    )
    session.add(series)
    return series


def _conflict(instance: Instance, header: InstanceHeader) -> str | None:
    """Why a held instance cannot be this one, or None when they agree on identity."""
    series = instance.series
    study = series.study
    if study.patient.patient_id != header.patient_id or study.patient.issuer != header.issuer:
        return "SOP Instance UID is held for another patient"
    if study.study_instance_uid != header.study_instance_uid:
        return "SOP Instance UID is held under another study"
    if series.series_instance_uid != header.series_instance_uid:
        return "SOP Instance UID is held under another series"
    if instance.sop_class_uid != header.sop_class_uid:
        return "SOP Instance UID is held with another SOP Class"
    return None


def _describe(instance: Instance, header: InstanceHeader, received: Received) -> None:
    instance.sop_class_uid = header.sop_class_uid
    instance.transfer_syntax_uid = header.transfer_syntax_uid
    instance.instance_number = header.instance_number
    instance.path = header.spool_path
    instance.size_bytes = received.size
    instance.digest = received.digest
    instance.calling_ae_title = received.calling_aet[:16]
    instance.received_at = utcnow()


def _known(
    instance: Instance, header: InstanceHeader, received: Received, place: Callable[[], None]
) -> Outcome:
    conflict = _conflict(instance, header)
    if conflict is not None:
        raise IdentityConflict(conflict)
    if instance.digest == received.digest:
        return Outcome.IDENTICAL
    if received.duplicate_policy != "replace":
        log.warning(
            "%s sent %s again with other content; the first is kept (duplicate policy)",
            received.calling_aet,
            header.sop_instance_uid,
        )
        return Outcome.KEPT_FIRST
    log.warning("%s replaced %s with other content", received.calling_aet, header.sop_instance_uid)
    place()
    _describe(instance, header, received)
    instance.series.last_received_at = instance.received_at
    series_state.instance_added(instance.series)  # other content: analyse it again
    return Outcome.REPLACED


def _patient_of(header: InstanceHeader) -> tuple[str, ...]:
    return tuple(getattr(header, field) for field, _column, _keyword in _PATIENT_ATTRIBUTES)


# The hot path's statements, built once (Core, so the compiled form is cached): the ORM's
# per-statement work cost more than the database did.
_INSTANCES = Instance.__table__
_SERIES = Series.__table__
_HELD = select(_INSTANCES.c.id).where(_INSTANCES.c.sop_instance_uid == bindparam("uid"))
_ADD = insert(_INSTANCES)
_FROM_HEADER = ("sop_instance_uid", "sop_class_uid", "transfer_syntax_uid", "instance_number")
# last_received_at and the evidence are the index's; the state comes back for series_state.
_TOUCH = (
    update(_SERIES)
    .where(_SERIES.c.id == bindparam("series"))
    .values(last_received_at=bindparam("now"), **SERIES_EVIDENCE)
    .returning(_SERIES.c.state)
)


def _cached_series(
    session: Session, header: InstanceHeader, cache: IdentityCache, touch: dict[str, object]
) -> SeriesKey | None:
    """The held series from the cache, its arrival time updated; None when not cached."""
    key = cache.get(header.series_instance_uid)
    if key is None:
        return None
    if key.study_instance_uid != header.study_instance_uid:
        raise IdentityConflict("Series Instance UID is held under another study")
    state = session.connection().execute(_TOUCH, {**touch, "series": key.series_pk}).scalar()
    if state is None:  # the row went away: look it up again
        cache.forget(header.series_instance_uid)
        return None
    if key.patient != _patient_of(header):
        _flag_patient_conflicts(session.get_one(Study, key.study_pk), header)
    if state is not SeriesState.RECEIVING:  # routed already: analyze it again once complete
        series_state.instance_added(session.get_one(Series, key.series_pk))
    return key


def _looked_up_series(
    session: Session, header: InstanceHeader, touch: dict[str, object]
) -> SeriesKey:
    """The series the instance goes under, read (or created) through the ORM."""
    series = _series(session, header)
    series_state.instance_added(series)  # routed already: analyze it again once complete
    session.flush()  # assigns the new rows' keys
    session.connection().execute(_TOUCH, {**touch, "series": series.id})
    patient = series.study.patient
    held = tuple(getattr(patient, column) for _field, column, _kw in _PATIENT_ATTRIBUTES)
    return SeriesKey(series.id, header.study_instance_uid, series.study_pk, held)


def record(
    session: Session,
    header: InstanceHeader,
    received: Received,
    place: Callable[[bool], None],
    cache: IdentityCache,
) -> tuple[Outcome, SeriesKey | None]:
    """Record one received instance in the caller's open transaction; ``place(new)``
    puts its file where the row says (``new``: no row held it before). Returns what it
    was, and the series key to cache once the transaction commits. Raises
    :class:`IdentityConflict`."""
    held = session.connection().execute(_HELD, {"uid": header.sop_instance_uid}).scalar()
    if held is not None:
        instance = session.get_one(Instance, held)
        return _known(instance, header, received, lambda: place(False)), None
    now = utcnow()
    evidence = evidence_parameters(header.evidence, header.instance_number, received.calling_aet)
    touch = {"now": now, **evidence}
    key = _cached_series(session, header, cache, touch) or _looked_up_series(session, header, touch)
    place(True)  # durable before the row commits: a crash leaves a file to sweep
    row = {name: getattr(header, name) for name in _FROM_HEADER} | header.evidence.instance_columns
    row.update(series_pk=key.series_pk, path=header.spool_path, size_bytes=received.size,
               digest=received.digest, calling_ae_title=received.calling_aet[:16],
               received_at=now)  # fmt: skip
    session.connection().execute(_ADD, row)
    return Outcome.STORED, key


def index_instance(
    sessions: SessionFactory,
    header: InstanceHeader,
    received: Received,
    place: Callable[[], None],
    unplace: Callable[[], None],
) -> Outcome:
    """Decide what one instance is and record it in a transaction of its own (the SCP
    batches instead: :mod:`node.group_commit`); ``place`` puts its file where the row
    says (idempotent; called only when the new bytes are kept).

    If the transaction fails after a new instance's file was placed, ``unplace``
    removes it: no file without a row. Raises :class:`IdentityConflict`.
    """
    placed_new: list[bool] = []

    def place_new(new: bool) -> None:
        place()
        if new:
            placed_new.append(True)

    for attempt in range(3):
        try:
            with transaction(sessions) as session:
                outcome, _key = record(session, header, received, place_new, IdentityCache())
                return outcome
        except IntegrityError:
            # Two associations created the same patient/study/series at once; the
            # row exists now, so the next attempt finds it.
            if attempt == 2:
                if placed_new:
                    unplace()
                raise
        except IdentityConflict:
            raise
        except BaseException:
            if placed_new:
                unplace()
            raise
    raise AssertionError("unreachable")


def indexed_paths(sessions: SessionFactory) -> set[str]:
    """Every spool path an Instance row describes (for the start-up sweep)."""
    with sessions() as session:
        return set(session.scalars(select(Instance.path)))
