"""3D networks: sliding-window segmentation, whole-volume classification, package checks.

The networks are built here with fixed weights, so every expected output is known:
a pointwise Conv3d gives, per voxel, what the whole-volume pass gives, which the
blended windows must reproduce. Packages are written to tmp_path as a site would
(model.yaml, network file, its sha256) and run through ``run_model``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models.architectures import unet3d
from models.manifest import ManifestError
from models.registry import ModelPackage, discover_packages, open_package
from tests.model_packages import (
    CPU,
    onnx_export3d,
    pointwise3d,
    random_volume,
    volume_of,
    write_package,
)
from workers.infer import (
    NetworkCache,
    _window_starts,
    importance_map,
    sliding_window,
)
from workers.pipeline import run_model


def test_window_starts_overlap_and_end_flush():
    assert _window_starts(37, 16, 0.25) == [0, 12, 21]
    assert _window_starts(16, 16, 0.5) == [0]
    assert _window_starts(20, 8, 0.0) == [0, 8, 12]
    for size, patch, overlap in [(37, 16, 0.25), (100, 24, 0.5), (9, 3, 0.9)]:
        starts = _window_starts(size, patch, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + patch] = True
        assert covered.all() and starts[-1] == size - patch


def test_importance_map_peaks_in_the_centre_and_stays_positive():
    weights = importance_map((8, 16, 15), CPU)
    assert weights.shape == (8, 16, 15)
    assert float(weights.min()) >= 1e-3
    assert float(weights.max()) == pytest.approx(1.0, abs=1e-6)
    assert float(weights[4, 8, 7]) > float(weights[0, 0, 0])


def test_sliding_window_equals_the_whole_volume_pass():
    network = pointwise3d().eval()
    volume = torch.from_numpy(random_volume((1, 20, 37, 29)))
    with torch.inference_mode():
        whole = network(volume.unsqueeze(0))[0].numpy()
    for overlap in (0.0, 0.25, 0.6):
        blended = sliding_window(network, volume, (8, 16, 16), overlap, 2, CPU)
        assert blended.shape == whole.shape
        np.testing.assert_allclose(blended, whole, atol=1e-5)
        np.testing.assert_array_equal(blended.argmax(0), whole.argmax(0))


def test_a_3x3x3_network_agrees_with_the_whole_volume_away_from_window_edges():
    torch.manual_seed(0)
    network = nn.Conv3d(1, 2, 3, padding=1).eval()
    volume = torch.from_numpy(random_volume((1, 16, 30, 30), seed=3))
    with torch.inference_mode():
        whole = network(volume.unsqueeze(0))[0].numpy()
    # Windows of the whole depth and width: only rows are split, so only a window's
    # first and last row inside the volume see its zero padding instead of neighbours.
    blended = sliding_window(network, volume, (16, 16, 30), 0.25, 2, CPU)
    starts = _window_starts(30, 16, 0.25)
    edges = {r for s in starts for r in (s, s + 15)} - {0, 29}
    rows = [r for r in range(30) if r not in edges]
    assert len(rows) >= 24
    np.testing.assert_allclose(blended[:, :, rows], whole[:, :, rows], atol=1e-5)
    np.testing.assert_array_equal(blended.argmax(0)[:, rows], whole.argmax(0)[:, rows])


def test_run_model_segments_with_a_3d_torchscript_package(tmp_path):
    folder = write_package(
        tmp_path / "bright-3d",
        pointwise3d(),
        spatial_dims=3,
        patch_size=[8, 16, 16],
        patch_overlap=0.25,
    )
    package = open_package(folder)
    voxels = random_volume((19, 40, 33))
    output = run_model(package, volume_of(voxels), CPU, NetworkCache())
    assert output.labels is not None and output.labels.shape == voxels.shape
    np.testing.assert_array_equal(output.labels, (voxels > 0.5).astype(np.uint8))


def test_a_volume_smaller_than_the_patch_is_padded_and_cropped_back(tmp_path):
    folder = write_package(
        tmp_path / "bright-small", pointwise3d(), spatial_dims=3, patch_size=[8, 16, 16]
    )
    voxels = random_volume((3, 9, 20))  # smaller along two axes, larger along one
    output = run_model(open_package(folder), volume_of(voxels), CPU, NetworkCache())
    np.testing.assert_array_equal(output.labels, (voxels > 0.5).astype(np.uint8))


def test_a_3d_network_maps_back_through_resampling(tmp_path):
    folder = write_package(
        tmp_path / "bright-resampled",
        pointwise3d(),
        spatial_dims=3,
        patch_size=[8, 8, 8],
        preprocessing=[{"step": "resample", "spacing": [2.0, 2.0, 2.0], "order": 0}],
    )
    voxels = np.zeros((10, 24, 24), np.float32)
    voxels[2:8, 4:20, 6:18] = 1.0
    output = run_model(open_package(folder), volume_of(voxels), CPU, NetworkCache())
    assert output.labels.shape == voxels.shape
    assert (output.labels[3:7, 6:18, 8:16] == 1).all() and (output.labels[:, :2] == 0).all()


class MeanBrightness(nn.Module):
    """One class, logit 10 * (mean - 0.5) over the whole volume: (B, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * (x.mean(dim=(2, 3, 4)) - 0.5)


def test_3d_classification_is_one_pass_over_the_prepared_volume(tmp_path):
    folder = write_package(
        tmp_path / "bright-class",
        MeanBrightness(),
        task="classification",
        spatial_dims=3,
        preprocessing=[{"step": "crop_or_pad", "size": [4, 8, 8], "value": 0.0}],
    )
    package = open_package(folder)
    voxels = np.full((6, 12, 10), 0.8, np.float32)  # cropped to (4, 8, 8): mean 0.8
    output = run_model(package, volume_of(voxels), CPU, NetworkCache())
    assert output.labels is None
    assert output.probabilities["bright"] == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-5)


