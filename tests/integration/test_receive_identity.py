"""A known SOP Instance UID: identical resends, changed resends, conflicts; patient
attributes that disagree within a study; names kept as DICOM writes them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import select

from node.db.models import Instance, Series, SeriesState, Study
from node.scp import StorageSCP
from node.status import StoreStatus
from node.web.routes.schemas import StudyOut
from tests.receive_files import header, write_instance
from tests.receive_node import pynetdicom_store, running_scp, storescu


def routed(scp: StorageSCP) -> None:
    with scp.sessions() as session:
        session.execute(Series.__table__.update().values(state=SeriesState.ROUTED))
        session.commit()


def one_instance(scp: StorageSCP) -> Instance:
    with scp.sessions() as session:
        return session.scalars(select(Instance)).one()


def sent(scp: StorageSCP, path: Path, calling: str = "MODALITY") -> None:
    result = storescu(scp.settings.dicom_port, path, calling=calling)
    assert result.returncode == 0 and "Success" in result.stderr, result.stderr


def test_identical_resend_changes_nothing_and_digest_is_kept(tmp_path: Path) -> None:
    first = tmp_path / "a.dcm"
    write_instance(first, header("1.2.3.4.1"), 4096)
    with running_scp(tmp_path / "var") as scp:
        sent(scp, first)
        row = one_instance(scp)
        kept = scp.settings.spool_dir / row.path
        assert row.digest == hashlib.sha256(kept.read_bytes()).hexdigest()
        routed(scp)
        before = kept.stat().st_mtime_ns
        sent(scp, first, calling="OTHER")
        again = one_instance(scp)
        assert (again.digest, again.calling_ae_title) == (row.digest, "MODALITY")
        assert kept.stat().st_mtime_ns == before
        with scp.sessions() as session:
            assert session.scalars(select(Series)).one().state is SeriesState.ROUTED
        assert not list((scp.settings.spool_dir / ".incoming").iterdir())


def test_changed_content_keeps_the_first_by_default(tmp_path: Path) -> None:
    first, second = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_instance(first, header("1.2.3.4.2"), 4096)
    write_instance(second, header("1.2.3.4.2"), 4096, fill=b"\x02")
    with running_scp(tmp_path / "var") as scp:
        sent(scp, first)
        routed(scp)
        kept = scp.settings.spool_dir / one_instance(scp).path
        original = kept.read_bytes()
        sent(scp, second)
        assert kept.read_bytes() == original
        with scp.sessions() as session:
            assert session.scalars(select(Series)).one().state is SeriesState.ROUTED


def test_changed_content_replaces_and_reopens_under_replace_policy(tmp_path: Path) -> None:
    first, second = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_instance(first, header("1.2.3.4.3"), 4096)
    write_instance(second, header("1.2.3.4.3"), 4096, fill=b"\x02")
    with running_scp(tmp_path / "var", duplicate_policy="replace") as scp:
        sent(scp, first)
        routed(scp)
        sent(scp, second)
        row = one_instance(scp)
        kept = scp.settings.spool_dir / row.path
        assert dcmread(kept).PixelData[:4] == b"\x02" * 4
        assert row.digest == hashlib.sha256(kept.read_bytes()).hexdigest()
        with scp.sessions() as session:
            assert session.scalars(select(Series)).one().state is SeriesState.RECEIVING


def test_known_uid_under_another_patient_study_or_series_is_refused(tmp_path: Path) -> None:
    first = tmp_path / "a.dcm"
    write_instance(first, header("1.2.3.4.4"), 0)
    moved = {
        "patient": dict(PatientID="P2", StudyInstanceUID="1.2.9.1", SeriesInstanceUID="1.2.9.2"),
        "study": dict(StudyInstanceUID="1.2.9.3", SeriesInstanceUID="1.2.9.4"),
        "series": dict(SeriesInstanceUID="1.2.9.5"),
    }
    with running_scp(tmp_path / "var") as scp:
        sent(scp, first)
        row = one_instance(scp)
        original = (scp.settings.spool_dir / row.path).read_bytes()
        for what, attributes in moved.items():
            path = tmp_path / f"{what}.dcm"
            write_instance(path, header("1.2.3.4.4", **attributes), 0)
            status = pynetdicom_store(scp.settings.dicom_port, path)
            assert status.Status == StoreStatus.IDENTITY_CONFLICT
            assert f"another {what}" in str(status.ErrorComment)
        after = one_instance(scp)
        assert (after.path, after.series_pk, after.digest) == (row.path, row.series_pk, row.digest)
        assert (scp.settings.spool_dir / row.path).read_bytes() == original
        files = [p for p in scp.settings.spool_dir.rglob("*.dcm")]
        assert files == [scp.settings.spool_dir / row.path]


def test_names_stay_dicom_strings_and_patient_disagreements_are_flagged(tmp_path: Path) -> None:
    first, second = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_instance(first, header("1.2.3.4.5"), 0)
    write_instance(second, header("1.2.3.4.6", PatientName="Doe^Jane", PatientSex="F"), 0)
    with running_scp(tmp_path / "var") as scp:
        sent(scp, first)
        sent(scp, second)
        with scp.sessions() as session:
            study = session.scalars(select(Study)).one()
            assert study.patient.patient_name == "Doe^John"  # the first stays
            assert session.scalars(select(Series)).one().image_type == "ORIGINAL\\PRIMARY\\AXIAL"
            shown = StudyOut.model_validate(study).model_dump()
        assert shown["patient"]["name"] == "Doe^John"
        conflicts = shown["patient_conflicts"].splitlines()
        assert conflicts == ["PatientName: 'Doe^John' / 'Doe^Jane'", "PatientSex: 'M' / 'F'"]
