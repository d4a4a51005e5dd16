"""STOW-RS delivery against a real Orthanc with its DICOMweb plugin as the archive."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset

from node.delivery import stow
from node.delivery.stow import stow_files
from node.delivery.transports import DeliveryError, Outgoing
from tests.factories import make_ct_series, write_series
from tests.orthanc import Orthanc, free_port, start_orthanc


def dicomweb(orthanc: Orthanc) -> str:
    return f"{orthanc.url}/dicom-web"


def series(slices: int = 4, description: str = "STOW") -> list[Dataset]:
    hu = np.arange(slices * 8 * 8, dtype=np.int16).reshape(slices, 8, 8)
    return make_ct_series(hu, series_description=description)


def outgoing(datasets: list[Dataset], directory: Path) -> list[Outgoing]:
    paths = write_series(datasets, directory)
    return [
        Outgoing(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID))
        for path, ds in zip(paths, datasets, strict=True)
    ]


def held_uids(orthanc: Orthanc) -> list[str]:
    """SOP Instance UIDs of every instance Orthanc holds, one entry per instance."""
    instances = orthanc.get("/instances?expand")
    return [i["MainDicomTags"]["SOPInstanceUID"] for i in instances]  # type: ignore[union-attr,index]


def test_stow_stores_exactly_the_series_and_again_without_duplicates(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    files = outgoing(series(), tmp_path / "out")
    expected = {f.sop_instance_uid: 0 for f in files}

    assert stow_files(dicomweb(orthanc), files) == expected
    assert sorted(held_uids(orthanc)) == sorted(expected)

    # A retried delivery sends everything again: the archive keeps one copy of each.
    assert stow_files(dicomweb(orthanc), files) == expected
    assert sorted(held_uids(orthanc)) == sorted(expected)


def test_stow_in_several_requests_when_the_batch_limit_is_small(
    orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stow, "MAX_REQUEST_BYTES", 1)  # one file per request
    files = outgoing(series(3), tmp_path / "out")

    result = stow_files(dicomweb(orthanc) + "/", files, headers={"X-Test": "yes"})

    assert result == {f.sop_instance_uid: 0 for f in files}
    assert sorted(held_uids(orthanc)) == sorted(result)


def test_batches_are_bounded_by_size_and_keep_order(tmp_path: Path) -> None:
    files = []
    for name, size in [("a", 10), ("b", 10), ("c", 25), ("d", 1), ("e", 1)]:
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        files.append(Outgoing(path, "1.2", name))

    batches = [[f.sop_instance_uid for f in b] for b in stow._batches(files, 20)]

    assert batches == [["a", "b"], ["c"], ["d", "e"]]  # c is over the limit and goes alone


def test_wrong_path_raises_with_the_http_status(orthanc: Orthanc, tmp_path: Path) -> None:
    files = outgoing(series(1), tmp_path / "out")

    with pytest.raises(DeliveryError, match="HTTP 404"):
        stow_files(f"{orthanc.url}/no-such-dicom-web", files)
    assert held_uids(orthanc) == []


def test_closed_port_raises(tmp_path: Path) -> None:
    files = outgoing(series(1), tmp_path / "out")

    with pytest.raises(DeliveryError, match="ConnectError"):
        stow_files(f"http://127.0.0.1:{free_port()}/dicom-web", files, timeout=5)


def test_a_refused_instance_is_named_with_its_failure_reason(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    good, bad = series(2)
    # Orthanc's plugin refuses an object without a Study Instance UID, listing it in
    # the Failed SOP Sequence with reason 0xC000, and stores the rest of the request.
    del bad.StudyInstanceUID
    files = outgoing([good, bad], tmp_path / "out")

    with pytest.raises(DeliveryError) as caught:
        stow_files(dicomweb(orthanc), files)

    message = str(caught.value)
    assert "HTTP 400" in message
    assert f"refused {bad.SOPInstanceUID} (failure reason 0xC000 cannot understand)" in message
    assert str(good.SOPInstanceUID) not in message
    assert held_uids(orthanc) == [good.SOPInstanceUID]


def test_an_instance_the_archive_does_not_mention_counts_as_failed(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    files = outgoing(series(2), tmp_path / "out")
    # A file truncated on disk: Orthanc cannot parse it and leaves it out of its answer.
    truncated = files[1]
    truncated.path.write_bytes(truncated.path.read_bytes()[:100])

    with pytest.raises(DeliveryError) as caught:
        stow_files(dicomweb(orthanc), files)

    message = str(caught.value)
    assert f"did not acknowledge {truncated.sop_instance_uid}" in message
    assert files[0].sop_instance_uid not in message
    assert held_uids(orthanc) == [files[0].sop_instance_uid]


def test_an_archive_that_wants_credentials_gets_them_from_the_headers(tmp_path: Path) -> None:
    archive = start_orthanc(tmp_path / "locked", user=("ainode", "s3cret"))
    try:
        files = outgoing(series(2, "LOCKED"), tmp_path / "files")
        with pytest.raises(DeliveryError, match="HTTP 401"):
            stow_files(dicomweb(archive), files)
        token = base64.b64encode(b"ainode:s3cret").decode()
        stored = stow_files(dicomweb(archive), files, headers={"Authorization": f"Basic {token}"})
        assert sorted(stored) == sorted(f.sop_instance_uid for f in files)
        assert len(archive.get("/instances")) == 2  # type: ignore[arg-type]
    finally:
        archive.stop()


def test_no_files_sends_nothing() -> None:
    assert stow_files(f"http://127.0.0.1:{free_port()}/dicom-web", []) == {}
