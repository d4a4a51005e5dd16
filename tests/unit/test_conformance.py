"""The node's own SEG and TID 1500 SR checks: its objects pass, each missing item is named."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from pydicom import Dataset

from node.db.models import ResultKind
from tests.encoding import classification_manifest, segmentation_manifest
from tests.factories import make_ct_series, write_series
from workers.encode.conformance import (
    assert_conformant,
    check_measurement_report,
    check_segmentation,
)
from workers.encode.identity import ResultUIDs
from workers.encode.seg import encode_segmentation
from workers.encode.sr import encode_report
from workers.errors import EncodingError
from workers.load.series import load_series
from workers.volume import ModelOutput


@dataclass
class Results:
    seg: Dataset
    sr: Dataset
    class_sr: Dataset


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    z, y, x = np.mgrid[:6, :32, :32]
    sphere = ((z - 3) * 2.5) ** 2 + ((y - 15) * 0.7) ** 2 + ((x - 17) * 0.7) ** 2 < 6.0**2
    paths = write_series(
        make_ct_series(np.where(sphere, 45.0, -850.0), (2.5, 0.7, 0.7), origin=(0, 0, 100.0)),
        tmp_path_factory.mktemp("ct"),
    )
    volume = load_series(paths)
    labels = np.where(sphere, 3, 0).astype(np.uint8)
    sources = [str(ds.SOPInstanceUID) for ds in volume.datasets]

    manifest = segmentation_manifest(labels=(3,))
    uids = ResultUIDs.of_job(sources, manifest.name, manifest.version)
    seg = encode_segmentation(volume, labels, manifest, uids.seg_series, uids.seg_instance)
    sr = encode_report(
        volume, manifest, ModelOutput(labels=labels), seg, uids.sr_series, uids.sr_instance
    )

    manifest = classification_manifest()
    uids = ResultUIDs.of_job(sources, manifest.name, manifest.version)
    class_sr = encode_report(
        volume,
        manifest,
        ModelOutput(probabilities={"mass": 0.8, "nodule": 0.1}),
        None,
        uids.sr_series,
        uids.sr_instance,
    )
    return Results(seg, sr, class_sr)


def concept(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeValue)


def remove(items: Dataset, code_value: str) -> None:
    """Remove the direct content items of ``items`` named ``code_value``; fail if none."""
    kept = [item for item in items.ContentSequence if concept(item) != code_value]
    assert len(kept) < len(items.ContentSequence), f"no {code_value} item to remove"
    items.ContentSequence = kept


def first_group(sr: Dataset) -> Dataset:
    measurements = next(item for item in sr.ContentSequence if concept(item) == "126010")
    return measurements.ContentSequence[0]


def test_the_nodes_own_objects_are_conformant(results: Results) -> None:
    assert check_segmentation(results.seg) == []
    assert check_measurement_report(results.sr) == []
    assert check_measurement_report(results.class_sr) == []
    assert_conformant(ResultKind.SEG, results.seg)
    assert_conformant(ResultKind.SR, results.sr)


def _drop_template(sr: Dataset) -> None:
    del sr.ContentTemplateSequence


def _drop_measured_value(sr: Dataset) -> None:
    probability = next(item for item in first_group(sr).ContentSequence if item.ValueType == "NUM")
    probability.MeasuredValueSequence = []


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda sr: remove(sr, "121049"), "Language of Content Item and Descendants (121049)"),
        (lambda sr: remove(sr, "121005"), "Observer Type (121005)"),
        (lambda sr: remove(sr, "121012"), "Device Observer UID (121012)"),
        (lambda sr: remove(sr, "121058"), "Procedure reported (121058)"),
        (lambda sr: remove(sr, "111028"), "Image Library (111028)"),
        (lambda sr: remove(first_group(sr), "112039"), "Tracking Identifier (112039)"),
        (lambda sr: remove(first_group(sr), "112040"), "Tracking Unique Identifier (112040)"),
        (_drop_template, "Template Identifier 1500"),
        (_drop_measured_value, "has no measured value"),
    ],
    ids=[
        "language",
        "observer-type",
        "device-observer-uid",
        "procedure-reported",
        "image-library",
        "tracking-identifier",
        "tracking-uid",
        "template-identifier",
        "measured-value",
    ],
)
def test_a_missing_mandatory_sr_item_is_named(
    results: Results, damage: Callable[[Dataset], None], expected: str
) -> None:
    sr = copy.deepcopy(results.class_sr)
    damage(sr)

    problems = check_measurement_report(sr)

    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert problems[0].startswith("TID ")


def test_a_segment_group_without_tracking_uid_is_named(results: Results) -> None:
    sr = copy.deepcopy(results.sr)
    remove(first_group(sr), "112040")

    assert check_measurement_report(sr) == [
        "TID 1501/1411: Measurement Group (125007) 1 lacks Tracking Unique Identifier (112040)"
    ]


def test_a_segment_without_property_type_is_caught(results: Results) -> None:
    seg = copy.deepcopy(results.seg)
    del seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence

    assert check_segmentation(seg) == ["SEG: segment 1 lacks SegmentedPropertyTypeCodeSequence"]


def test_a_frame_of_an_undeclared_segment_is_caught(results: Results) -> None:
    seg = copy.deepcopy(results.seg)
    # A single-segment SEG identifies the segment once, in the shared groups.
    shared = seg.SharedFunctionalGroupsSequence[0]
    shared.SegmentIdentificationSequence[0].ReferencedSegmentNumber = 9

    problems = check_segmentation(seg)

    assert len(problems) == seg.NumberOfFrames > 0
    assert problems[0] == "SEG: frame 1 refers to undeclared segment 9"


def test_the_gate_raises_with_every_problem(results: Results) -> None:
    sr = copy.deepcopy(results.sr)
    remove(sr, "121049")
    remove(sr, "111028")

    with pytest.raises(EncodingError, match=r"2 problems.*121049.*111028"):
        assert_conformant(ResultKind.SR, sr)
