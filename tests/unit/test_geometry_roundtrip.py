"""Geometric preprocessing and its inverse: outputs map back onto the source grid.

Label volumes go to the prepared grid and back (``Prepared.to_prepared`` then
``to_source``) on anisotropic, oblique and single-slice inputs: exact for
permutations, flips and crop/pad; within half a voxel and Dice > 0.95 through
resampling and resizing. The prepared grid's placement in patient space is checked
against the source: an object stays where it was in millimetres.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.manifest import PreprocessStep
from workers.preprocessing import preprocess
from workers.volume import Volume

# Rows: slice, row and column directions of an axial series.
AXIAL = np.eye(3)[[2, 1, 0]]


def step(name: str, **parameters) -> PreprocessStep:
    return PreprocessStep(step=name, **parameters)


def rotation(z_degrees: float, x_degrees: float) -> np.ndarray:
    a, b = np.radians(z_degrees), np.radians(x_degrees)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_z @ about_x


def labelled_volume(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    axes: np.ndarray = AXIAL,
    radius_mm: float = 14.0,
) -> tuple[Volume, np.ndarray]:
    """Three ellipsoidal objects (labels 1..3) and an image of them; ``axes`` rows are
    the (slice, row, column) directions."""
    grids = np.meshgrid(
        *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
    )
    extent = [max((n - 1) * s, 1e-6) for n, s in zip(shape, spacing, strict=True)]
    labels = np.zeros(shape, dtype=np.uint8)
    for label, centre in enumerate([(0.5, 0.35, 0.3), (0.5, 0.6, 0.7), (0.5, 0.3, 0.7)], 1):
        squared = sum(
            ((g - c * e) / (radius_mm if e > 1e-3 else 1.0)) ** 2
            for g, c, e in zip(grids, centre, extent, strict=True)
        )
        labels[squared <= 1.0] = label
    image = labels.astype(np.float32) * 100.0 - 1000.0
    volume = Volume(
        voxels=image,
        spacing=spacing,
        origin=np.array([-120.0, -80.0, 40.0]),
        slice_direction=axes[0],
        column_direction=axes[1],
        row_direction=axes[2],
        datasets=[],
    )
    return volume, labels


def centroid_mm(labels: np.ndarray, label: int, grid) -> np.ndarray:
    index = np.argwhere(labels == label).mean(axis=0)
    return grid.origin + sum(index[a] * grid.spacing[a] * grid.axes[a] for a in range(3))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def check_roundtrip(volume: Volume, labels: np.ndarray, steps, exact: bool) -> dict:
    prepared = preprocess(volume, steps)
    on_grid = prepared.to_prepared(labels, "nearest")
    assert on_grid.shape == prepared.array.shape
    back = prepared.to_source(on_grid, "nearest")
    assert back.shape == labels.shape and back.dtype == labels.dtype
    errors = {}
    for label in (1, 2, 3):
        # The object is where it was, in millimetres, on the prepared grid too (nearest
        # sampling moves it by less than half the coarser voxel).
        moved = centroid_mm(on_grid, label, prepared.grid) - centroid_mm(
            labels, label, prepared.source
        )
        assert np.linalg.norm(moved) < 0.5 * max(*prepared.grid.spacing, *prepared.source.spacing)
        shift = np.argwhere(back == label).mean(axis=0) - np.argwhere(labels == label).mean(0)
        errors[label] = (float(np.abs(shift).max()), dice(back == label, labels == label))
        if exact:
            assert errors[label] == (0.0, 1.0)
        else:
            assert errors[label][0] < 0.5 and errors[label][1] > 0.95
    # Scores map back linearly: one-hot channels there and back, then the arg-max.
    onehot = np.stack([labels == c for c in range(4)]).astype(np.float32)
    scores = prepared.to_source(prepared.to_prepared(onehot, "linear"), "linear")
    assert scores.dtype == np.float32 and scores.shape == (4, *labels.shape)
    argmax = scores.argmax(axis=0)
    for label in (1, 2, 3):
        assert dice(argmax == label, labels == label) > (0.999 if exact else 0.95)
    return errors


def test_anisotropic_resample_crop_and_resize_round_trip():
    volume, labels = labelled_volume((24, 128, 112), (3.0, 0.7, 0.7))
    steps = [
        step("resample", spacing=[1.5, 1.5, 1.5]),
        step("crop_or_pad", size=[40, 64, 64], value=-1000),
        step("resize_inplane", size=[96, 80]),
    ]
    prepared = preprocess(volume, steps)
    assert prepared.array.shape == (40, 96, 80)
    assert not prepared.slicewise
    check_roundtrip(volume, labels, steps, exact=False)


def test_oblique_series_reoriented_and_resampled_round_trip():
    axes = rotation(20.0, 12.0) @ np.eye(3)[[2, 1, 0]].T
    volume, labels = labelled_volume((20, 96, 96), (3.0, 0.8, 0.8), axes=axes.T[[0, 1, 2]])
    steps = [step("canonical_orientation", code="RAS"), step("resample", spacing=[1.2, 1.2, 1.2])]
    check_roundtrip(volume, labels, steps, exact=False)


@pytest.mark.parametrize("code", ["LPS", "RAS", "SLP", "IAR"])
def test_reorientation_is_exact_and_follows_the_code(code):
    # Slices run inferior (feet first), rows left to right, columns anterior.
    axes = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    volume, labels = labelled_volume((12, 40, 36), (2.0, 1.0, 1.5), axes=axes)
    prepared = preprocess(volume, [step("canonical_orientation", code=code)])
    letters = {
        "L": [1, 0, 0],
        "R": [-1, 0, 0],
        "P": [0, 1, 0],
        "A": [0, -1, 0],
        "S": [0, 0, 1],
        "I": [0, 0, -1],
    }
    # Code letters are for columns, rows, slices: array axes 2, 1, 0.
    expected = np.array([letters[code[2]], letters[code[1]], letters[code[0]]], dtype=float)
    np.testing.assert_allclose(prepared.grid.axes, expected, atol=1e-12)
    check_roundtrip(volume, labels, [step("canonical_orientation", code=code)], exact=True)


def test_crop_and_pad_are_exact_and_centred():
    volume, labels = labelled_volume((10, 60, 50), (2.0, 1.0, 1.0), radius_mm=8.0)
    steps = [step("crop_or_pad", size=[13, 56, 64], value=-1024)]
    prepared = preprocess(volume, steps)
    assert prepared.array.shape == (13, 56, 64)
    # 10 -> 13 pads 1 before, 2 after; 60 -> 56 crops 2 before; 50 -> 64 pads 7 before.
    assert (prepared.array[0] == -1024).all() and (prepared.array[-2:] == -1024).all()
    np.testing.assert_array_equal(prepared.array[1:11, :, 7:57], volume.voxels[:, 2:58, :])
    check_roundtrip(volume, labels, steps, exact=True)


def test_single_slice_round_trip():
    volume, labels = labelled_volume((1, 200, 180), (5.0, 0.6, 0.6), radius_mm=20.0)
    steps = [
        step("resample", spacing=[None, 1.0, 1.0]),
        step("crop_or_pad", size=[None, 112, 112]),
        step("resize_inplane", size=[128, 128]),
    ]
    prepared = preprocess(volume, steps)
    assert prepared.array.shape == (1, 128, 128) and prepared.slicewise
    errors = check_roundtrip(volume, labels, steps, exact=False)
    assert all(shift < 0.5 for shift, _ in errors.values())


def test_shipped_resize_maps_scores_back_bilinearly_as_before():
    import torch
    import torch.nn.functional as F

    volume, _ = labelled_volume((3, 200, 150), (2.0, 0.7, 0.9))
    prepared = preprocess(volume, [step("resize_inplane", size=[64, 64])])
    scores = np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)
    expected = (
        F.interpolate(
            torch.from_numpy(scores.transpose(1, 0, 2, 3)),
            size=(200, 150),
            mode="bilinear",
            align_corners=False,
        )
        .numpy()
        .transpose(1, 0, 2, 3)
    )
    np.testing.assert_array_equal(prepared.to_source(scores, "linear"), expected)
    # Slice-wise grids map back a few slices at a time.
    np.testing.assert_array_equal(prepared.to_source(scores[:, 1:2], "linear"), expected[:, 1:2])


def test_values_off_the_prepared_grid_are_refused():
    volume, _ = labelled_volume((4, 32, 32), (2.0, 1.0, 1.0))
    prepared = preprocess(volume, [step("resample", spacing=[1.0, 2.0, 2.0])])
    with pytest.raises(ValueError, match="prepared grid"):
        prepared.to_source(np.zeros((4, 32, 32), dtype=np.uint8))
