"""The evidence rules of series completion, each kind on its own, and what they refuse:
a gap or a duplicate in the numbering, uneven or missing positions, a sender's rule; the
rules per sender as settings; the slice position read from a header."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from node.completion_evidence import HeaderEvidence, slice_position
from node.completion_rules import (
    InstanceLayout,
    SeriesEvidence,
    complete_by_evidence,
    evenly_spaced,
    numbered_from_one,
)
from node.completion_settings import CompletionRule
from node.settings import Settings

RELEASE = CompletionRule(kind="release")
QUIET = CompletionRule(kind="quiet")


def released_ct(count: int = 40) -> SeriesEvidence:
    """A single-frame series of ``count`` instances numbered 1..count, released."""
    return SeriesEvidence(
        instances=count,
        lowest_number=1,
        highest_number=count,
        frames=None,
        images_in_acquisition=None,
        temporal_positions=None,
        released=True,
        sender="CT1",
    )


def stack(count: int, step: float = 2.5, start: float = -100.0) -> InstanceLayout:
    return InstanceLayout(
        numbers=list(range(1, count + 1)),
        positions=[start + i * step for i in range(count)],
        temporal=[None] * count,
    )


def never_read() -> InstanceLayout:
    raise AssertionError("this rule needs no instance")


def test_release_after_numbers_one_to_n_evenly_spaced() -> None:
    reason = complete_by_evidence(released_ct(), None, lambda: stack(40))
    assert reason == (
        "CT1 released the association after Instance Numbers 1..40 without a gap, evenly spaced"
    )
    # Not released yet (the association is open, or was aborted): no evidence.
    unreleased = replace(released_ct(), released=False)
    assert complete_by_evidence(unreleased, None, never_read) is None


def test_a_gap_in_the_numbering_is_no_evidence() -> None:
    # The aggregates alone show it: 39 instances up to number 40.
    gap = replace(released_ct(39), highest_number=40)
    assert complete_by_evidence(gap, None, never_read) is None
    # A duplicate number hiding a gap: count and extremes agree, the numbers do not.
    layout = stack(40)
    layout = replace(layout, numbers=[*layout.numbers[:20], 20, *layout.numbers[21:]])
    assert complete_by_evidence(released_ct(), None, lambda: layout) is None
    assert not numbered_from_one([1, 2, 2, 4])
    assert not numbered_from_one([1, None, 3])
    assert numbered_from_one([3, 1, 2])


def test_uneven_or_partial_positions_are_no_evidence() -> None:
    missing_slice = stack(41)
    positions = [*missing_slice.positions[:20], *missing_slice.positions[21:]]
    layout = replace(stack(40), positions=positions)  # renumbered, but a slice is missing
    assert complete_by_evidence(released_ct(), None, lambda: layout) is None
    assert not evenly_spaced([0.0, 2.5, 5.0, 10.0])
    assert not evenly_spaced([0.0, 2.5, None])
    assert not evenly_spaced([0.0, 0.0, 2.5])  # two at one position, one at the next
    assert evenly_spaced([None, None])  # no geometry (projection images): nothing to judge
    assert evenly_spaced([0.0, 2.5, 5.004, 7.5])  # DS rounding is no gap
    assert evenly_spaced([5.0, 0.0, 5.0, 0.0])  # one position per temporal position


def test_a_single_multi_frame_instance() -> None:
    evidence = replace(released_ct(1), frames=120, released=False)
    assert complete_by_evidence(evidence, None, never_read) == (
        "a single multi-frame instance (120 frames)"
    )
    # Two multi-frame instances may be two of several: no evidence.
    assert complete_by_evidence(replace(evidence, instances=2), None, never_read) is None


def test_images_in_acquisition_reached() -> None:
    evidence = replace(released_ct(39), images_in_acquisition=40, released=False)
    assert complete_by_evidence(evidence, None, never_read) is None
    reached = replace(evidence, instances=40)
    assert complete_by_evidence(reached, None, never_read) == (
        "Images in Acquisition reached (40 of 40)"
    )


def test_number_of_temporal_positions_reached() -> None:
    # 4 temporal positions x 10 slices, not released, unnumbered.
    evidence = replace(released_ct(40), temporal_positions=4, released=False, lowest_number=None)
    whole = InstanceLayout(
        [None] * 40, [float(i % 10) for i in range(40)], [1 + i // 10 for i in range(40)]
    )
    assert complete_by_evidence(evidence, None, lambda: whole) == (
        "Number of Temporal Positions reached (4 x 10)"
    )
    # The first two temporal positions of a longer series: 20 instances, 2 of 4 positions.
    half = replace(evidence, instances=20)
    partial = InstanceLayout([None] * 20, [0.0] * 20, [1 + i // 10 for i in range(20)])
    assert complete_by_evidence(half, None, lambda: partial) is None
    # Every position, unevenly filled.
    uneven = InstanceLayout([None] * 40, [0.0] * 40, [1] * 13 + [2] * 7 + [3] * 10 + [4] * 10)
    assert complete_by_evidence(evidence, None, lambda: uneven) is None


def test_the_senders_rules() -> None:
    gap = replace(released_ct(39), highest_number=40)
    # release: the sender's associations carry whole series, gaps or not.
    assert complete_by_evidence(gap, RELEASE, never_read) == (
        "CT1 released the association (its rule: release)"
    )
    assert complete_by_evidence(replace(gap, released=False), RELEASE, never_read) is None
    # expected:N: that many instances, released or not.
    expected = CompletionRule.parse("expected:300")
    assert complete_by_evidence(replace(gap, instances=299, released=False), expected,
                                never_read) is None  # fmt: skip
    assert complete_by_evidence(replace(gap, instances=300, released=False), expected,
                                never_read) == (
        "300 instances, as expected from CT1 (its rule: expected:300)"
    )  # fmt: skip
    # quiet: nothing but the quiet period, whatever the data say.
    assert complete_by_evidence(released_ct(), QUIET, never_read) is None


def test_rules_as_settings() -> None:
    settings = Settings(completion_rules="ORTHANC=release, CT1=expected:300,*=quiet")
    assert settings.completion_rules == {
        "ORTHANC": RELEASE,
        "CT1": CompletionRule(kind="expected", count=300),
        "*": QUIET,
    }
    assert settings.completion_grace_seconds == 2.0
    # A config file's mapping, a JSON object, and the child's copy (as_config) agree.
    assert Settings(completion_rules={"ORTHANC": "release"}).completion_rules == {
        "ORTHANC": RELEASE
    }
    assert Settings(completion_rules='{"A,B": "quiet"}').completion_rules == {"A,B": QUIET}
    assert Settings.load(**settings.as_config()).completion_rules == settings.completion_rules
    for bad, why in [
        ("ORTHANC", "not AET=RULE"),
        ("ORTHANC=whenever", "not release, quiet or expected:N"),
        ("CT1=expected", "expected:N"),
        ("CT1=expected:0", "greater than or equal to 1"),
        ("WAY_TOO_LONG_AE_TITLE=release", "not an AE title"),
    ]:
        with pytest.raises(ValidationError, match=why):
            Settings(completion_rules=bad)


def header(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_slice_position_from_the_header() -> None:
    axial = header(ImagePositionPatient=["-100", "-120", "37.5"],
                   ImageOrientationPatient=["1", "0", "0", "0", "1", "0"])  # fmt: skip
    assert slice_position(axial) == pytest.approx(37.5)
    # A coronal slice: the normal, row x column, is +y.
    coronal = header(ImagePositionPatient=["0", "12", "0"],
                     ImageOrientationPatient=["1", "0", "0", "0", "0", "-1"])  # fmt: skip
    assert slice_position(coronal) == pytest.approx(12.0)
    assert slice_position(header(SliceLocation="-7.25")) == pytest.approx(-7.25)
    malformed = Dataset()  # as read from a file: converted only when asked for
    malformed[0x00200032] = RawDataElement(Tag(0x00200032), "DS", 6, b"x\\1\\2", 0, True, True)
    assert slice_position(malformed) is None
    assert slice_position(header()) is None
    evidence = HeaderEvidence.from_dataset(
        header(NumberOfFrames="12", ImagesInAcquisition="40", NumberOfTemporalPositions="4",
               TemporalPositionIdentifier="2", SliceLocation="5")
    )  # fmt: skip
    assert evidence == HeaderEvidence(12, 40, 4, 2, 5.0)
    assert evidence.instance_columns == {"slice_position": 5.0, "temporal_position": 2}
