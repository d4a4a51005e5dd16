"""workers.load.multiframe: enhanced and legacy converted multi-frame objects as one stack."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from node.uids import derive_uid
from tests.factories import make_ct_series, write_series
from tests.series_loading import refusal, shipped_file
from workers.load.series import load_series


@pytest.fixture
def hu() -> np.ndarray:
    return np.random.default_rng(7).integers(-1024, 1500, size=(6, 10, 12)).astype(np.float32)


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

    assert "holds 1200 bytes of pixel data where its header declares 6 frame(s)" in reason


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


def test_enhanced_object_stripped_of_its_functional_groups_is_refused() -> None:
    reason = refusal([shipped_file("emri_small.dcm")])

    assert "emri_small.dcm (Enhanced MR Image Storage)" in reason
    assert "multi-frame image of 10 frames without Per-Frame Functional Groups" in reason
