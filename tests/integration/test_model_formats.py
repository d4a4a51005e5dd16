"""One manifest format, four network formats: module, TorchScript, ONNX and MONAI bundle.

Each kind is built here from the shipped segmentation package with the peers' own
tools (``torch.jit.trace``, ``torch.onnx.export``, MONAI's ``init_bundle`` and
``save_net_with_metadata``, checked with MONAI's ``verify_net_in_out``), then run
through the node as an operator would: discovery, ``ainode analyze`` and ``ainode
models validate`` as subprocesses. The four label maps must agree. Broken and
impossible packages are refused with the rule they break, without stopping discovery.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import torch
import yaml
from pydicom import dcmread

from models.architectures import unet2d
from models.contract_errors import ManifestError, ModelUnavailable
from models.loader import load_network, sha256_of
from models.registry import discover_packages, open_package, shipped_packages_dir
from node.cli import main
from tests.factories import make_ct_series, write_series
from training.phantom import make_phantom

SOURCE = "ct-lung-nodule-seg"
CPU = torch.device("cpu")
KINDS = ("module", "torchscript", "onnx", "monai_bundle")


def package_name(kind: str) -> str:
    return f"seg-{kind.replace('_', '-')}"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_manifest() -> dict:
    return yaml.safe_load((shipped_packages_dir() / SOURCE / "model.yaml").read_text())


def source_network() -> torch.nn.Module:
    return load_network(discover_packages().get(SOURCE), CPU)


def write_package(target: Path, kind: str, network: dict, **changes: object) -> Path:
    """model.yaml for ``kind`` in ``target``: the shipped manifest with its own name."""
    manifest = source_manifest()
    manifest.update(name=package_name(kind), network=network, card=None, **changes)
    manifest["title"] = f"{manifest['title']} [{kind}]"
    target.mkdir(parents=True, exist_ok=True)
    (target / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return target


def onnx_export(network: torch.nn.Module, path: Path, channels: int = 1) -> None:
    """Export with dynamic batch and in-plane axes, as a site's tooling would."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        torch.onnx.export(
            network,
            (torch.zeros(1, channels, 128, 128),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={
                "image": {0: "batch", 2: "rows", 3: "columns"},
                "logits": {0: "batch", 2: "rows", 3: "columns"},
            },
        )


def bundle_metadata(in_channels: int = 1, out_channels: int = 3, spatial=None) -> dict:  # noqa: ANN001
    """configs/metadata.json as the MONAI Bundle Specification lays it out."""
    spatial = spatial or ["16*n", "16*n"]
    return {
        "version": "0.1.0",
        "changelog": {"0.1.0": "exported from ainode's ct-lung-nodule-seg"},
        "monai_version": "1.6.1",
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {},
        "task": "Lung and lung nodule segmentation of CT slices (demonstration)",
        "description": "ainode's demonstration 2D U-Net, trained on synthetic phantoms",
        "authors": "ainode",
        "copyright": "ainode",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": in_channels,
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": out_channels,
                    "spatial_shape": spatial,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "background", "1": "lung", "2": "nodule"},
                }
            },
        },
    }


BUNDLE_INFERENCE = {
    "bundle_root": ".",
    "network_def": {"_target_": "torch.jit.load", "f": "$@bundle_root + '/models/model.ts'"},
    "network": "$@network_def.eval()",
}


def write_bundle(bundle: Path, scripted: torch.jit.ScriptModule, metadata: dict) -> Path:
    """A MONAI bundle laid out by MONAI's own tools; returns its models/model.ts."""
    from monai.bundle import init_bundle
    from monai.data import save_net_with_metadata

    init_bundle(bundle, metadata_str=metadata, inference_str=BUNDLE_INFERENCE)
    save_net_with_metadata(scripted, str(bundle / "models" / "model"), meta_values=metadata)
    return bundle / "models" / "model.ts"


