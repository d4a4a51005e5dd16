"""workers.pixels: modality values, MONOCHROME1 polarity, colour refusal and VOI.

pydicom's own Modality LUT and VOI LUT functions are the reference wherever they
apply: our results must equal theirs (VOI output rescaled to [0, 1]) on the real
images pydicom and pydicom-data ship.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

from workers import pixels
from workers.load.series import load_series


def shipped_file(name: str) -> Path:
    """A file shipped offline by pydicom or pydicom-data; fails if it is not on disk."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"test file {name} is not installed"
    return Path(path)


def read(name: str) -> Dataset:
    return pydicom.dcmread(shipped_file(name))


def modality_values(ds: Dataset, groups: tuple[Dataset, ...] = ()) -> np.ndarray:
    stored = ds.pixel_array
    out = np.empty(stored.shape, dtype=np.float32)
    pixels.modality_transform(ds, groups).apply(stored, out)
    return out


def pydicom_output_range(ds: Dataset) -> tuple[float, float]:
    """The range pydicom's windowing scales its output to (PS3.3 C.11.2.1.2)."""
    low, high = pixels.stored_value_range(ds)
    if "RescaleSlope" in ds:
        low = low * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        high = high * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return low, high


def image(photometric: str = "MONOCHROME2", **attributes: object) -> Dataset:
    ds = Dataset()
    ds.PhotometricInterpretation = photometric
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    ds.BitsStored = 10
    ds.PixelRepresentation = 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


# Modality LUT stage ------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_UNCR.dcm", "MR2_UNCR.dcm"])
def test_rescale_matches_pydicom(name: str) -> None:
    ds = read(name)

    expected = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)

    np.testing.assert_allclose(modality_values(ds), expected, rtol=1e-6, atol=1e-3)


def test_modality_lut_sequence_matches_pydicom() -> None:
    ds = read("mlut_18.dcm")
    assert "ModalityLUTSequence" in ds and "RescaleSlope" not in ds

    expected = apply_modality_lut(ds.pixel_array, ds)

    np.testing.assert_array_equal(modality_values(ds), expected.astype(np.float32))


def test_modality_lut_clamps_values_outside_the_table() -> None:
    item = Dataset()
    item.LUTDescriptor = [3, 2, 16]
    item.LUTData = [100, 200, 300]
    item.ModalityLUTType = "OD"
    ds = image(ModalityLUTSequence=[item])
    transform = pixels.modality_transform(ds)
    out = np.empty(5, dtype=np.float32)

    transform.apply(np.array([0, 2, 3, 4, 9]), out)

    np.testing.assert_array_equal(out, [100, 100, 200, 300, 300])
    assert transform.units == "OD"


def test_a_frames_pixel_value_transformation_overrides_the_shared_one() -> None:
    def transformation(intercept: str) -> Dataset:
        item = Dataset()
        item.RescaleSlope, item.RescaleIntercept, item.RescaleType = "2", intercept, "HU"
        group = Dataset()
        group.PixelValueTransformationSequence = [item]
        return group

    per_frame, shared = transformation("-1000"), transformation("-1024")
    ds = image(
        PerFrameFunctionalGroupsSequence=[per_frame, Dataset()],
        SharedFunctionalGroupsSequence=[shared],
    )

    first = pixels.modality_transform(ds, pixels.functional_groups(ds, 1))
    second = pixels.modality_transform(ds, pixels.functional_groups(ds, 2))

    assert (first.slope, first.intercept, first.units) == (2.0, -1000.0, "HU")
    assert (second.slope, second.intercept) == (2.0, -1024.0)


def test_no_modality_lut_is_the_identity() -> None:
    transform = pixels.modality_transform(image())
    out = np.empty(3, dtype=np.float32)

    transform.apply(np.array([0, 7, 1023], dtype=np.uint16), out)

    np.testing.assert_array_equal(out, [0, 7, 1023])


# MONOCHROME1 ---------------------------------------------------------------------


def test_monochrome1_is_inverted_within_the_range_it_can_hold() -> None:
    ds = image("MONOCHROME1", Modality="CR")
    pivot = pixels.inversion_pivot(ds)
    out = np.empty(3, dtype=np.float32)

    pixels.to_modality_values(
        np.array([0, 100, 1023], dtype=np.uint16), pixels.modality_transform(ds), out, pivot
    )

    assert pivot == 1023
    np.testing.assert_array_equal(out, [1023, 923, 0])


def test_monochrome1_with_a_rescale_stays_in_the_rescaled_range() -> None:
    ds = image(
        "MONOCHROME1", Modality="DX", RescaleSlope="2", RescaleIntercept="10", RescaleType="US"
    )

    # Stored 0..1023 rescale to 10..2056: inverting maps 10 to 2056 and back.
    assert pixels.inversion_pivot(ds) == pytest.approx(10 + 2056)


