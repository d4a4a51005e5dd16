"""The critical rules of a manifest, and the Key Object Selection that flags the images
of what fired: which rules fire and which images show them (``workers.critical``), the
KOS (``workers.encode.kos``) through dciodvfy with zero errors and through the gate,
and the shipped models marked critical without retraining, firing on a phantom with
a nodule."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydantic import ValidationError

from models.manifest import ModelManifest
from models.registry import discover_packages
from node.db.models import ResultKind
from tests.encoding import Series, assert_valid_iod, run_tool, to_bytes
from tests.factories import ANATOMY, LESION, LUNG, MASS, fake_manifest, phantom_study
from workers.critical import critical_summary, fired_rules
from workers.encode.conformance import assert_conformant
from workers.encode.identity import ResultUIDs
from workers.encode.kos import encode_key_objects
from workers.errors import EncodingError
from workers.infer import NetworkCache
from workers.pipeline import analyze
from workers.volume import ModelOutput

PACKAGES = Path(__file__).resolve().parents[2] / "models" / "packages"
NODULE = {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"}


def segmenter(min_volume_ml: float = 1.0) -> ModelManifest:
    return fake_manifest(
        "critical-seg",
        "segmentation",
        title="Critical sphere segmenter",
        demonstration=True,
        segments=[
            {"label": 3, "name": "Sphere lesion", "category": LESION, "type": MASS,
             "critical": {"min_volume_ml": min_volume_ml, "urgency": "HIGH"}},
            {"label": 7, "name": "Lung", "category": ANATOMY, "type": LUNG},
        ],
    )  # fmt: skip


def classifier(threshold: float = 0.9) -> ModelManifest:
    return fake_manifest(
        "critical-cls",
        "classification",
        classes=[
            {"name": "nodule", "finding": NODULE, "threshold": 0.5,
             "critical": {"threshold": threshold, "urgency": "STAT"}},
            {"name": "mass", "finding": MASS, "threshold": 0.5},
        ],
    )  # fmt: skip


# Which rules fire, and the images that show them -------------------------------------


def test_a_segment_fires_at_its_volume_with_the_slices_it_covers(series: Series) -> None:
    sphere_ml = float((series.labels == 3).sum()) * series.volume.voxel_volume_ml
    output = ModelOutput(labels=series.labels)
    [rule] = fired_rules(segmenter(min_volume_ml=sphere_ml - 0.01), series.volume, output)
    covered = sorted({int(z) for z in np.nonzero(series.labels == 3)[0]})
    areas = (series.labels == 3).sum(axis=(1, 2))
    assert rule.output == "Sphere lesion" and rule.unit == "ml" and rule.urgency.value == "HIGH"
    assert rule.value == pytest.approx(sphere_ml, abs=1e-3)
    assert rule.slices[0] == int(np.argmax(areas))  # its largest cross-section first
    assert sorted(rule.slices) == covered and len(set(rule.slices)) == len(covered)
    assert fired_rules(segmenter(min_volume_ml=sphere_ml + 0.01), series.volume, output) == []


def test_a_class_fires_at_its_threshold_with_the_slices_that_pass_it(series: Series) -> None:
    scores = np.zeros((12, 2), dtype=np.float32)
    scores[[4, 5, 6], 0] = [0.92, 0.99, 0.95]
    scores[3, 0] = 0.89  # present, not critical
    scores[:, 1] = 0.99  # "mass" has no critical rule
    output = ModelOutput(probabilities={"nodule": 0.99, "mass": 0.99}, slice_probabilities=scores)
    [rule] = fired_rules(classifier(), series.volume, output)
    assert (rule.output, rule.value, rule.threshold, rule.unit) == ("nodule", 0.99, 0.9, "")
    assert rule.slices == (5, 4, 6)  # the most probable first
    [summary] = critical_summary([rule])
    assert summary["urgency"] == "STAT" and summary["images"] == 3
    assert summary["code"] == NODULE
    assert summary["text"] == (
        "nodule (Nodule): probability 0.990, at or above the critical 0.9; urgency STAT"
    )
    below = ModelOutput(probabilities={"nodule": 0.89}, slice_probabilities=scores)
    assert fired_rules(classifier(), series.volume, below) == []
    # A 3D classifier scores the volume: every image shows what it found.
    volume_score = ModelOutput(probabilities={"nodule": 0.95})
    [rule] = fired_rules(classifier(), series.volume, volume_score)
    assert rule.slices == tuple(range(12))


@pytest.mark.parametrize(
    ("critical", "complaint"),
    [
        ({"threshold": 0.4, "urgency": "STAT"}, "below its presence threshold"),
        ({"threshold": 0.9, "urgency": "URGENT"}, "urgency"),
        ({"threshold": 0.9}, "urgency"),
        ({"min_volume_ml": 1.0, "urgency": "HIGH"}, "Extra inputs"),
    ],
)
def test_a_manifest_with_a_wrong_critical_rule_is_refused(
    critical: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        fake_manifest(
            "bad", "classification",
            classes=[{"name": "n", "finding": NODULE, "threshold": 0.5, "critical": critical}],
        )  # fmt: skip


# The KOS -----------------------------------------------------------------------


def encoded_kos(series: Series) -> pydicom.Dataset:
    manifest = segmenter(min_volume_ml=0.5)
    fired = fired_rules(manifest, series.volume, ModelOutput(labels=series.labels))
    uids = ResultUIDs.of_volume(series.volume, manifest)
    return encode_key_objects(series.volume, manifest, fired, uids.ko_series, uids.ko_instance)


def test_the_kos_passes_dciodvfy_and_the_gate_and_reads_back(
    series: Series, tmp_path: Path
) -> None:
    kos = encoded_kos(series)
    path = tmp_path / "ko.dcm"
    path.write_bytes(to_bytes(kos))
    assert_valid_iod(path)  # zero errors
    assert_conformant(ResultKind.KO, kos, series.volume.datasets)

    back = pydicom.dcmread(path)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.59" and back.Modality == "KO"
    title = back.ConceptNameCodeSequence[0]
    assert (title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning) == (
        "113000", "DCM", "Of Interest",
    )  # fmt: skip
    assert back.StudyInstanceUID == series.volume.datasets[0].StudyInstanceUID
    assert back.PatientID == series.volume.datasets[0].PatientID
    images = [i for i in back.ContentSequence if i.ValueType == "IMAGE"]
    flagged = {str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in images}
    covered = {int(z) for z in np.nonzero(series.labels == 3)[0]}
    assert flagged == {str(series.volume.datasets[z].SOPInstanceUID) for z in covered}
    [description] = [i for i in back.ContentSequence if i.ValueType == "TEXT"
                     and i.ConceptNameCodeSequence[0].CodeValue == "113012"]  # fmt: skip
    assert "Critical finding: Sphere lesion (Mass): volume" in description.TextValue
    assert "urgency HIGH" in description.TextValue
    # DCMTK reads it as a structured document too.
    assert "Of Interest" in run_tool("dsrdump", path)
    # Deterministic, as every result: the same bytes on a re-run.
    assert to_bytes(encoded_kos(series)) == path.read_bytes()


def test_the_gate_refuses_a_kos_that_would_hide_images_or_names_others(series: Series) -> None:
    kos = encoded_kos(series)
    kos.ConceptNameCodeSequence[0].CodeValue = "113001"  # Rejected for Quality Reasons
    with pytest.raises(EncodingError, match="rejection note"):
        assert_conformant(ResultKind.KO, kos, series.volume.datasets)
    other = encoded_kos(series)
    image = next(i for i in other.ContentSequence if i.ValueType == "IMAGE")
    image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID = "1.2.3.4"
    with pytest.raises(EncodingError, match="1.2.3.4 is not in the evidence"):
        assert_conformant(ResultKind.KO, other, series.volume.datasets)


def test_a_kos_needs_a_finding(series: Series) -> None:
    with pytest.raises(EncodingError, match="at least one critical finding"):
        encode_key_objects(series.volume, segmenter(), [], "1.2.3", "1.2.4")


# The shipped models ------------------------------------------------------------------


def test_the_shipped_models_are_marked_critical_without_retraining() -> None:
    registry = discover_packages(PACKAGES)
    by_name = {p.name: p for p in registry.packages}
    classes = by_name["ct-nodule-classifier"].manifest.outputs.classes
    assert classes[0].critical is not None and classes[0].critical.threshold > classes[0].threshold
    segments = {s.name: s for s in by_name["ct-lung-nodule-seg"].manifest.outputs.segments}
    assert segments["Lung nodule"].critical is not None and segments["Lung"].critical is None
    for package in by_name.values():
        digest = hashlib.sha256(package.weights_path.read_bytes()).hexdigest()
        assert digest == package.manifest.network.sha256  # the weights are the trained ones


def test_a_phantom_with_a_nodule_fires_the_shipped_models(tmp_path: Path) -> None:
    files = phantom_study(tmp_path, 7, slices=12)
    registry = discover_packages(PACKAGES)
    cache = NetworkCache()
    for package in registry.packages:
        outcome = analyze(files, package, torch.device("cpu"), cache, key_objects=True)
        [critical] = outcome.findings["critical"]
        kinds = [kind for kind, _ in outcome.objects]
        assert kinds[-1] == ResultKind.KO and kinds.count(ResultKind.KO) == 1
        kos = outcome.objects[-1][1]
        path = tmp_path / f"{package.name}-ko.dcm"
        path.write_bytes(to_bytes(kos))
        assert_valid_iod(path)
        assert critical["code"] == NODULE and critical["images"] >= 1
        expected = "STAT" if package.name == "ct-nodule-classifier" else "HIGH"
        assert critical["urgency"] == expected
