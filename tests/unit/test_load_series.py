"""workers.load.series: the loader as a whole, its headers, and any file loaded or refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.factories import make_ct_series, write_series
from tests.series_loading import refusal, shipped_file
from workers.errors import SeriesNotAnalysable
from workers.load.series import load_series


@pytest.fixture
def hu() -> np.ndarray:
    return np.random.default_rng(7).integers(-1024, 1500, size=(6, 10, 12)).astype(np.float32)


def test_pixel_data_is_dropped_but_headers_are_kept(tmp_path: Path, hu: np.ndarray) -> None:
    volume = load_series(write_series(make_ct_series(hu), tmp_path))

    for ds in volume.datasets:
        assert "PixelData" not in ds
        assert ds.Modality == "CT"
        assert "ImagePositionPatient" in ds


def test_real_ct_file_loads_as_one_slice() -> None:
    path = shipped_file("CT_small.dcm")
    ds = pydicom.dcmread(path)

    volume = load_series([path])

    assert volume.shape == (1, 128, 128)
    assert volume.spacing == pytest.approx(
        (float(ds.SliceThickness), float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    )
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(volume.voxels[0], expected.astype(np.float32))
    np.testing.assert_allclose(volume.origin, [float(v) for v in ds.ImagePositionPatient])


def test_no_instances() -> None:
    assert "no instances" in refusal([])


def every_shipped_test_file() -> list[Path]:
    directories = {shipped_file("CT_small.dcm").parent, shipped_file("emri_small.dcm").parent}
    return sorted(path for directory in directories for path in directory.glob("*.dcm"))


@pytest.mark.parametrize("path", every_shipped_test_file(), ids=lambda path: path.name)
def test_any_file_loads_or_is_refused_with_a_reason(path: Path) -> None:
    try:
        volume = load_series([path])
    except SeriesNotAnalysable as exc:
        assert str(exc)
    else:
        assert volume.voxels.ndim == 3 and volume.voxels.dtype == np.float32
