"""load_series: slice order, rescale, and a clear refusal for every series it cannot use."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from node.uids import derive_uid
from tests.factories import make_ct_series, write_series
from workers.errors import SeriesNotAnalysable
from workers.load import load_series


def shipped_file(name: str) -> Path:
    """A file shipped offline by pydicom or pydicom-data; fails if it is not on disk."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"test file {name} is not installed"
    return Path(path)


@pytest.fixture
def hu() -> np.ndarray:
    return np.random.default_rng(7).integers(-1024, 1500, size=(6, 10, 12)).astype(np.float32)


def refusal(paths: list[Path]) -> str:
    with pytest.raises(SeriesNotAnalysable) as info:
        load_series(paths)
    return str(info.value)


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


def test_rescale_slope_and_intercept_are_applied_per_slice(tmp_path: Path) -> None:
    hu = np.linspace(-1000, 1000, 4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    hu = np.round(hu / 2) * 2  # representable with slope 2
    datasets = make_ct_series(hu, rescale=(2.0, -2048.0))
    # A scanner may change the intercept from slice to slice.
    datasets[1].RescaleIntercept = "-1000"

    volume = load_series(write_series(datasets, tmp_path))

    np.testing.assert_array_equal(volume.voxels[[0, 2, 3]], hu[[0, 2, 3]])
    np.testing.assert_array_equal(volume.voxels[1], hu[1] + 1048)


def test_pixel_data_is_dropped_but_headers_are_kept(tmp_path: Path, hu: np.ndarray) -> None:
    volume = load_series(write_series(make_ct_series(hu), tmp_path))

    for ds in volume.datasets:
        assert "PixelData" not in ds
        assert ds.Modality == "CT"
        assert "ImagePositionPatient" in ds


def test_small_irregularities_within_tolerance_are_accepted(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu, (2.5, 1.0, 1.0))
    z = float(datasets[2].ImagePositionPatient[2])
    datasets[2].ImagePositionPatient = [0, 0, f"{z + 0.004:.4f}"]
    datasets[3].ImageOrientationPatient = ["1", "0.00001", "0", "0", "1", "0"]

    volume = load_series(write_series(datasets, tmp_path))

    assert volume.spacing[0] == pytest.approx(2.5, abs=1e-3)


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


# Refusals ------------------------------------------------------------------------


def test_no_instances() -> None:
    assert "no instances" in refusal([])


@pytest.mark.parametrize(
    "name", ["rtplan.dcm", "test-SR.dcm", "rtstruct.dcm", "reportsi.dcm", "waveform_ecg.dcm"]
)
def test_objects_without_pixel_data_are_refused(name: str) -> None:
    reason = refusal([shipped_file(name)])

    assert "has no pixel data" in reason
    assert name in reason


def test_image_without_pixel_data_is_refused(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu)
    del datasets[2].PixelData

    assert "(CT Image Storage) has no pixel data" in refusal(write_series(datasets, tmp_path))


def test_enhanced_object_stripped_of_its_functional_groups_is_refused() -> None:
    reason = refusal([shipped_file("emri_small.dcm")])

    assert "emri_small.dcm (Enhanced MR Image Storage)" in reason
    assert "multi-frame image of 10 frames without Per-Frame Functional Groups" in reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("liver.dcm", "(Segmentation Storage) is a segmentation"),
        ("liver_1frame.dcm", "(Segmentation Storage) is a segmentation"),
        ("rtdose.dcm", "(RT Dose Storage) is a radiotherapy dose grid"),
    ],
)
def test_results_with_pixel_data_are_not_images(name: str, reason: str) -> None:
    assert reason in refusal([shipped_file(name)])


@pytest.mark.parametrize(
    "name", ["SC_rgb_rle.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm"]
)
def test_colour_images_are_refused_with_the_reason(name: str) -> None:
    reason = refusal([shipped_file(name)])

    assert "is a colour image (" in reason
    assert "only greyscale images can be analysed" in reason


def test_unreadable_files_are_refused(tmp_path: Path, hu: np.ndarray) -> None:
    paths = write_series(make_ct_series(hu), tmp_path)
    paths[3].write_bytes(b"\x00" * 128 + b"DICM" + b"garbage" * 10)

    assert paths[3].name in refusal(paths)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    assert "not a readable DICOM file" in refusal([tmp_path / "absent.dcm"])


def test_truncated_pixel_data_is_refused() -> None:
    assert "cannot decode the pixel data" in refusal([shipped_file("MR_truncated.dcm")])


def test_mixed_matrix_sizes_are_refused(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu)
    other = make_ct_series(np.zeros((1, 8, 8)), series_uid=datasets[0].SeriesInstanceUID)[0]
    other.ImagePositionPatient = [0, 0, 100]

    reason = refusal(write_series([*datasets, other], tmp_path))

    assert "different matrix sizes" in reason
    assert "10x12 (6 instances)" in reason and "8x8 (1 instances)" in reason


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


