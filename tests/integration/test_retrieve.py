"""Retrieval from a real Orthanc (the PACS) into the node, by each method.

C-MOVE sends the study to the node's Storage SCP (running in the test process); C-GET and
WADO-RS bring it into the same store path in the process (node.retrieve.retrieve_intake). Each
ends with the study's rows and files held exactly as a push would leave them: the
bytes kept as the PACS holds them (an RLE instance stays RLE), digests that match the
files, a second retrieval discarded as an identical resend, and the series marked
released (completion's evidence). A failure names the method, the peer and the status.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import RLELossless, generate_uid
from sqlalchemy import select

from node.acceptor.record import AssociationRecord
from node.completion_release import SeriesRelease
from node.db.models import Instance, Series, Study
from node.db.session import SessionFactory
from node.retrieve.retrieve_outcome import RetrieveError
from node.retrieve.retrieve_settings import RetrieveSource
from node.retrieve.retriever import StudyRetriever
from node.scp import StorageSCP
from tests.factories import make_ct_series, write_series
from tests.orthanc import Orthanc, free_port, start_orthanc
from tests.receive_node import running_scp

METHODS = ["move", "get", "wado"]


@dataclass
class Pacs:
    orthanc: Orthanc
    study_uid: str
    sop_uids: set[str]
    rle_uid: str  # the MR instance Orthanc holds in RLE Lossless


def _study_files(directory: Path) -> tuple[str, list[Path], str]:
    """A small CT series and an RLE-compressed MR series of the same study and patient."""
    hu = np.random.default_rng(7).normal(-500, 200, size=(6, 32, 32)).astype(np.float32)
    datasets = make_ct_series(hu, (2.5, 0.8, 0.8), patient_id="RETRIEVE1")
    study_uid = str(datasets[0].StudyInstanceUID)
    files = write_series(datasets, directory / "ct")
    mr = dcmread(get_testdata_file("MR_small_RLE.dcm", download=False))
    mr.StudyInstanceUID = study_uid
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"):
        setattr(mr, keyword, datasets[0].get(keyword, ""))
    mr.SeriesInstanceUID = generate_uid()
    mr.SOPInstanceUID = mr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    rle = directory / "mr-rle.dcm"
    mr.save_as(rle, enforce_file_format=True)
    return study_uid, [*files, rle], str(mr.SOPInstanceUID)


class _Release:
    """The SCP's association callback as ``ainode serve`` wires it (series released)."""

    sessions: SessionFactory | None = None

    def __call__(self, record: AssociationRecord) -> None:
        assert self.sessions is not None
        SeriesRelease(self.sessions, wake=lambda: None)(record)


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StorageSCP]:
    release = _Release()
    with running_scp(tmp_path / "node", on_association=release) as running:
        release.sessions = running.sessions
        yield running


@pytest.fixture
def pacs(tmp_path: Path, scp: StorageSCP) -> Iterator[Pacs]:
    """Orthanc holding the study, knowing the node's address (for C-MOVE), routing nothing."""
    orthanc = start_orthanc(tmp_path / "orthanc", node_port=scp.settings.dicom_port, route=False)
    study_uid, files, rle_uid = _study_files(tmp_path / "study")
    try:
        orthanc.store(files[:-1])
        # The RLE instance over REST: storescu would propose uncompressed syntaxes only.
        httpx.post(f"{orthanc.url}/instances", content=files[-1].read_bytes(), timeout=30)
        uids = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        yield Pacs(orthanc, study_uid, uids, rle_uid)
    finally:
        orthanc.stop()


def _source(orthanc: Orthanc, method: str, **changes: str) -> RetrieveSource:
    fields = {
        "name": "pacs",
        "method": method,
        "dicom": orthanc.destination,
        "wado_url": f"{orthanc.url}/dicom-web",
        **changes,
    }
    return RetrieveSource.model_validate(fields)


def _retriever(scp: StorageSCP, source: RetrieveSource) -> StudyRetriever:
    settings = scp.settings.model_copy(
        update={"retrieve_sources": [source], "retrieve_timeout_seconds": 120.0,
                "retrieve_network_timeout_seconds": 20.0}
    )  # fmt: skip
    return StudyRetriever(settings, scp.store, scp.on_association)


