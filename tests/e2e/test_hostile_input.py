"""Hostile pixel headers sent to a running node: each job fails with the reason, the
worker that refused them keeps running, and the archive receives nothing.

Two tiny JPEG-LS CT instances (``tests.hostile_files``), each its own series: one
declaring 8192x8192 (about 2 KB on disk, 128 MiB once decoded), one whose data set
says 64x64 but whose codestream says 30000x30000.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread

from node.status import StoreStatus
from tests.e2e.test_faults import worker_pids
from tests.hostile_files import blank_codestream, claiming, jpeg_ls_ct
from tests.node_process import start_node, wait_for
from tests.orthanc import Orthanc
from tests.scu import send_raw

pytestmark = pytest.mark.e2e


def test_hostile_pixel_headers_fail_their_jobs_not_the_worker(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    files = [
        jpeg_ls_ct(tmp_path / "in", 8192, 8192, blank_codestream(8192, 8192), "huge"),
        jpeg_ls_ct(tmp_path / "in", 64, 64, claiming(blank_codestream(64, 64), 30000, 30000),
                   "lying"),
    ]  # fmt: skip
    node = start_node(tmp_path / "node", archive=orthanc.destination)
    try:
        (worker,) = wait_for(lambda: worker_pids(node), 60, what="the worker child")
        for path in files:
            assert int(send_raw("127.0.0.1", node.dicom_port, "AINODE", path).Status) == (
                StoreStatus.SUCCESS
            )

        def finished() -> list[dict] | None:
            jobs = node.get("/api/jobs")
            done = len(jobs) == 4 and all(j["state"] in ("failed", "succeeded") for j in jobs)  # type: ignore[arg-type]
            return jobs if done else None  # type: ignore[return-value]

        try:
            jobs = wait_for(finished, timeout=180, what="the four jobs to finish")
        except AssertionError:
            print(node.log())
            raise
        assert worker_pids(node) == [worker]  # refused, not crashed
    finally:
        node.stop()

    errors = {j["error"] for j in jobs}
    print("job reasons:", *sorted(errors), sep="\n  ")
    assert all(j["state"] == "failed" for j in jobs)
    huge, lying = (dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files)
    assert errors == {  # the node keeps each instance as <SOP Instance UID>.dcm
        f"{huge}.dcm (CT Image Storage) declares frames of 8192x8192 pixels at 16 bits "
        "(1 sample(s)), 128.0 MiB each once decoded, over the limit of 64.0 MiB per frame "
        "(AINODE_MAX_FRAME_BYTES)",
        f"frame 1 of {lying}.dcm (CT Image Storage) is a codestream of 30000x30000 pixels "
        "with 1 component(s) where the data set declares 64x64 with 1: refused before "
        "decoding, as its decoder would allocate what the codestream says",
    }
    assert orthanc.get("/instances") == []