def build_package(kind: str, root: Path, network: torch.nn.Module | None = None) -> Path:
    """A package of ``kind`` under ``root`` made from the shipped segmentation network."""
    target = root / package_name(kind)
    source_dir = shipped_packages_dir() / SOURCE
    network = network if network is not None else source_network()
    if kind == "module":
        target.mkdir(parents=True)
        shutil.copy(source_dir / "weights.pt", target / "weights.pt")
        return write_package(target, kind, source_manifest()["network"])
    if kind == "onnx":
        target.mkdir(parents=True)
        onnx_export(network, target / "network.onnx")
        spec = {"format": "onnx", "weights": "network.onnx"}
        return write_package(target, kind, {**spec, "sha256": digest(target / "network.onnx")})
    scripted = torch.jit.trace(network, torch.zeros(1, 1, 128, 128))
    if kind == "torchscript":
        target.mkdir(parents=True)
        scripted.save(str(target / "network.ts"))
        spec = {"format": "torchscript", "weights": "network.ts"}
        return write_package(target, kind, {**spec, "sha256": digest(target / "network.ts")})
    target.mkdir(parents=True)
    model_ts = write_bundle(target / "bundle", scripted, bundle_metadata())
    spec = {"format": "monai_bundle", "bundle": "bundle/", "sha256": digest(model_ts)}
    return write_package(target, kind, spec)