@pytest.mark.parametrize(
    ("attributes", "inverted"),
    [
        ({"Modality": "CT", "RescaleSlope": "1", "RescaleIntercept": "-1024"}, False),
        (
            {"Modality": "MR", "RescaleSlope": "1", "RescaleIntercept": "0", "RescaleType": "HU"},
            False,
        ),
        ({"Modality": "PT"}, False),
        (
            {"Modality": "MR", "RescaleSlope": "1", "RescaleIntercept": "0", "RescaleType": "US"},
            True,
        ),
        ({"Modality": "CR"}, True),
    ],
)
def test_quantitative_values_are_never_inverted(attributes: dict[str, str], inverted: bool) -> None:
    assert (pixels.inversion_pivot(image("MONOCHROME1", **attributes)) is not None) is inverted


def test_monochrome2_is_not_inverted() -> None:
    assert pixels.inversion_pivot(read("MR_small.dcm")) is None


# Colour --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "photometric"),
    [
        ("SC_rgb.dcm", "RGB"),
        ("SC_ybr_full_422_uncompressed.dcm", "YBR_FULL_422"),
        ("SC_ybr_full_uncompressed.dcm", "YBR_FULL"),
        ("examples_palette.dcm", "PALETTE COLOR"),
    ],
)
def test_colour_images_get_a_reason(name: str, photometric: str) -> None:
    reason = pixels.colour_refusal(read(name))

    assert reason is not None
    assert f"colour image ({photometric}" in reason
    assert "only greyscale images can be analysed" in reason


@pytest.mark.parametrize("name", ["MR_small.dcm", "RG3_UNCI.dcm", "CT_small.dcm"])
def test_greyscale_images_are_not_refused(name: str) -> None:
    assert pixels.colour_refusal(read(name)) is None


# VOI -----------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("name", ["MR_small.dcm", "693_UNCR.dcm", "MR2_UNCR.dcm"])
def test_window_matches_pydicom(name: str, function: str) -> None:
    ds = read(name)
    ds.VOILUTFunction = function
    values = modality_values(ds)
    low, high = pydicom_output_range(ds)

    expected = (apply_windowing(values.astype(np.float64), copy.deepcopy(ds)) - low) / (high - low)

    np.testing.assert_allclose(pixels.apply_voi(values, ds), expected, atol=1e-5)


def test_second_window_is_chosen_by_index() -> None:
    ds = read("693_UNCR.dcm")
    ds.WindowCenter, ds.WindowWidth = [40, 400], [100, 1500]
    values = modality_values(ds)
    low, high = pydicom_output_range(ds)

    expected = (apply_windowing(values.astype(np.float64), ds, index=1) - low) / (high - low)

    np.testing.assert_allclose(pixels.apply_voi(values, ds, index=1), expected, atol=1e-5)


def test_voi_lut_sequence_matches_pydicom() -> None:
    ds = read("vlut_04.dcm")
    stored = ds.pixel_array
    bits = ds.VOILUTSequence[0].LUTDescriptor[2]

    expected = apply_voi(stored, ds) / (2**bits - 1)

    np.testing.assert_allclose(pixels.apply_voi(stored.astype(np.float32), ds), expected, atol=1e-6)


def test_monochrome1_volume_is_shown_as_a_viewer_shows_it() -> None:
    path = shipped_file("RG3_UNCI.dcm")
    ds = pydicom.dcmread(path)
    volume = load_series([path])
    low, high = pydicom_output_range(ds)

    # A viewer windows the stored values, then displays the smallest output as white.
    shown = 1.0 - (apply_windowing(ds.pixel_array, ds) - low) / (high - low)

    brightness = pixels.apply_voi(volume)
    np.testing.assert_allclose(brightness[0], shown, atol=1e-5)
    # Larger loaded values are brighter: the loader inverted MONOCHROME1.
    assert np.corrcoef(volume.voxels.ravel(), brightness.ravel())[0, 1] > 0.9


def test_enhanced_object_is_windowed_by_its_frame_voi() -> None:
    volume = load_series([shipped_file("eCT_Supplemental.dcm")])
    shared = volume.datasets[0].SharedFunctionalGroupsSequence[0]
    window = shared.FrameVOILUTSequence[0]
    center, width = float(window.WindowCenter), float(window.WindowWidth)

    expected = np.clip((volume.voxels - (center - 0.5)) / (width - 1) + 0.5, 0, 1)

    np.testing.assert_allclose(pixels.apply_voi(volume), expected, atol=1e-6)


def test_without_voi_the_window_spans_the_values() -> None:
    values = np.array([[-10.0, 0.0, 30.0]], dtype=np.float32)

    np.testing.assert_allclose(pixels.apply_voi(values, image()), [[0.0, 0.25, 1.0]])


def test_an_array_needs_the_dataset_holding_its_voi() -> None:
    with pytest.raises(ValueError, match="needs the dataset"):
        pixels.apply_voi(np.zeros((1, 2, 2), dtype=np.float32))


@pytest.mark.parametrize(("function", "width"), [("LINEAR", 0.5), ("SIGMOID", 0), ("GAMMA", 10)])
def test_invalid_windows_are_refused(function: str, width: float) -> None:
    ds = image(WindowCenter="100", WindowWidth=str(width), VOILUTFunction=function)

    with pytest.raises(ValueError):
        pixels.apply_voi(np.zeros(3, dtype=np.float32), ds)
