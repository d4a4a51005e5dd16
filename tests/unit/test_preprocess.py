"""Declarative preprocessing: each step's effect, its errors, and its speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from models.contract_errors import ManifestError
from models.manifest import PreprocessStep
from models.steps import STEP_KINDS, StepRole, check_steps
from workers.errors import AnalysisError, SeriesNotAnalysable
from workers.preprocessing import STEPS, build_steps, preprocess, preprocess_array
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
    assert {
        "window",
        "scale",
        "zscore",
        "percentile_scale",
        "clip_outliers",
        "mask_padding",
        "n4_bias_field",
        "resample",
        "canonical_orientation",
        "crop_or_pad",
        "resize_inplane",
    } <= set(STEPS)


def test_every_step_of_the_contract_has_an_operation_of_its_kind():
    assert set(STEPS) == set(STEP_KINDS)
    for name, operation in STEPS.items():
        assert issubclass(operation, STEP_KINDS[name]), name
        assert operation.role is STEP_KINDS[name].role, name
    assert {k.name for k in STEP_KINDS.values() if k.role is StepRole.TEMPORAL} == {"slice_timing"}


def test_the_contract_refuses_what_the_worker_refuses_with_the_same_words():
    steps = [step("resize_inplane", size=[64, 64]), step("mask_padding", fill=0)]
    with pytest.raises(ManifestError) as contract:
        check_steps(steps)
    with pytest.raises(AnalysisError) as worker:
        build_steps(steps)
    assert str(contract.value) == str(worker.value)
    assert "before geometric" in str(contract.value)


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
    assert prepared.source_shape == (3, 512, 384)
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
        (step("percentile_scale", p_low=99, p_high=1), ["percentile_scale", "below"]),
        (step("clip_outliers", p_high=101), ["clip_outliers", "p_high"]),
        (step("mask_padding", below=-2000), ["mask_padding", "fill"]),
        (step("resample", spacing=[1.0, 1.0]), ["resample", "spacing"]),
        (step("resample", spacing=[1, 1, 1], order=2), ["resample", "order"]),
        (step("canonical_orientation", code="LPL"), ["canonical_orientation", "code"]),
        (step("crop_or_pad", size=[0, 64, 64]), ["crop_or_pad", "size"]),
        (step("n4_bias_field", shrink=0), ["n4_bias_field", "shrink"]),
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


def test_zscore_over_body_voxels_only():
    voxels = np.full((2, 8, 8), -1000.0, dtype=np.float32)
    voxels[:, 2:6, 2:6] = np.arange(32, dtype=np.float32).reshape(2, 4, 4)
    out = preprocess_array(voxels, [step("zscore", mask_above=-500)])
    body = out[:, 2:6, 2:6]
    assert abs(float(body.mean())) < 1e-5 and abs(float(body.std()) - 1.0) < 1e-4


def test_percentile_scale_and_clip_outliers():
    voxels = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    scaled = preprocess_array(voxels, [step("percentile_scale", p_low=10, p_high=90)])
    assert scaled.min() == 0.0 and scaled.max() == pytest.approx(1.0)
    np.testing.assert_allclose(scaled.reshape(-1)[500], (500 - 99.9) / (899.1 - 99.9), rtol=1e-5)
    clipped = preprocess_array(voxels, [step("clip_outliers", p_low=1, p_high=99)])
    assert clipped.min() == pytest.approx(9.99) and clipped.max() == pytest.approx(989.01)
    assert clipped.reshape(-1)[500] == 500.0


def test_mask_padding_by_threshold_and_by_pixel_padding_value():
    from pydicom import Dataset

    voxels = np.array([[[-3024.0, -2000.0, -1000.0, 40.0]]], dtype=np.float32)
    volume = volume_of(voxels)
    header = Dataset()
    header.PixelPaddingValue = 24  # stored; HU = 24 - 1024 = -1000
    header.RescaleSlope, header.RescaleIntercept, header.Modality = 1, -1024, "CT"
    volume.datasets = [header]
    both = preprocess(volume, [step("mask_padding", below=-1500, fill=-1024)]).array
    np.testing.assert_array_equal(both[0, 0], [-1024, -1024, -1024, 40])
    only_threshold = preprocess(
        volume, [step("mask_padding", below=-2500, fill=0, pixel_padding_value=False)]
    ).array
    np.testing.assert_array_equal(only_threshold[0, 0], [0, -2000, -1000, 40])


def test_mask_padding_must_precede_geometric_steps():
    with pytest.raises(AnalysisError, match="before geometric"):
        build_steps([step("resample", spacing=[1, 1, 1]), step("mask_padding", fill=0)])


def test_n4_removes_a_smooth_multiplicative_field():
    z, y, x = np.meshgrid(np.arange(16), np.arange(64), np.arange(64), indexing="ij")
    tissue = np.where((x - 32) ** 2 + (y - 32) ** 2 < 26**2, 100.0, 0.0).astype(np.float32)
    tissue[:, 20:30, 20:30] = 150.0
    field = np.exp(0.4 * (x - 32) / 32).astype(np.float32)
    inside = tissue == 100.0
    before = float((tissue * field)[inside].std() / (tissue * field)[inside].mean())
    out = preprocess(
        volume_of(tissue * field), [step("n4_bias_field", shrink=2, iterations=[30, 30])]
    ).array
    after = float(out[inside].std() / out[inside].mean())
    assert after < 0.5 * before