def build_all(root: Path) -> dict[str, Path]:
    network = source_network()
    return {kind: build_package(kind, root, network) for kind in KINDS}


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``ainode models validate PATH`` in this process (the command is the same code)."""
    capsys.readouterr()
    code = main(["models", "validate", str(path)])
    return code, capsys.readouterr().out


def ainode(*args: str, models_dir: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True, text=True, timeout=300,
        env={"AINODE_DATA_DIR": str(data_dir), "AINODE_MODELS_DIR": str(models_dir),
             "AINODE_DEVICE": "cpu", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_all(tmp_path_factory.mktemp("formats"))


def test_the_monai_bundle_passes_monai_s_own_checks(packages: dict[str, Path]) -> None:
    from monai.bundle import ConfigParser, verify_net_in_out

    bundle = packages["monai_bundle"] / "bundle"
    configs = bundle / "configs"
    parser = ConfigParser()
    parser.read_config(configs / "inference.json")
    parser.read_meta(configs / "metadata.json")
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network")
    assert network(torch.zeros(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.json"),
        device="cpu",
        n=8,
        bundle_root=str(bundle),
    )


def test_all_four_kinds_are_discovered_and_validate(
    packages: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = packages["module"].parent
    registry = discover_packages(root)
    assert registry.refused == []
    for kind, path in packages.items():
        package = registry.get(package_name(kind))
        assert package.path == path
        assert package.manifest.network.format == kind
        assert sha256_of(package.weights_path) == package.manifest.network.sha256
    assert registry.get(package_name("monai_bundle")).weights_path.name == "model.ts"
    for kind, path in packages.items():
        code, out = validate(path, capsys)
        assert code == 0 and out.startswith("OK"), out
        assert package_name(kind) in out and f"\t{kind}\t" in out
        assert "sha256 verified, input 1x1x128x128 -> output 1x3x128x128" in out
    # And once as the operator runs it, as its own process.
    result = ainode("models", "validate", str(packages["onnx"]), models_dir=root, data_dir=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("OK"), result.stdout + result.stderr


def test_analyze_gives_seg_and_sr_and_the_label_maps_agree(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    phantom = make_phantom(
        np.random.default_rng(31), shape=(10, 192, 192), spacing=(3.0, 1.8, 1.8), lesions=1
    )
    datasets = make_ct_series(phantom.hu, phantom.spacing)
    write_series(datasets, tmp_path / "in")
    source_uids = [str(ds.SOPInstanceUID) for ds in datasets]
    root = packages["module"].parent
    label_maps: dict[str, np.ndarray] = {}
    for kind in KINDS:
        out = tmp_path / f"out-{kind}"
        result = ainode(
            "analyze", str(tmp_path / "in"), "--model", package_name(kind), "--out", str(out),
            models_dir=root, data_dir=tmp_path / "data",
        )  # fmt: skip
        assert result.returncode == 0, f"{kind}: {result.stdout}{result.stderr}"
        written = sorted(out.glob("*.dcm"))
        assert [dcmread(p, stop_before_pixels=True).Modality for p in written] == ["SEG", "SR"]
        seg = hd.seg.segread(written[0])
        assert seg.ManufacturerModelName == package_name(kind)
        masks = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=source_uids,
            segment_numbers=[1, 2],
            assert_missing_frames_are_empty=True,
        )
        labels = np.zeros(masks.shape[:3], dtype=np.uint8)
        for number in (1, 2):
            labels[masks[..., number - 1] > 0] = number
        label_maps[kind] = labels
    reference = label_maps["module"]
    assert (reference == 1).sum() > 0, "the shipped model found no lung at all"
    for kind in ("torchscript", "monai_bundle"):
        assert np.array_equal(label_maps[kind], reference), kind
    agreement = float((label_maps["onnx"] == reference).mean())
    assert agreement >= 0.999, f"ONNX agrees on {agreement:.5f} of voxels"


# ---------------------------------------------------------------- refusals


def edit_manifest(package: Path, edit: Callable[[dict], None]) -> None:
    manifest = yaml.safe_load((package / "model.yaml").read_text())
    edit(manifest)
    (package / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def copy_kind(packages: dict[str, Path], kind: str, into: Path, as_dir: str) -> Path:
    target = into / as_dir
    shutil.copytree(packages[kind], target)
    edit_manifest(target, lambda m: m.update(name=as_dir))
    return target


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_sha256_is_refused_naming_both_digests(
    packages: dict[str, Path], tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    package_dir = copy_kind(packages, kind, tmp_path, f"tampered-{kind.replace('_', '-')}")
    edit_manifest(package_dir, set_in(("network", "sha256"), "0" * 64))
    package = open_package(package_dir)
    with pytest.raises(ModelUnavailable) as caught:
        load_network(package, CPU)
    message = str(caught.value)
    assert package.manifest.network.sha256 in message
    assert sha256_of(package.weights_path) in message
    code, out = validate(package_dir, capsys)
    assert code == 1 and out.startswith("INVALID"), out
    assert sha256_of(package.weights_path) in out


def set_in(path: tuple[str, ...], value: object) -> Callable[[dict], None]:
    def edit(manifest: dict) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key] if not isinstance(node, list) else node[int(key)]
        node[path[-1] if not isinstance(node, list) else int(path[-1])] = value

    return edit


def rewrite_bundle_metadata(package: Path, change: Callable[[dict], None]) -> None:
    path = package / "bundle" / "configs" / "metadata.json"
    metadata = json.loads(path.read_text())
    change(metadata)
    path.write_text(json.dumps(metadata))


def image_meta(metadata: dict) -> dict:
    return metadata["network_data_format"]["inputs"]["image"]


# (case, kind copied, change to the copy, words the refusal must hold)
REFUSALS: list[tuple[str, str, Callable[[Path], None], tuple[str, ...]]] = [
    (
        "resize-not-positive", "onnx",
        lambda p: edit_manifest(p, set_in(("preprocessing", "2", "size"), [0, 128])),
        ("resize_inplane", "size", "greater than or equal to 1"),
    ),
    (
        "min-instances-zero", "torchscript",
        lambda p: edit_manifest(p, set_in(("accepts", "min_instances"), 0)),
        ("accepts.min_instances", "greater than or equal to 1"),
    ),
    (
        "label-over-255", "monai_bundle",
        lambda p: edit_manifest(p, set_in(("outputs", "segments", "1", "label"), 256)),
        ("label", "less than or equal to 255"),
    ),
    (
        "bundle-input-channels", "monai_bundle",
        lambda p: rewrite_bundle_metadata(p, lambda m: image_meta(m).update(num_channels=3)),
        ("input channels", "3 input channel(s)", "preprocessing produces 1"),
    ),
    (
        "bundle-output-channels", "monai_bundle",
        lambda p: rewrite_bundle_metadata(
            p, lambda m: m["network_data_format"]["outputs"]["pred"].update(num_channels=2)
        ),
        ("output channels", "2 output channel(s)", "need 3 (background + 2 segment(s))"),
    ),
    (
        "bundle-fixed-size", "monai_bundle",
        lambda p: rewrite_bundle_metadata(
            p, lambda m: image_meta(m).update(spatial_shape=[96, 96])
        ),
        ("input size", "takes 96 rows", "feeds 128"),
    ),
    (
        "bundle-3d", "monai_bundle",
        lambda p: rewrite_bundle_metadata(
            p, lambda m: image_meta(m).update(spatial_shape=[96, 96, 96])
        ),
        ("input dimensions", "3 spatial dimension(s)", "2D slices"),
    ),
    (
        "bundle-dtype", "monai_bundle",
        lambda p: rewrite_bundle_metadata(p, lambda m: image_meta(m).update(dtype="float16")),
        ("input type", "float16", "float32"),
    ),
    (
        "bundle-without-metadata", "monai_bundle",
        lambda p: (p / "bundle" / "configs" / "metadata.json").unlink(),
        ("bundle layout", "configs/metadata.json is missing"),
    ),
    (
        "bundle-without-model-ts", "monai_bundle",
        lambda p: (p / "bundle" / "models" / "model.ts").unlink(),
        ("bundle layout", "models/model.ts", "missing"),
    ),
    (
        "bundle-metadata-lacks-pred", "monai_bundle",
        lambda p: rewrite_bundle_metadata(p, lambda m: m["network_data_format"].pop("outputs")),
        ("bundle metadata", "lacks network_data_format.outputs"),
    ),
    (
        "onnx-file-missing", "onnx",
        lambda p: (p / "network.onnx").unlink(),
        ("network file", "network.onnx", "missing"),
    ),
    (
        "onnx-not-onnx", "onnx",
        lambda p: (p / "network.onnx").write_bytes(b"not a model"),
        ("cannot be opened as ONNX",),
    ),
    (
        "onnx-with-architecture", "onnx",
        lambda p: edit_manifest(p, set_in(("network", "architecture"), "unet2d")),
        ("network.format onnx does not take network.architecture", "only module"),
    ),
    (
        "bundle-without-bundle-field", "monai_bundle",
        lambda p: edit_manifest(p, lambda m: m["network"].pop("bundle")),
        ("network.format monai_bundle requires network.bundle",),
    ),
    (
        "torchscript-outside-package", "torchscript",
        lambda p: edit_manifest(p, set_in(("network", "weights"), "../seg-onnx/network.onnx")),
        ("network.weights", "must lie inside the package folder"),
    ),
    (
        "unknown-format", "torchscript",
        lambda p: edit_manifest(p, set_in(("network", "format"), "tensorflow")),
        ("network.format 'tensorflow' is unknown", "monai_bundle", "onnx"),
    ),
    (
        "module-unknown-architecture", "module",
        lambda p: edit_manifest(p, set_in(("network", "architecture"), "vit9")),
        ("unknown architecture 'vit9'",),
    ),
    (
        "module-three-channels", "module",
        lambda p: edit_manifest(p, set_in(("network", "parameters", "in_channels"), 3)),
        ("input channels", "parameters.in_channels", "preprocessing produces 1"),
    ),
]  # fmt: skip


def test_each_impossible_or_broken_package_is_refused_naming_its_rule_and_others_still_load(
    packages: dict[str, Path], tmp_path: Path
) -> None:
    root = tmp_path / "models"
    for path in packages.values():
        shutil.copytree(path, root / path.name)
    expected: dict[Path, tuple[str, ...]] = {}
    for case, kind, change, words in REFUSALS:
        target = copy_kind(packages, kind, root, f"bad-{case}")
        change(target)
        expected[target] = words
    registry = discover_packages(root)
    assert {package_name(kind) for kind in KINDS} <= set(registry.names)
    refused = dict(registry.refused)
    for target, words in expected.items():
        assert target in refused, f"{target.name} was not refused"
        for word in words:
            assert word in refused[target], f"{target.name}: {word!r} not in {refused[target]!r}"
        with pytest.raises(ManifestError):
            open_package(target)
    assert len(registry.packages) == 2 + len(KINDS)


def test_onnx_whose_input_channels_do_not_fit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    three_channel = unet2d(in_channels=3, out_channels=3, width=4, depth=1).eval()
    target = tmp_path / "seg-onnx-rgb"
    target.mkdir()
    onnx_export(three_channel, target / "network.onnx", channels=3)
    spec = {"format": "onnx", "weights": "network.onnx", "sha256": digest(target / "network.onnx")}
    write_package(target, "onnx-rgb", spec)
    with pytest.raises(ManifestError, match=r"input channels: ONNX input 'image' declares 3"):
        open_package(target)
    code, out = validate(target, capsys)
    assert code == 1 and "preprocessing produces 1" in out, out


def test_validate_refuses_a_network_whose_output_does_not_fit_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # TorchScript declares nothing, so only running it shows the output is wrong.
    two_class = torch.jit.trace(
        unet2d(in_channels=1, out_channels=2, width=4, depth=1).eval(),
        torch.zeros(1, 1, 32, 32),
    )
    target = tmp_path / "seg-ts-two"
    target.mkdir()
    two_class.save(str(target / "network.ts"))
    spec = {
        "format": "torchscript",
        "weights": "network.ts",
        "sha256": digest(target / "network.ts"),
    }
    write_package(target, "ts-two", spec)
    open_package(target)  # nothing to see without running it
    code, out = validate(target, capsys)
    assert code == 1, out
    assert "output shape (1, 2, 128, 128)" in out and "needs (1, 3, 128, 128)" in out
