"""workers.load.slices: decoding every transfer syntax to modality values, and pixel spacing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from tests.factories import make_ct_series, write_series
from tests.series_loading import refusal, shipped_file
from workers.load.series import load_series


@pytest.fixture
def hu() -> np.ndarray:
    return np.random.default_rng(7).integers(-1024, 1500, size=(6, 10, 12)).astype(np.float32)


def test_rescale_slope_and_intercept_are_applied_per_slice(tmp_path: Path) -> None:
    hu = np.linspace(-1000, 1000, 4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    hu = np.round(hu / 2) * 2  # representable with slope 2
    datasets = make_ct_series(hu, rescale=(2.0, -2048.0))
    # A scanner may change the intercept from slice to slice.
    datasets[1].RescaleIntercept = "-1000"

    volume = load_series(write_series(datasets, tmp_path))

    np.testing.assert_array_equal(volume.voxels[[0, 2, 3]], hu[[0, 2, 3]])
    np.testing.assert_array_equal(volume.voxels[1], hu[1] + 1048)


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_RLE.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_compressed_and_other_transfer_syntaxes_decode_to_the_same_values(name: str) -> None:
    reference = load_series([shipped_file("MR_small.dcm")])
    volume = load_series([shipped_file(name)])

    np.testing.assert_array_equal(volume.voxels, reference.voxels)
    assert volume.frame_numbers is None


def test_deflated_transfer_syntax_decodes() -> None:
    path = shipped_file("image_dfl.dcm")
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.DeflatedExplicitVRLittleEndian

    volume = load_series([path])

    np.testing.assert_array_equal(volume.voxels[0], ds.pixel_array.astype(np.float32))


def test_modality_lut_sequence_gives_the_modality_values() -> None:
    path = shipped_file("mlut_18.dcm")
    ds = pydicom.dcmread(path)

    volume = load_series([path])

    np.testing.assert_array_equal(
        volume.voxels[0], apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    )


def test_monochrome1_radiograph_is_inverted_so_that_larger_is_brighter() -> None:
    path = shipped_file("RG3_UNCI.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 10

    volume = load_series([path])

    # Stored 0 (white on a MONOCHROME1 display) becomes 1023, the brightest value.
    np.testing.assert_array_equal(volume.voxels[0], 1023 - ds.pixel_array.astype(np.float32))


def test_monochrome1_ct_keeps_its_hounsfield_units(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu)
    for ds in datasets:
        ds.PhotometricInterpretation = "MONOCHROME1"

    np.testing.assert_array_equal(load_series(write_series(datasets, tmp_path)).voxels, hu)


def test_truncated_pixel_data_is_refused() -> None:
    assert "is cut short: its pixel data should end at byte 9692, the file has 9630" in refusal(
        [shipped_file("MR_truncated.dcm")]
    )


def test_missing_pixel_spacing_is_refused_for_several_slices(
    tmp_path: Path, hu: np.ndarray
) -> None:
    datasets = make_ct_series(hu)
    for ds in datasets:
        del ds.PixelSpacing

    assert "no valid PixelSpacing" in refusal(write_series(datasets, tmp_path))
