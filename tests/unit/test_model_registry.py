"""Model package discovery and loading: shipped packages, and broken ones refused clearly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.architectures import ARCHITECTURES
from models.contract_errors import ManifestError, ModelUnavailable
from models.feed import NetworkInput, network_input
from models.formats import FORMATS, check_signature, network_format
from models.formats.module_format import SPATIAL_DIMS
from models.loader import load_network, sha256_of
from models.manifest import ModelManifest, ModelTask, PreprocessStep
from models.package import ModelPackage
from models.registry import discover_packages, open_package, shipped_packages_dir
from workers import errors as worker_errors

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
        assert manifest.accepts.sop_class_uid[0] == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
        assert "1.2.840.10008.5.1.4.1.1.2.1" in manifest.accepts.sop_class_uid  # Enhanced CT
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


# ---------------------------------------------------------------- one manifest, many formats


def edited_copy(tmp_path: Path, as_dir: str, old: str, new: str) -> Path:
    package_dir = copy_package(SEG, tmp_path, as_dir)
    text = (package_dir / "model.yaml").read_text()
    assert old in text, old
    text = text.replace(f"name: {SEG}", f"name: {as_dir}").replace(old, new)
    (package_dir / "model.yaml").write_text(text)
    return package_dir


def test_open_package_gives_the_shipped_packages():
    for name in (SEG, CLS):
        package = open_package(shipped_packages_dir() / name)
        assert package.name == name
        assert package.manifest.network.format == "module"
        assert package.weights_path == shipped_packages_dir() / name / "weights.pt"


def test_the_module_format_knows_every_architecture_and_its_dimensions():
    assert set(SPATIAL_DIMS) == set(ARCHITECTURES)
    for name, dims in SPATIAL_DIMS.items():
        network = ARCHITECTURES[name]()
        convolutions = [
            m for m in network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)
        ]
        assert {len(m.kernel_size) for m in convolutions} == {dims}, name


def test_discovery_imports_no_network_library():
    # The serve process routes series with the registry; torch and friends stay in the worker.
    code = (
        "import sys; from models.registry import discover_packages; "
        "assert discover_packages().names; "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'SimpleITK', 'scipy', "
        "'models.architectures', 'workers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_worker_records_an_unavailable_model_as_it_records_an_analysis_error():
    # ModelUnavailable is the model contract's; the job still fails with its reason.
    assert worker_errors.ModelUnavailable is ModelUnavailable
    assert {worker_errors.AnalysisError, ModelUnavailable} <= set(worker_errors.ANALYSIS_ERRORS)


def test_every_shipped_format_is_registered():
    assert {"module", "torchscript", "onnx", "monai_bundle"} <= set(FORMATS)
    assert network_format("onnx").name == "onnx"


def test_what_inference_feeds_follows_the_preprocessing():
    manifest = discover_packages().get(SEG).manifest
    assert network_input(manifest) == NetworkInput(channels=1, size=(128, 128), multiple=16)
    assert manifest.output_channels == 3
    odd = manifest.model_copy(
        update={"preprocessing": [PreprocessStep(step="resize_inplane", size=[100, 129])]}
    )
    # workers.infer pads each slice up to a multiple of 16
    assert network_input(odd).size == (112, 144)
    assert network_input(manifest.model_copy(update={"preprocessing": []})).size is None
    assert discover_packages().get(CLS).manifest.output_channels == 1


@pytest.mark.parametrize(
    ("case", "old", "new", "words"),
    [
        (
            "zero-resize", "size: [128, 128]", "size: [0, 128]",
            ("resize_inplane", "greater than or equal to 1"),
        ),
        (
            "no-instances", "min_instances: 1", "min_instances: 0",
            ("accepts.min_instances", "greater than or equal to 1"),
        ),
        ("label-256", "label: 2", "label: 256", ("label", "less than or equal to 255")),
        (
            "rgb-unet", "in_channels: 1,", "in_channels: 3,",
            ("input channels", "declares 3 input channel(s)", "preprocessing produces 1"),
        ),
        (
            "odd-format", "format: module", "format: keras",
            ("network.format 'keras' is unknown", "torchscript"),
        ),
        (
            "onnx-with-architecture", "format: module", "format: onnx",
            ("network.format onnx does not take network.architecture", "only module"),
        ),
        (
            "module-without-architecture", "  architecture: unet2d\n", "",
            ("network.format module requires network.architecture",),
        ),
        (
            "bundle-with-weights", "format: module", "format: monai_bundle",
            ("network.format monai_bundle requires network.bundle",),
        ),
        (
            "escaping-weights", "weights: weights.pt", "weights: ../../weights.pt",
            ("network.weights", "must lie inside the package folder"),
        ),
    ],
)  # fmt: skip
def test_impossible_manifest_is_refused_naming_its_rule(tmp_path, case, old, new, words):
    package_dir = edited_copy(tmp_path, case, old, new)
    with pytest.raises(ManifestError) as caught:
        open_package(package_dir)
    for word in words:
        assert word in str(caught.value)
    registry = discover_packages(tmp_path)
    assert refusal_for(registry, package_dir) == str(caught.value)
    assert {SEG, CLS} <= set(registry.names)


def test_a_monai_style_multiple_must_fit_the_padding(tmp_path):
    package = open_package(shipped_packages_dir() / SEG)
    feed = network_input(package.manifest)
    check_signature(package, feed, source="x", in_channels=1, spatial=["16*n", 128], out_channels=3)
    with pytest.raises(ManifestError, match="takes columns in multiples of 48"):
        check_signature(package, feed, source="x", in_channels=1, spatial=[128, "48*n"],
                        out_channels=None)  # fmt: skip
    variable = NetworkInput(channels=1, size=None, multiple=16)
    with pytest.raises(ManifestError, match="no resize_inplane step"):
        check_signature(package, variable, source="x", in_channels=1, spatial=[128, 128],
                        out_channels=None)  # fmt: skip