def test_a_unet3d_module_package_runs(tmp_path):
    torch.manual_seed(1)
    folder = tmp_path / "unet3d"
    folder.mkdir()
    network = unet3d(in_channels=1, out_channels=2, width=2, depth=1)
    torch.save(network.state_dict(), folder / "weights.pt")
    write_package(
        folder,
        None,
        format="module",
        architecture="unet3d",
        weights="weights.pt",
        parameters={"in_channels": 1, "out_channels": 2, "width": 2, "depth": 1},
        spatial_dims=3,
        patch_size=[8, 16, 16],
    )
    voxels = random_volume((10, 20, 18))
    output = run_model(open_package(folder), volume_of(voxels), CPU, NetworkCache())
    assert output.labels.shape == voxels.shape and set(np.unique(output.labels)) <= {0, 1}


def write_bundle(folder: Path, spatial_shape: list) -> None:
    bundle = folder / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    torch.jit.save(torch.jit.script(pointwise3d().eval()), str(bundle / "models" / "model.ts"))
    metadata = {"network_data_format": {
        "inputs": {"image": {"dtype": "float32", "num_channels": 1,
                             "spatial_shape": spatial_shape}},
        "outputs": {"pred": {"num_channels": 2}},
    }}  # fmt: skip
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))


def test_discovery_checks_3d_packages(tmp_path):
    root = tmp_path / "models"
    three_d = {"spatial_dims": 3, "patch_size": [8, 16, 16]}
    write_package(root / "ok-ts", pointwise3d(), **three_d)
    write_package(root / "no-patch", pointwise3d(), spatial_dims=3)
    write_package(root / "patch-2d", pointwise3d(), patch_size=[8, 16, 16])
    write_package(root / "patch-short", pointwise3d(), spatial_dims=3, patch_size=[16, 16])
    write_package(root / "overlap-one", pointwise3d(), **three_d, patch_overlap=1.0)
    for name, rank, dims in [("ok-onnx", 5, 3), ("onnx-5-as-2d", 5, 2), ("onnx-4-as-3d", 4, 3)]:
        (root / name).mkdir()
        conv = pointwise3d() if rank == 5 else nn.Conv2d(1, 2, 1)
        onnx_export3d(conv, root / name / "network.onnx", rank)
        spec = {"spatial_dims": dims, "patch_size": [8, 16, 16]} if dims == 3 else {}
        write_package(root / name, None, format="onnx", weights="network.onnx", **spec)
    for name, shape in [("ok-bundle", ["8*n", 16, 16]), ("bundle-2d-shape", [16, 16]),
                        ("bundle-wrong-patch", [8, 32, 32])]:  # fmt: skip
        (root / name).mkdir()
        write_bundle(root / name, shape)
        write_package(root / name, None, format="monai_bundle", bundle="bundle", **three_d)
    (root / "unet3d-as-2d").mkdir()
    torch.save(unet3d(width=2, depth=1).state_dict(), root / "unet3d-as-2d" / "weights.pt")
    write_package(
        root / "unet3d-as-2d",
        None,
        format="module",
        architecture="unet3d",
        weights="weights.pt",
        parameters={"width": 2, "depth": 1},
    )

    registry = discover_packages(root)
    assert {"ok-ts", "ok-onnx", "ok-bundle"} <= set(registry.names)
    refused = {path.name: reason for path, reason in registry.refused}
    expected = {
        "no-patch": ("network.patch_size", "3D segmentation"),
        "patch-2d": ("patch_size applies to 3D networks only",),
        "patch-short": ("patch_size", "at least 3 items"),
        "overlap-one": ("patch_overlap", "less than 1"),
        "onnx-5-as-2d": ("input rank", "rank 4"),
        "onnx-4-as-3d": ("input rank", "rank 5", "slices, rows, columns"),
        "bundle-2d-shape": ("input dimensions", "2 spatial dimension(s)", "3D volumes"),
        "bundle-wrong-patch": ("input size", "takes 32 rows", "feeds 16"),
        "unet3d-as-2d": ("input dimensions", "unet3d is 3D", "spatial_dims is 2"),
    }
    for name, words in expected.items():
        assert name in refused, f"{name} was not refused"
        for word in words:
            assert word in refused[name], f"{name}: {word!r} not in {refused[name]!r}"
    with pytest.raises(ManifestError, match="patch_size"):
        open_package(root / "no-patch")
    assert isinstance(registry.get("ok-bundle"), ModelPackage)


def test_validate_runs_a_3d_package_at_its_patch_size(tmp_path):
    from models.loader import load_network, trial_run

    folder = write_package(
        tmp_path / "bright-3d", pointwise3d(), spatial_dims=3, patch_size=[8, 16, 16]
    )
    package = open_package(folder)
    trial = trial_run(package, load_network(package, CPU), CPU)
    assert trial.input_shape == (1, 1, 8, 16, 16)
    assert trial.output_shape == (1, 2, 8, 16, 16)
