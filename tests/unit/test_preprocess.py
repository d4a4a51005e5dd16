"""Declarative preprocessing: each step's effect, its errors, and its speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from models.manifest import PreprocessStep
from workers.errors import AnalysisError, SeriesNotAnalysable
from workers.preprocess import STEPS, build_steps, preprocess, preprocess_array
from workers.volume import Volume


def step(name: str, **parameters) -> PreprocessStep:
    return PreprocessStep(step=name, **parameters)


def volume_of(voxels: np.ndarray) -> Volume:
    return Volume(
        voxels=voxels,
        spacing=(2.0, 0.7, 0.7),
        origin=np.zeros(3),
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        slice_direction=np.array([0.0, 0.0, 1.0]),
        datasets=[],
    )


def test_registry_has_the_documented_steps():
    assert {"window", "scale", "zscore", "resize_inplane"} <= set(STEPS)


def test_window_clips_and_scale_maps_to_unit_range():
    voxels = np.array([[[-2000.0, -1000.0, 0.0, 400.0, 3000.0]]], dtype=np.float32)
    out = preprocess_array(
        voxels, [step("window", low=-1000, high=400), step("scale", low=-1000, high=400)]
    )
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 1000 / 1400, 1.0, 1.0], rtol=1e-6)
    assert out.dtype == np.float32


def test_input_volume_is_not_modified():
    voxels = np.full((2, 4, 4), 500.0, dtype=np.float32)
    preprocess_array(voxels, [step("window", low=0, high=100)])
    assert (voxels == 500.0).all()


def test_zscore_with_fixed_and_with_volume_statistics():
    voxels = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    fixed = preprocess_array(voxels, [step("zscore", mean=10.0, std=2.0)])
    np.testing.assert_allclose(fixed, (voxels - 10.0) / 2.0)
    own = preprocess_array(voxels, [step("zscore")])
    assert abs(float(own.mean())) < 1e-5 and abs(float(own.std()) - 1.0) < 1e-5
    flat = preprocess_array(np.full((1, 2, 2), 7.0, dtype=np.float32), [step("zscore")])
    assert (flat == 0.0).all()


def test_resize_inplane_changes_only_rows_and_columns():
    voxels = np.full((3, 512, 384), 0.25, dtype=np.float32)
    prepared = preprocess(volume_of(voxels), [step("resize_inplane", size=[128, 96])])
    assert prepared.array.shape == (3, 128, 96)
    assert prepared.source_shape == (512, 384)
    np.testing.assert_allclose(prepared.array, 0.25, rtol=1e-5)


def test_resize_keeps_a_structure_where_it_was():
    voxels = np.zeros((1, 256, 256), dtype=np.float32)
    voxels[0, 64:128, 128:192] = 1.0
    out = preprocess_array(voxels, [step("resize_inplane", size=[64, 64])])[0]
    assert out[16:32, 32:48].mean() > 0.9
    assert out[:12].max() < 0.01 and out[:, :28].max() < 0.01


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (step("sharpen", amount=2), ["sharpen", "unknown"]),
        (step("window", low=400, high=-1000), ["window", "below"]),
        (step("window", low=-1000), ["window", "high"]),
        (step("scale", low=0, high=1, gamma=2), ["scale", "gamma"]),
        (step("resize_inplane", size=[128]), ["resize_inplane", "size"]),
        (step("zscore", mean=3.0), ["zscore", "both"]),
        (step("zscore", mean=0.0, std=0.0), ["zscore", "std"]),
    ],
)
def test_bad_steps_raise_analysis_errors_naming_the_step(bad, words):
    with pytest.raises(AnalysisError) as caught:
        build_steps([step("window", low=-1000, high=400), bad])
    message = str(caught.value)
    assert "step 2" in message
    for word in words:
        assert word in message


def test_a_volume_without_slices_is_not_analysable():
    with pytest.raises(SeriesNotAnalysable):
        preprocess(volume_of(np.zeros((0, 4, 4), dtype=np.float32)), [])


def test_a_300_slice_512_volume_preprocesses_in_seconds():
    voxels = np.random.default_rng(0).normal(-500, 400, (300, 512, 512)).astype(np.float32)
    steps = [
        step("window", low=-1000, high=400),
        step("scale", low=-1000, high=400),
        step("resize_inplane", size=[128, 128]),
    ]
    start = time.perf_counter()
    prepared = preprocess(volume_of(voxels), steps)
    elapsed = time.perf_counter() - start
    assert prepared.array.shape == (300, 128, 128)
    assert elapsed < 5.0
