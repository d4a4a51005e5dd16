"""The gate refuses a result stating a zero spacing (workers.encode.measures)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from pydicom import Dataset

from node.db.models import ResultKind
from tests.encoding import segmentation_manifest
from tests.factories import make_ct_series, write_series
from workers.encode.conformance import assert_conformant, check_segmentation
from workers.encode.identity import ResultUIDs
from workers.encode.seg import encode_segmentation
from workers.errors import EncodingError
from workers.load.series import load_series


@pytest.fixture(scope="module")
def seg(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    hu = np.full((4, 16, 16), -850.0)
    hu[1:3, 4:9, 4:9] = 40.0
    volume = load_series(write_series(make_ct_series(hu), tmp_path_factory.mktemp("ct")))
    labels = np.where(hu > 0, 3, 0).astype(np.uint8)
    manifest = segmentation_manifest(labels=(3,))
    uids = ResultUIDs.of_volume(volume, manifest)
    return encode_segmentation(volume, labels, manifest, uids.seg_series, uids.seg_instance)


def shared_measures(seg: Dataset) -> Dataset:
    return seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]


def test_the_encoders_segmentation_states_positive_spacings(seg: Dataset) -> None:
    assert [float(v) for v in shared_measures(seg).PixelSpacing] == [0.8, 0.8]
    assert check_segmentation(seg) == []


def test_a_zero_pixel_spacing_is_refused(seg: Dataset) -> None:
    damaged = copy.deepcopy(seg)
    shared_measures(damaged).PixelSpacing = [0, 0]

    with pytest.raises(EncodingError) as refused:
        assert_conformant(ResultKind.SEG, damaged)

    assert str(refused.value) == (
        "the SEG is not conformant (1 problems): SEG: PixelSpacing '0.0\\0.0' in the Pixel "
        "Measures of the shared functional groups is not positive (a spacing of zero "
        "measures nothing)"
    )


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("SliceThickness", 0, "SliceThickness '0.0'"),
        ("SpacingBetweenSlices", -2.5, "SpacingBetweenSlices '-2.5'"),
        ("PixelSpacing", [0.8], "PixelSpacing '0.8'"),
    ],
)
def test_other_unmeasured_spacings_are_refused(
    seg: Dataset, keyword: str, value: object, expected: str
) -> None:
    damaged = copy.deepcopy(seg)
    setattr(shared_measures(damaged), keyword, value)

    problems = check_segmentation(damaged)

    assert problems == [
        f"SEG: {expected} in the Pixel Measures of the shared functional groups is not "
        "positive (a spacing of zero measures nothing)"
    ]


def test_frames_placed_without_a_pixel_spacing_are_refused(seg: Dataset) -> None:
    damaged = copy.deepcopy(seg)
    del shared_measures(damaged).PixelSpacing

    assert check_segmentation(damaged) == [
        "SEG: frames are placed in the patient (plane position or orientation) without a "
        "Pixel Spacing in the Pixel Measures"
    ]


def test_a_per_frame_zero_spacing_is_named_by_its_frame(seg: Dataset) -> None:
    damaged = copy.deepcopy(seg)
    measures = copy.deepcopy(shared_measures(damaged))
    measures.PixelSpacing = ["0.0", "0.8"]
    damaged.PerFrameFunctionalGroupsSequence[1].PixelMeasuresSequence = [measures]

    assert check_segmentation(damaged) == [
        "SEG: PixelSpacing '0.0\\0.8' in the Pixel Measures of frame 2 is not positive "
        "(a spacing of zero measures nothing)"
    ]
