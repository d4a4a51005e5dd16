"""The Storage SCP over real associations: DCMTK's echoscu/storescu and pynetdicom as SCUs."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE
from sqlalchemy import func, select

from node.db.migrate import upgrade_to_head
from node.db.models import Instance, Series, SeriesState
from node.db.session import make_engine, make_session_factory
from node.scp import StorageSCP
from node.settings import Settings
from node.status import StoreStatus
from tests.orthanc import free_port
from tests.scu import send_raw

# One file per transfer syntax family the node must accept (all ship with pydicom).
TRANSFER_SYNTAX_SAMPLES = [
    "CT_small.dcm",  # Explicit VR Little Endian
    "MR_small_RLE.dcm",  # RLE Lossless
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # JPEG lossless, first-order prediction
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "rtplan.dcm",  # a non-image object, Implicit VR Little Endian
]


def sample(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path, f"pydicom's test file {name} is missing"
    return Path(path)


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StorageSCP]:
    settings = Settings(data_dir=tmp_path / "var", dicom_port=free_port(), dicom_bind="127.0.0.1")
    engine = make_engine(settings)
    upgrade_to_head(engine)
    node = StorageSCP(settings, make_session_factory(engine))
    node.start()
    yield node
    node.stop()
    engine.dispose()


def dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def count(scp: StorageSCP, model: type) -> int:
    with scp.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_echo_answers(scp: StorageSCP) -> None:
    result = dcmtk("echoscu", "-aec", "AINODE", "127.0.0.1", str(scp.settings.dicom_port))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", TRANSFER_SYNTAX_SAMPLES)
def test_every_transfer_syntax_is_kept_as_received(scp: StorageSCP, name: str) -> None:
    path = sample(name)
    # dcmsend proposes the file's own transfer syntax and never converts it.
    result = dcmtk(
        "dcmsend", "-aet", "MODALITY", "-aec", "AINODE", "--decompress-never",
        "127.0.0.1", str(scp.settings.dicom_port), str(path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    original = dcmread(path)
    with scp.sessions() as session:
        row = session.scalars(select(Instance)).one()
    assert row.sop_instance_uid == original.SOPInstanceUID
    assert row.calling_ae_title == "MODALITY"
    kept = dcmread(scp.settings.spool_dir / row.path)
    assert row.transfer_syntax_uid == kept.file_meta.TransferSyntaxUID
    sent_syntax = original.file_meta.TransferSyntaxUID
    if sent_syntax.is_compressed:
        # Compressed pixel data is kept exactly as received, never decoded.
        assert row.transfer_syntax_uid == sent_syntax
        assert kept.PixelData == original.PixelData
    elif "PixelData" in original:
        # Uncompressed data may travel in any uncompressed syntax; the pixels are the same.
        assert (kept.pixel_array == original.pixel_array).all()
    assert kept.StudyInstanceUID == original.StudyInstanceUID


def test_duplicate_instance_is_idempotent(scp: StorageSCP) -> None:
    path = str(sample("CT_small.dcm"))
    port = str(scp.settings.dicom_port)
    for _ in range(2):
        result = dcmtk("storescu", "-aec", "AINODE", "127.0.0.1", port, path)
        assert result.returncode == 0, result.stderr
    assert count(scp, Instance) == 1
    with scp.sessions() as session:
        session.execute(Series.__table__.update().values(state=SeriesState.ROUTED))
        session.commit()
    assert dcmtk("storescu", "-aec", "AINODE", "127.0.0.1", port, path).returncode == 0
    with scp.sessions() as session:
        # A re-sent copy of an instance already held does not re-open its series.
        assert session.scalars(select(Series)).one().state is SeriesState.ROUTED


def _associate(scp: StorageSCP, sop_class: str, syntax: str):  # noqa: ANN202
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", scp.settings.dicom_port, ae_title="AINODE")
    assert assoc.is_established
    return assoc


def _raw_file(tmp_path: Path, meta_from: Path, body: bytes) -> Path:
    meta = dcmread(meta_from, stop_before_pixels=True).file_meta
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta)
    target = tmp_path / "raw.dcm"
    target.write_bytes(buffer.getvalue() + body)
    return target


def test_unreadable_bytes_get_a_failure_status(scp: StorageSCP, tmp_path: Path) -> None:
    source = sample("CT_small.dcm")
    garbage = _raw_file(tmp_path, source, b"\x08\x00\x16\x00\xff\xff\xff\x7f" + b"\x01" * 64)
    status = send_raw("127.0.0.1", scp.settings.dicom_port, "AINODE", garbage)
    assert status.Status == StoreStatus.CANNOT_UNDERSTAND
    # The node goes on: a good instance is kept right after.
    assert send_raw("127.0.0.1", scp.settings.dicom_port, "AINODE", source).Status == 0
    assert count(scp, Instance) == 1
    assert len(list(scp.settings.spool_dir.rglob("*.dcm"))) == 1


def test_truncated_pixel_data_is_kept_for_the_pipeline_to_judge(
    scp: StorageSCP, tmp_path: Path
) -> None:
    source = sample("CT_small.dcm")
    full = source.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(full[: len(full) - 4000])
    status = send_raw("127.0.0.1", scp.settings.dicom_port, "AINODE", truncated)
    # Its header is whole, so it is acknowledged and kept; analysis will give the reason.
    assert status.Status == StoreStatus.SUCCESS
    assert count(scp, Instance) == 1


def test_uids_that_are_not_uids_never_become_file_names(scp: StorageSCP, tmp_path: Path) -> None:
    ds = dcmread(sample("CT_small.dcm"))
    ds.SeriesInstanceUID = "../../../../escape"
    assoc = _associate(scp, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    assert status.Status == StoreStatus.CANNOT_UNDERSTAND
    assert "Series Instance UID" in str(status.ErrorComment)
    assert count(scp, Instance) == 0
    assert not list(tmp_path.rglob("*.dcm"))


def test_association_sockets_disable_nagle(scp: StorageSCP) -> None:
    ds = dcmread(sample("CT_small.dcm"))
    assoc = _associate(scp, ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    try:
        ours = assoc.dul.socket.socket
        server = scp._server
        assert server is not None
        accepted = server.connections()
        assert accepted, "the SCP holds no association"
        for sock in accepted:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # a plain SCU
    finally:
        assoc.release()
