"""Several input series as network channels: preprocessing per channel, order, refusals.

A network whose foreground logit is channel 0 minus channel 1 gives a label map that
is known for any pair of inputs, in 2D (slice batches) and in 3D (sliding windows).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from models.architectures import unet2d
from models.manifest import PreprocessStep
from models.registry import discover_packages, open_package
from tests.model_packages import (
    onnx_export3d,
    pointwise3d,
    random_volume,
    volume_of,
    write_package,
)
from workers.errors import AnalysisError
from workers.infer import NetworkCache
from workers.pipeline import run_model
from workers.preprocessing import preprocess

CPU = torch.device("cpu")


def difference2d() -> nn.Conv2d:
    """Background logit 0, foreground logit ch0 - ch1."""
    conv = nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 0] = 1.0
        conv.weight[1, 1] = -1.0
        conv.bias.zero_()
    return conv


def test_each_channel_gets_its_own_statistics_and_the_primary_s_geometry():
    steps = [
        PreprocessStep(step="zscore"),
        PreprocessStep(step="crop_or_pad", size=[None, 20, 40], value=-3.0),
        PreprocessStep(step="resize_inplane", size=[16, 24]),
    ]
    primary = volume_of(random_volume((5, 30, 30), seed=1) * 100.0 - 50.0)
    other = volume_of(random_volume((5, 30, 30), seed=2) * 7.0 + 3.0)
    prepared = preprocess(primary, steps, [other])
    alone = preprocess(other, steps)
    assert len(prepared.channels) == 2 and prepared.channels[0] is prepared.array
    np.testing.assert_array_equal(prepared.array, preprocess(primary, steps).array)
    np.testing.assert_array_equal(prepared.additional[0], alone.array)
    assert prepared.additional[0].shape == prepared.array.shape == (5, 16, 24)
    # Statistics per channel: ``other`` keeps its own z-score, not the primary's.
    assert not np.allclose(prepared.additional[0], prepared.array, atol=0.1)


def test_a_two_channel_2d_network_sees_both_series(tmp_path):
    folder = write_package(tmp_path / "difference-2d", difference2d(), roles=("pet",))
    package = open_package(folder)
    first = random_volume((6, 40, 27), seed=11)  # 27 columns: padded to 32 and back
    second = random_volume((6, 40, 27), seed=12)
    first[first == second] += 1 / 256  # no ties
    cache = NetworkCache()
    output = run_model(package, volume_of(first), CPU, cache, additional=[volume_of(second)])
    np.testing.assert_array_equal(output.labels, (first > second).astype(np.uint8))
    swapped = run_model(package, volume_of(second), CPU, cache, additional=[volume_of(first)])
    np.testing.assert_array_equal(swapped.labels, (second > first).astype(np.uint8))


def test_a_two_channel_3d_network_sees_both_series(tmp_path):
    folder = write_package(
        tmp_path / "difference-3d",
        pointwise3d(in_channels=2),
        roles=("t2",),
        spatial_dims=3,
        patch_size=[8, 16, 16],
    )
    first = random_volume((11, 21, 18), seed=21)
    second = random_volume((11, 21, 18), seed=22) - 0.5
    output = run_model(
        open_package(folder), volume_of(first), CPU, NetworkCache(), additional=[volume_of(second)]
    )
    # Foreground where ch0 - ch1 > 0.5 (pointwise3d's background logit).
    np.testing.assert_array_equal(output.labels, (first - second > 0.5).astype(np.uint8))


def test_a_wrong_number_of_additional_series_is_refused(tmp_path):
    two = open_package(write_package(tmp_path / "two", difference2d(), roles=("pet",)))
    one = open_package(write_package(tmp_path / "one", nn.Conv2d(1, 2, 1)))
    volume = volume_of(random_volume((2, 16, 16)))
    with pytest.raises(AnalysisError, match=r"takes 1 additional series \(roles: pet\).*0 given"):
        run_model(two, volume, CPU, NetworkCache())
    with pytest.raises(AnalysisError, match=r"takes 0 additional series \(roles: none\).*1 given"):
        run_model(one, volume, CPU, NetworkCache(), additional=[volume])


def test_an_additional_series_off_the_primary_grid_is_refused(tmp_path):
    two = open_package(write_package(tmp_path / "two", difference2d(), roles=("pet",)))
    volume = volume_of(random_volume((2, 16, 16)))
    for other in (
        volume_of(random_volume((2, 16, 15))),
        replace(volume, spacing=(2.0, 1.5, 1.0)),
        replace(volume, origin=np.array([0.0, 0.0, 4.0])),
    ):
        with pytest.raises(AnalysisError, match="not on the primary series' grid"):
            run_model(two, volume, CPU, NetworkCache(), additional=[other])


def test_discovery_refuses_a_network_whose_channels_differ_from_the_inputs(tmp_path):
    root = tmp_path / "models"
    (root / "module-one-channel").mkdir(parents=True)
    torch.save(
        unet2d(in_channels=1, out_channels=2, width=2, depth=1).state_dict(),
        root / "module-one-channel" / "weights.pt",
    )
    write_package(
        root / "module-one-channel",
        None,
        roles=("pet",),
        format="module",
        architecture="unet2d",
        weights="weights.pt",
        parameters={"in_channels": 1, "out_channels": 2, "width": 2, "depth": 1},
    )
    (root / "onnx-3d-one-channel").mkdir()
    onnx_export3d(pointwise3d(), root / "onnx-3d-one-channel" / "network.onnx", 5)
    write_package(
        root / "onnx-3d-one-channel",
        None,
        roles=("pet",),
        format="onnx",
        weights="network.onnx",
        spatial_dims=3,
        patch_size=[8, 16, 16],
    )
    write_package(root / "ok", difference2d(), roles=("pet",))
    registry = discover_packages(root)
    assert "ok" in registry.names
    refused = {path.name: reason for path, reason in registry.refused}
    assert "parameters.in_channels" in refused["module-one-channel"]
    assert "1 input channel(s), the preprocessing produces 2" in refused["module-one-channel"]
    assert "ONNX input 'image' declares 1" in refused["onnx-3d-one-channel"]
    assert "produces 2" in refused["onnx-3d-one-channel"]
