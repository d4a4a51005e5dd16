"""End to end, as a hospital runs it: modality -> Orthanc (PACS) -> node -> Orthanc.

A synthetic CT series with a known truth is stored into a real Orthanc with DCMTK's
storescu; Orthanc routes the stable study to the node by a Lua script; the node
analyses it with the shipped models and sends a SEG and SRs back. The test checks the
archive holds them, that dciodvfy finds no error in them, the SEG's Dice against the
phantom's truth, and the SR's finding against the phantom's label.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread

from models.manifest import ModelManifest
from models.registry import discover_packages
from tests.dicom_checks import dcentvfy_errors, dciodvfy_errors
from tests.factories import make_ct_series, write_series
from tests.node_process import NodeProcess, node_environment, wait_for
from tests.orthanc import start_orthanc
from training.phantom import make_phantom

pytestmark = pytest.mark.e2e

SEG_MODEL = "ct-lung-nodule-seg"
CLASSIFIER = "ct-nodule-classifier"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def coded_items(item, found: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:  # noqa: ANN001
    """(concept name meaning, value meaning or number, unit) of every item of an SR tree."""
    for child in item.get("ContentSequence", []):
        name = (
            child.ConceptNameCodeSequence[0].CodeMeaning
            if "ConceptNameCodeSequence" in child
            else ""
        )
        if "ConceptCodeSequence" in child:
            found.append((name, child.ConceptCodeSequence[0].CodeMeaning, ""))
        elif "MeasuredValueSequence" in child:
            value = child.MeasuredValueSequence[0]
            unit = value.MeasurementUnitsCodeSequence[0].CodeValue
            found.append((name, str(value.NumericValue), unit))
        coded_items(child, found)
    return found


def run_study_through_pacs(tmp_path: Path, lesions: int, **node_settings: str) -> dict:
    rng = np.random.default_rng(20261125 + lesions)
    phantom = make_phantom(rng, shape=(24, 512, 512), spacing=(2.5, 0.7, 0.7), lesions=lesions)
    datasets = make_ct_series(phantom.hu, phantom.spacing)
    files = write_series(datasets, tmp_path / "series")

    env, dicom_port, http_port = node_environment(tmp_path / "node", **node_settings)
    pacs = start_orthanc(tmp_path / "orthanc", node_port=dicom_port)
    env["AINODE_ARCHIVE"] = pacs.destination
    node = NodeProcess(tmp_path / "node", dicom_port, http_port, env)
    try:
        node.start()
        pacs.store(files)

        def results_in_archive() -> dict[str, list[str]] | None:
            held = pacs.instances_by_modality()
            return held if len(held.get("SEG", [])) >= 1 and len(held.get("SR", [])) >= 2 else None

        try:
            held = wait_for(results_in_archive, timeout=240, what="SEG and SR in Orthanc")
        except AssertionError:
            print(node.log())
            print(pacs.log_tail())
            raise
        out = tmp_path / "from-archive"
        out.mkdir()
        paths: dict[str, list[Path]] = {}
        for modality in ("SEG", "SR"):
            for n, instance_id in enumerate(held[modality]):
                path = out / f"{modality}-{n}.dcm"
                path.write_bytes(pacs.file(instance_id))
                paths.setdefault(modality, []).append(path)
        jobs = node.get("/api/jobs")
        studies = node.get("/api/studies")
        return {
            "phantom": phantom, "datasets": datasets, "files": files, "paths": paths,
            "held": held, "jobs": jobs, "studies": studies,
        }  # fmt: skip
    finally:
        node.stop()
        pacs.stop()


def check_results(outcome: dict) -> None:
    phantom, datasets, paths = outcome["phantom"], outcome["datasets"], outcome["paths"]
    # Exactly one SEG and one SR per model: nothing duplicated by the routing round trip.
    assert len(paths["SEG"]) == 1 and len(paths["SR"]) == 2, outcome["held"]
    assert len(outcome["held"]["CT"]) == len(datasets)

    for path in paths["SEG"] + paths["SR"]:
        errors = dciodvfy_errors(path)
        assert not errors, f"dciodvfy: {path.name}: {errors}"
    assert not dcentvfy_errors(*outcome["files"], *paths["SEG"], *paths["SR"])

    study_uid = datasets[0].StudyInstanceUID
    seg = hd.seg.segread(paths["SEG"][0])
    assert seg.StudyInstanceUID == study_uid
    assert "NOT FOR CLINICAL USE" in seg.SeriesDescription.upper()
    manifest: ModelManifest = discover_packages().get(SEG_MODEL).manifest
    source_uids = [str(ds.SOPInstanceUID) for ds in datasets]
    numbers = list(range(1, len(manifest.outputs.segments) + 1))
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=source_uids,
        segment_numbers=numbers,
        assert_missing_frames_are_empty=True,
    )
    for number, spec in zip(numbers, manifest.outputs.segments, strict=True):
        score = dice(masks[..., number - 1] > 0, phantom.labels == spec.label)
        print(f"Dice {spec.name}: {score:.3f}")
        floor = 0.85 if spec.label == 1 else 0.4
        if phantom.has_lesion or spec.label == 1:
            assert score >= floor, f"Dice of {spec.name} {score:.3f} < {floor}"

    reports = [dcmread(p) for p in paths["SR"]]
    for report in reports:
        assert report.StudyInstanceUID == study_uid
        assert "NOT FOR CLINICAL USE" in report.SeriesDescription.upper()
    classifier = discover_packages().get(CLASSIFIER).manifest
    finding = classifier.outputs.classes[0].finding.meaning
    items = [item for report in reports for item in coded_items(report, [])]
    print("SR items:", items)
    # The classifier's report states the finding as a qualitative evaluation.
    (verdict,) = [value for name, value, _unit in items if name == finding]
    assert verdict == ("Present" if phantom.has_lesion else "Absent"), items

    jobs = outcome["jobs"]
    assert {job["model_name"] for job in jobs} == {SEG_MODEL, CLASSIFIER}
    assert all(job["state"] == "succeeded" for job in jobs), jobs


def test_embedded_defaults_lesion_study(tmp_path: Path) -> None:
    """`make run`'s defaults: SQLite and the embedded Redis."""
    check_results(run_study_through_pacs(tmp_path, lesions=2))


def test_postgres_and_machine_redis_clear_study(
    tmp_path: Path, postgres_url: str, machine_redis_url: str
) -> None:
    """Production's shape: PostgreSQL and an external Redis; a study without lesions."""
    outcome = run_study_through_pacs(
        tmp_path, lesions=0, database_url=postgres_url, broker_url=machine_redis_url
    )
    check_results(outcome)
