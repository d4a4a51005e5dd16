"""workers.load.stack: slice order along the normal, and a clear refusal of an irregular stack."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from tests.factories import make_ct_series, write_series
from tests.series_loading import refusal
from workers.load.series import load_series


@pytest.fixture
def hu() -> np.ndarray:
    return np.random.default_rng(7).integers(-1024, 1500, size=(6, 10, 12)).astype(np.float32)


def test_shuffled_files_load_in_slice_order(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu, (2.5, 0.7, 0.8), origin=(-10.0, 20.0, -30.0))
    paths = write_series(datasets, tmp_path)
    random.Random(3).shuffle(paths)

    volume = load_series(paths)

    assert volume.voxels.dtype == np.float32
    np.testing.assert_array_equal(volume.voxels, hu)
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.8))
    np.testing.assert_allclose(volume.origin, (-10.0, 20.0, -30.0))
    np.testing.assert_allclose(volume.slice_direction, (0, 0, 1))
    assert [ds.SOPInstanceUID for ds in volume.datasets] == [ds.SOPInstanceUID for ds in datasets]
    assert volume.voxel_volume_ml == pytest.approx(2.5 * 0.7 * 0.8 / 1000)


def test_order_follows_the_slice_normal_of_an_oblique_sagittal_stack(
    tmp_path: Path, hu: np.ndarray
) -> None:
    # Sagittal: rows run anterior-posterior (+y), columns head-foot (-z); the normal is -x.
    orientation = (0, 1, 0, 0, 0, -1)
    datasets = make_ct_series(hu, (3.0, 1.0, 1.0), orientation=orientation, origin=(50, 0, 0))
    paths = write_series(datasets, tmp_path)

    volume = load_series(list(reversed(paths)))

    np.testing.assert_array_equal(volume.voxels, hu)
    np.testing.assert_allclose(volume.row_direction, (0, 1, 0))
    np.testing.assert_allclose(volume.column_direction, (0, 0, -1))
    np.testing.assert_allclose(volume.slice_direction, (-1, 0, 0))
    np.testing.assert_allclose(volume.origin, (50, 0, 0))
    assert volume.spacing[0] == pytest.approx(3.0)


def test_small_irregularities_within_tolerance_are_accepted(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu, (2.5, 1.0, 1.0))
    z = float(datasets[2].ImagePositionPatient[2])
    datasets[2].ImagePositionPatient = [0, 0, f"{z + 0.004:.4f}"]
    datasets[3].ImageOrientationPatient = ["1", "0.00001", "0", "0", "1", "0"]

    volume = load_series(write_series(datasets, tmp_path))

    assert volume.spacing[0] == pytest.approx(2.5, abs=1e-3)


def test_single_slice_without_geometry_uses_defaults(tmp_path: Path, hu: np.ndarray) -> None:
    ds = make_ct_series(hu[:1])[0]
    del ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.SliceThickness

    volume = load_series(write_series([ds], tmp_path))

    assert volume.shape == (1, 10, 12)
    assert volume.spacing == pytest.approx((1.0, 0.8, 0.8))
    np.testing.assert_allclose(volume.origin, (0, 0, 0))
    np.testing.assert_allclose(volume.row_direction, (1, 0, 0))
    np.testing.assert_allclose(volume.slice_direction, (0, 0, 1))


def test_single_slice_spacing_is_its_slice_thickness(tmp_path: Path, hu: np.ndarray) -> None:
    volume = load_series(write_series(make_ct_series(hu[:1], (5.0, 0.5, 0.5)), tmp_path))

    assert volume.spacing == pytest.approx((5.0, 0.5, 0.5))


def test_mixed_orientations_are_refused(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu)
    datasets[0].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal localizer

    assert "different orientations" in refusal(write_series(datasets, tmp_path))


def test_duplicate_positions_are_refused(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu)
    datasets[4].ImagePositionPatient = datasets[3].ImagePositionPatient

    reason = refusal(write_series(datasets, tmp_path))

    assert "duplicate slice positions" in reason
    assert "instances 4 and 5" in reason


def test_missing_slice_is_refused_and_the_gap_named(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu, (2.5, 1.0, 1.0))
    del datasets[3]

    reason = refusal(write_series(datasets, tmp_path))

    assert "not uniform" in reason
    assert "gap of 5.000 mm" in reason
    assert "spacing is 2.500 mm" in reason
    assert "missing slice" in reason


def test_irregular_spacing_is_refused(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu, (2.5, 1.0, 1.0))
    datasets[2].ImagePositionPatient = [0, 0, 5.3]

    assert "not uniform" in refusal(write_series(datasets, tmp_path))


def test_sheared_stack_is_refused(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu, (2.5, 1.0, 1.0))
    for index, ds in enumerate(datasets):
        ds.ImagePositionPatient = [0, f"{index * 0.5:.2f}", f"{index * 2.5:.2f}"]

    assert "gantry tilt" in refusal(write_series(datasets, tmp_path))


@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "ImageOrientationPatient"])
def test_missing_geometry_is_refused_for_several_slices(
    tmp_path: Path, hu: np.ndarray, keyword: str
) -> None:
    datasets = make_ct_series(hu)
    delattr(datasets[1], keyword)

    reason = refusal(write_series(datasets, tmp_path))

    assert "lack ImagePositionPatient or ImageOrientationPatient" in reason