def test_missing_pixel_spacing_is_refused_for_several_slices(
    tmp_path: Path, hu: np.ndarray
) -> None:
    datasets = make_ct_series(hu)
    for ds in datasets:
        del ds.PixelSpacing

    assert "no valid PixelSpacing" in refusal(write_series(datasets, tmp_path))


def test_instances_of_several_series_are_refused(tmp_path: Path, hu: np.ndarray) -> None:
    first = make_ct_series(hu[:3], series_description="one")
    second = make_ct_series(hu[3:], series_description="two", origin=(0, 0, 100))

    assert "2 different series" in refusal(write_series([*first, *second], tmp_path))


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


# Multi-frame (enhanced) objects --------------------------------------------------


def legacy_converted(
    hu: np.ndarray, spacing: tuple[float, float, float] = (2.5, 0.7, 0.8), **kwargs: object
) -> Dataset:
    """A Legacy Converted Enhanced CT Image of ``hu``, made by highdicom's converter."""
    datasets = make_ct_series(hu, spacing, **kwargs)  # type: ignore[arg-type]
    series_uid = str(datasets[0].SeriesInstanceUID)
    return hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets,
        series_instance_uid=series_uid,
        series_number=1,
        sop_instance_uid=derive_uid("tests.test_load", "enhanced", series_uid),
        instance_number=1,
    )


def reorder_frames(ds: Dataset, order: Sequence[int]) -> Dataset:
    """``ds`` with its frames (functional groups and pixels) in ``order`` (0-based)."""
    frames = ds.pixel_array
    ds.PerFrameFunctionalGroupsSequence = [ds.PerFrameFunctionalGroupsSequence[i] for i in order]
    ds.PixelData = np.ascontiguousarray(frames[list(order)]).tobytes()
    return ds


def frame_positions(ds: Dataset) -> np.ndarray:
    return np.array(
        [
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
            for item in ds.PerFrameFunctionalGroupsSequence
        ]
    )


def write(ds: Dataset, directory: Path, name: str = "enhanced.dcm") -> Path:
    path = directory / name
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def enhanced_ct() -> Dataset:
    hu = np.random.default_rng(11).integers(-1024, 1500, size=(6, 10, 12)).astype(np.float32)
    return legacy_converted(hu)


@pytest.fixture
def enhanced(enhanced_ct: Dataset) -> Dataset:
    return copy.deepcopy(enhanced_ct)


def test_enhanced_frames_load_in_slice_order_whatever_their_order_in_the_file(
    tmp_path: Path, hu: np.ndarray
) -> None:
    ds = reorder_frames(legacy_converted(hu, origin=(-10.0, 20.0, -30.0)), [3, 0, 5, 1, 4, 2])
    z = frame_positions(ds)[:, 2]
    expected_frames = [int(f) + 1 for f in np.argsort(z)]
    assert expected_frames != sorted(expected_frames)  # the file is out of order

    volume = load_series([write(ds, tmp_path)])

    np.testing.assert_array_equal(volume.voxels, hu)
    assert volume.frame_numbers == expected_frames
    assert len(volume.datasets) == 6
    assert all(item is volume.datasets[0] for item in volume.datasets)
    assert volume.datasets[0].SOPInstanceUID == ds.SOPInstanceUID
    assert "PixelData" not in volume.datasets[0]
    assert "PerFrameFunctionalGroupsSequence" in volume.datasets[0]
    assert volume.spacing == pytest.approx((2.5, 0.7, 0.8))
    np.testing.assert_allclose(volume.origin, (-10.0, 20.0, -30.0))
    np.testing.assert_allclose(volume.slice_direction, (0, 0, 1))


def test_a_frames_own_rescale_is_applied_to_that_frame(tmp_path: Path, enhanced: Dataset) -> None:
    reference = load_series([write(enhanced, tmp_path, "reference.dcm")])
    transformation = copy.deepcopy(
        enhanced.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence
    )
    transformation[0].RescaleIntercept = "-1000"
    enhanced.PerFrameFunctionalGroupsSequence[2].PixelValueTransformationSequence = transformation

    volume = load_series([write(enhanced, tmp_path)])

    (slice_of_frame_3,) = [i for i, f in enumerate(volume.frame_numbers or []) if f == 3]
    expected = reference.voxels.copy()
    expected[slice_of_frame_3] += 24
    np.testing.assert_array_equal(volume.voxels, expected)


