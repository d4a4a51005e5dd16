"""End to end with a site's own models: TorchScript, ONNX and a MONAI bundle beside the shipped.

The node runs as a process with ``AINODE_MODELS_DIR`` naming a folder holding the three
packages built from the shipped segmentation network (tests/integration/
test_model_formats.py builds them); a phantom series stored into Orthanc is routed to
the node, and the archive must receive a SEG from every segmentation package, each
clean under dciodvfy, with no job failed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from tests.dicom_checks import dciodvfy_errors
from tests.factories import make_ct_series, write_series
from tests.integration.test_model_formats import build_package, package_name, source_network
from tests.node_process import NodeProcess, node_environment, wait_for
from tests.orthanc import start_orthanc
from training.phantom import make_phantom

pytestmark = pytest.mark.e2e

EXTRA_KINDS = ("torchscript", "onnx", "monai_bundle")
SHIPPED = {"ct-lung-nodule-seg": "SEG", "ct-nodule-classifier": "SR"}


def test_site_models_of_every_format_return_segs_through_the_pacs(tmp_path: Path) -> None:
    models_dir = tmp_path / "site-models"
    network = source_network()
    for kind in EXTRA_KINDS:
        build_package(kind, models_dir, network)
    expected_segs = {package_name(kind) for kind in EXTRA_KINDS} | {"ct-lung-nodule-seg"}

    phantom = make_phantom(
        np.random.default_rng(4242), shape=(12, 256, 256), spacing=(3.0, 1.4, 1.4), lesions=1
    )
    files = write_series(make_ct_series(phantom.hu, phantom.spacing), tmp_path / "series")

    env, dicom_port, http_port = node_environment(
        tmp_path / "node", models_dir=str(models_dir), device="cpu"
    )
    pacs = start_orthanc(tmp_path / "orthanc", node_port=dicom_port, stable_age=1)
    env["AINODE_ARCHIVE"] = pacs.destination
    node = NodeProcess(tmp_path / "node", dicom_port, http_port, env)
    try:
        node.start()
        pacs.store(files)

        def segs_in_archive() -> dict[str, list[str]] | None:
            held = pacs.instances_by_modality()
            done = len(held.get("SEG", [])) >= len(expected_segs) and len(held.get("SR", [])) >= 5
            return held if done else None

        try:
            held = wait_for(segs_in_archive, timeout=80, what="a SEG from every package")
        except AssertionError:
            print(node.log())
            print(pacs.log_tail())
            raise

        def jobs_finished() -> list[dict] | None:
            jobs = node.get("/api/jobs")
            assert isinstance(jobs, list)
            finished = all(job["state"] in ("succeeded", "failed") for job in jobs)
            return jobs if jobs and finished else None

        jobs = wait_for(jobs_finished, timeout=30, what="every job finished")
        out = tmp_path / "from-archive"
        out.mkdir()
        paths: dict[str, list[Path]] = {}
        for modality in ("SEG", "SR"):
            for n, instance_id in enumerate(held[modality]):
                path = out / f"{modality}-{n}.dcm"
                path.write_bytes(pacs.file(instance_id))
                paths.setdefault(modality, []).append(path)
    finally:
        node.stop()
        pacs.stop()

    segs = {str(dcmread(p, stop_before_pixels=True).ManufacturerModelName): p for p in paths["SEG"]}
    assert set(segs) == expected_segs, sorted(segs)
    for name, path in segs.items():
        errors = dciodvfy_errors(path)
        assert not errors, f"dciodvfy: SEG of {name}: {errors}"
    for path in paths["SR"]:
        errors = dciodvfy_errors(path)
        assert not errors, f"dciodvfy: {path.name}: {errors}"
    assert {job["model_name"] for job in jobs} == expected_segs | set(SHIPPED)
    assert all(job["state"] == "succeeded" for job in jobs), jobs
