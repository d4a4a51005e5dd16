"""Model package discovery and loading: shipped packages, and broken ones refused clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from models.loader import load_network, sha256_of
from models.manifest import ModelManifest, ModelTask
from models.registry import ModelPackage, discover_packages, shipped_packages_dir
from workers.errors import ModelUnavailable

SEG = "ct-lung-nodule-seg"
CLS = "ct-nodule-classifier"


def copy_package(name: str, into: Path, as_dir: str | None = None) -> Path:
    target = into / (as_dir or name)
    shutil.copytree(shipped_packages_dir() / name, target)
    return target


def test_shipped_packages_are_discovered_and_none_refused():
    registry = discover_packages()
    assert {SEG, CLS} <= set(registry.names)
    assert registry.refused == []
    seg, cls = registry.get(SEG), registry.get(CLS)
    assert seg.manifest.task is ModelTask.SEGMENTATION
    assert cls.manifest.task is ModelTask.CLASSIFICATION
    for package in (seg, cls):
        manifest = package.manifest
        assert manifest.demonstration
        assert "not for clinical use" in manifest.title
        assert manifest.version == "1.0.0"
        assert manifest.accepts.modality == ["CT"]
        assert manifest.accepts.sop_class_uid == ["1.2.840.10008.5.1.4.1.1.2"]
        assert package.card_path is not None and package.card_path.is_file()
        assert (package.path / "metrics.json").is_file()
        assert sha256_of(package.weights_path) == manifest.network.sha256
        assert package.weights_path.stat().st_size < 2_100_000


def test_shipped_codes_are_the_documented_ones():
    seg = discover_packages().get(SEG).manifest.outputs.segments
    assert [(s.label, s.name, s.type.value) for s in seg] == [
        (1, "Lung", "39607008"),
        (2, "Lung nodule", "27925004"),
    ]
    assert [s.category.value for s in seg] == ["123037004", "49755003"]
    (nodule,) = discover_packages().get(CLS).manifest.outputs.classes
    assert (nodule.name, nodule.finding.value, nodule.finding.scheme) == (
        "nodule",
        "27925004",
        "SCT",
    )
    assert nodule.threshold == 0.5


def test_get_of_an_absent_model_is_a_key_error():
    with pytest.raises(KeyError):
        discover_packages().get("no-such-model")


def test_shipped_weights_load_in_eval_mode():
    package = discover_packages().get(SEG)
    network = load_network(package, torch.device("cpu"))
    assert not network.training
    with torch.inference_mode():
        out = network(torch.zeros(1, 1, 128, 128))
    assert out.shape == (1, 3, 128, 128)


def refusal_for(registry, path: Path) -> str:
    reasons = [reason for where, reason in registry.refused if where == path]
    assert reasons, f"{path} was not refused; refused: {registry.refused}"
    return reasons[0]


def test_bad_yaml_is_refused_with_the_reason(tmp_path):
    broken = copy_package(SEG, tmp_path, "broken-yaml")
    (broken / "model.yaml").write_text("name: [unclosed\n  : :")
    reason = refusal_for(discover_packages(tmp_path), broken)
    assert "cannot read manifest" in reason


def test_schema_error_is_refused_naming_the_field(tmp_path):
    broken = copy_package(SEG, tmp_path, "bad-schema")
    text = (broken / "model.yaml").read_text().replace("task: segmentation", "task: telepathy")
    (broken / "model.yaml").write_text(text)
    reason = refusal_for(discover_packages(tmp_path), broken)
    assert "task" in reason


def test_missing_weights_are_refused(tmp_path):
    broken = copy_package(SEG, tmp_path, "no-weights")
    (broken / "weights.pt").unlink()
    reason = refusal_for(discover_packages(tmp_path), broken)
    assert "weights" in reason and "missing" in reason


def test_unknown_architecture_is_refused(tmp_path):
    broken = copy_package(SEG, tmp_path, "odd-net")
    text = (broken / "model.yaml").read_text().replace("architecture: unet2d", "architecture: vit9")
    (broken / "model.yaml").write_text(text)
    reason = refusal_for(discover_packages(tmp_path), broken)
    assert "vit9" in reason and "unknown architecture" in reason


def test_unknown_preprocessing_step_is_refused(tmp_path):
    broken = copy_package(SEG, tmp_path, "odd-step")
    text = (broken / "model.yaml").read_text().replace("step: scale", "step: sharpen")
    (broken / "model.yaml").write_text(text)
    reason = refusal_for(discover_packages(tmp_path), broken)
    assert "sharpen" in reason


def test_duplicate_name_the_shipped_package_wins(tmp_path):
    duplicate = copy_package(SEG, tmp_path, "my-copy")
    registry = discover_packages(tmp_path)
    assert registry.get(SEG).path == shipped_packages_dir() / SEG
    assert "duplicate" in refusal_for(registry, duplicate)


def test_extra_package_with_its_own_name_is_added(tmp_path):
    extra = copy_package(SEG, tmp_path, "local-seg")
    text = (extra / "model.yaml").read_text().replace(f"name: {SEG}", "name: local-seg")
    (extra / "model.yaml").write_text(text)
    registry = discover_packages(tmp_path)
    assert registry.get("local-seg").path == extra
    assert registry.refused == []


def test_missing_extra_dir_is_reported_not_raised(tmp_path):
    registry = discover_packages(tmp_path / "absent")
    assert {SEG, CLS} <= set(registry.names)
    assert "does not exist" in refusal_for(registry, tmp_path / "absent")


def test_wrong_sha256_is_refused_at_load_naming_both_digests(tmp_path):
    package_dir = copy_package(SEG, tmp_path, "tampered")
    with (package_dir / "weights.pt").open("ab") as weights:
        weights.write(b"\0")
    package = ModelPackage(package_dir, ModelManifest.from_file(package_dir / "model.yaml"))
    with pytest.raises(ModelUnavailable) as caught:
        load_network(package, torch.device("cpu"))
    message = str(caught.value)
    assert package.manifest.network.sha256 in message
    assert sha256_of(package_dir / "weights.pt") in message