def test_geometry_repeated_in_every_frame_instead_of_shared_loads_the_same(
    tmp_path: Path, enhanced: Dataset
) -> None:
    reference = load_series([write(enhanced, tmp_path, "reference.dcm")])
    shared = enhanced.SharedFunctionalGroupsSequence[0]
    for item in enhanced.PerFrameFunctionalGroupsSequence:
        item.PlaneOrientationSequence = copy.deepcopy(shared.PlaneOrientationSequence)
        item.PixelMeasuresSequence = copy.deepcopy(shared.PixelMeasuresSequence)
    del shared.PlaneOrientationSequence, shared.PixelMeasuresSequence

    volume = load_series([write(enhanced, tmp_path)])

    np.testing.assert_array_equal(volume.voxels, reference.voxels)
    assert volume.spacing == reference.spacing
    assert volume.frame_numbers == reference.frame_numbers


def test_real_enhanced_ct_loads_with_its_frames_sorted() -> None:
    path = shipped_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)

    volume = load_series([path])

    # Frame 2 lies at z = -149, frame 1 at -159; the normal of (-1,0,0)x(0,1,0) is -z.
    assert volume.frame_numbers == [2, 1]
    np.testing.assert_allclose(volume.slice_direction, (0, 0, -1))
    np.testing.assert_allclose(volume.origin, (99.5, -301.5, -149.0))
    assert volume.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    np.testing.assert_array_equal(volume.voxels, ds.pixel_array[[1, 0]].astype(np.float32) - 1024)


def test_several_stacks_in_one_object_are_refused(tmp_path: Path, enhanced: Dataset) -> None:
    for item in enhanced.PerFrameFunctionalGroupsSequence[:2]:
        item.FrameContentSequence[0].StackID = "2"

    reason = refusal([write(enhanced, tmp_path)])

    assert "holds 2 stacks of frames (Stack ID 1 (4 frames), 2 (2 frames))" in reason


def test_frames_at_the_same_position_are_refused_with_the_objects_dimensions(
    tmp_path: Path, enhanced: Dataset
) -> None:
    frames = enhanced.PerFrameFunctionalGroupsSequence
    frames[4].PlanePositionSequence = copy.deepcopy(frames[1].PlanePositionSequence)

    reason = refusal([write(enhanced, tmp_path)])

    assert "duplicate slice positions: frames" in reason
    assert "several echoes, phases, b-values or acquisitions" in reason
    assert "its frames vary over: Image Position Patient" in reason


def test_frames_of_different_orientations_are_refused(tmp_path: Path, enhanced: Dataset) -> None:
    shared = enhanced.SharedFunctionalGroupsSequence[0]
    for item in enhanced.PerFrameFunctionalGroupsSequence:
        item.PlaneOrientationSequence = copy.deepcopy(shared.PlaneOrientationSequence)
    del shared.PlaneOrientationSequence
    coronal = enhanced.PerFrameFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    coronal.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    reason = refusal([write(enhanced, tmp_path)])

    assert "the frames have different orientations" in reason
    assert "(1 frames)" in reason and "several stacks" in reason


def test_a_frame_without_position_is_refused(tmp_path: Path, enhanced: Dataset) -> None:
    del enhanced.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence

    reason = refusal([write(enhanced, tmp_path)])

    assert "1 of 6 frames lack ImagePositionPatient or ImageOrientationPatient" in reason
    assert "frame numbers 3" in reason


def test_frame_count_must_match_the_functional_groups(tmp_path: Path, enhanced: Dataset) -> None:
    enhanced.PerFrameFunctionalGroupsSequence = enhanced.PerFrameFunctionalGroupsSequence[:5]

    assert "declares 6 frames but describes 5" in refusal([write(enhanced, tmp_path)])


def test_missing_frame_pixels_are_refused(tmp_path: Path, enhanced: Dataset) -> None:
    enhanced.PixelData = enhanced.PixelData[: len(enhanced.PixelData) * 5 // 6]

    reason = refusal([write(enhanced, tmp_path)])

    assert "cannot decode frame" in reason or "holds pixel data for" in reason


def test_several_multi_frame_instances_in_one_series_are_refused(
    tmp_path: Path, enhanced: Dataset
) -> None:
    first = write(enhanced, tmp_path, "first.dcm")
    enhanced.SOPInstanceUID = derive_uid("tests.test_load", "second")
    second = write(enhanced, tmp_path, "second.dcm")

    reason = refusal([first, second])

    assert "2 instances of which 2 multi-frame" in reason
    assert "a single multi-frame instance" in reason


def test_classic_multi_frame_without_functional_groups_is_refused(
    tmp_path: Path, hu: np.ndarray
) -> None:
    ds = make_ct_series(hu[:1])[0]
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3

    reason = refusal(write_series([ds], tmp_path))

    assert "multi-frame image of 3 frames without Per-Frame Functional Groups" in reason