def _held(scp: StorageSCP, study_uid: str) -> list[tuple[Instance, Series]]:
    """The study's instances as the node holds them, with their series."""
    with scp.sessions() as session:
        rows = session.execute(
            select(Instance, Series)
            .join(Series, Instance.series_pk == Series.id)
            .join(Study, Series.study_pk == Study.id)
            .where(Study.study_instance_uid == study_uid)
        ).all()
        session.expunge_all()
    return [(row[0], row[1]) for row in rows]


@pytest.mark.parametrize("method", METHODS)
def test_each_method_brings_the_study_into_the_node(
    scp: StorageSCP, pacs: Pacs, method: str
) -> None:
    source = _source(pacs.orthanc, method)
    progress: list[tuple[int, int | None]] = []
    retrieved = _retriever(scp, source).retrieve(
        pacs.study_uid, source, lambda done, total: progress.append((done, total))
    )
    assert retrieved.stored == len(pacs.sop_uids), retrieved
    assert retrieved.refused == 0 and retrieved.warning == ""

    held = _held(scp, pacs.study_uid)
    assert {instance.sop_instance_uid for instance, _ in held} == pacs.sop_uids
    for instance, series in held:
        path = scp.settings.spool_dir / instance.path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == instance.digest
        kept = dcmread(path)
        assert str(kept.SOPInstanceUID) == instance.sop_instance_uid
        assert instance.calling_ae_title == "ORTHANC"  # who it came from, as for a push
        # The PACS's own transfer syntax is kept: no transcoding on the way.
        if instance.sop_instance_uid == pacs.rle_uid:
            assert instance.transfer_syntax_uid == RLELossless
            assert kept.file_meta.TransferSyntaxUID == RLELossless
        # The retrieval ended as a released association does: completion's evidence.
        assert series.released_at is not None
    if method == "wado":
        assert progress and progress[-1][0] == len(pacs.sop_uids)

    # Retrieved again: identical resends, nothing duplicated or re-opened.
    again = _retriever(scp, source).retrieve(pacs.study_uid, source)
    assert again.stored == len(pacs.sop_uids)
    held_again = _held(scp, pacs.study_uid)
    assert sorted(i.id for i, _ in held_again) == sorted(i.id for i, _ in held)


def test_failures_name_the_method_the_peer_and_the_status(
    scp: StorageSCP, pacs: Pacs, tmp_path: Path
) -> None:
    unknown_study = generate_uid()
    for method in METHODS:
        source = _source(pacs.orthanc, method)
        with pytest.raises(RetrieveError) as failed:
            _retriever(scp, source).retrieve(unknown_study, source)
        message = str(failed.value)
        assert failed.value.method in ("C-MOVE", "C-GET", "WADO-RS") and message.startswith(
            failed.value.method
        ), message
        assert source.peer in message, message
        print(method, "->", message)

    # A PACS that does not know the node's AE title refuses to send it the study.
    stranger = start_orthanc(tmp_path / "stranger", route=False)
    try:
        files = write_series(
            make_ct_series(np.zeros((2, 16, 16), np.float32), patient_id="STRANGER"),
            tmp_path / "stranger-study",
        )
        stranger.store(files)
        study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        source = _source(stranger, "move")
        with pytest.raises(RetrieveError) as failed:
            _retriever(scp, source).retrieve(study_uid, source)
        # Orthanc ends the association on a C-MOVE from an AE title it does not list.
        assert failed.value.method == "C-MOVE", failed.value
        assert "without a response" in failed.value.status, failed.value
        print("move by a PACS that does not know the node ->", failed.value)
    finally:
        stranger.stop()

    # Nobody listening: the network's failure, named.
    silent = f"http://127.0.0.1:{free_port()}/dicom-web"
    source = _source(pacs.orthanc, "wado", wado_url=silent)
    with pytest.raises(RetrieveError) as failed:
        _retriever(scp, source).retrieve(pacs.study_uid, source)
    assert "WADO-RS" in str(failed.value) and silent in str(failed.value)
    closed = _source(pacs.orthanc, "get", dicom=f"ORTHANC@127.0.0.1:{free_port()}")
    with pytest.raises(RetrieveError) as failed:
        _retriever(scp, closed).retrieve(pacs.study_uid, closed)
    assert "C-FIND" in str(failed.value) and closed.peer in str(failed.value)
