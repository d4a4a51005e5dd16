"""The Secondary Capture overlay: one valid, reproducible picture per segmented slice."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from models.manifest import ModelManifest
from tests.dicom_checks import dciodvfy_errors
from tests.factories import LESION, MASS, fake_manifest, make_ct_series, write_series
from workers.encode.conformance import check_overlay
from workers.encode.identity import sc_image_uid
from workers.encode.overlay import segment_colour
from workers.encode.sc import encode_overlay
from workers.errors import EncodingError
from workers.load.series import load_series
from workers.pipeline import summarise
from workers.volume import ModelOutput, Volume

SERIES_UID = "1.2.826.0.1.3680043.8.498.1"
INSTANCE_UID = "1.2.826.0.1.3680043.8.498.2"
INSIDE = (3, 15, 17)  # (slice, row, column) at the sphere's centre
OUTSIDE = (3, 2, 2)


def segmentation_manifest() -> ModelManifest:
    return fake_manifest(
        "test-sphere-seg",
        "segmentation",
        version="1.2.0",
        title="Test sphere segmenter",
        segments=[{"label": 3, "name": "Sphere lesion", "category": LESION, "type": MASS}],
    )


def classification_manifest() -> ModelManifest:
    return fake_manifest(
        "test-classifier",
        "classification",
        version="0.3",
        title="Test finding classifier",
        classes=[{"name": "mass", "finding": MASS, "threshold": 0.5}],
    )


@dataclass
class Case:
    volume: Volume
    labels: np.ndarray
    manifest: ModelManifest
    findings: dict

    def encode(self, **options: int) -> list:
        return encode_overlay(
            self.volume,
            self.labels,
            self.manifest,
            self.findings,
            SERIES_UID,
            INSTANCE_UID,
            **options,
        )


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Case:
    # Eight slices of which the sphere (radius 6 mm, slices 2.5 mm apart) fills five.
    z, y, x = np.mgrid[:8, :32, :32]
    sphere = ((z - 3) * 2.5) ** 2 + ((y - 15) * 0.7) ** 2 + ((x - 17) * 0.7) ** 2 < 6.0**2
    paths = write_series(
        make_ct_series(np.where(sphere, 45.0, -850.0), (2.5, 0.7, 0.7), series_number=4),
        tmp_path_factory.mktemp("ct"),
    )
    volume = load_series(paths)
    labels = np.where(sphere, 3, 0).astype(np.uint8)
    manifest = segmentation_manifest()
    findings = summarise(manifest, volume, ModelOutput(labels=labels))
    return Case(volume, labels, manifest, findings)


def pixel(image: Dataset, volume: Volume, row: int, column: int) -> np.ndarray:
    """The RGB value the overlay shows for voxel (row, column) of its slice."""
    factor = image.Columns // volume.shape[2]
    band = image.Rows - factor * volume.shape[1]
    return image.pixel_array[band + row * factor + factor // 2, column * factor + factor // 2]


def text_band(image: Dataset, volume: Volume) -> np.ndarray:
    factor = image.Columns // volume.shape[2]
    return image.pixel_array[: image.Rows - factor * volume.shape[1]]


def referenced_uid(image: Dataset) -> str:
    return str(image.SourceImageSequence[0].ReferencedSOPInstanceUID)


def test_one_image_per_slice_with_a_segment_in_slice_order(case: Case) -> None:
    images = case.encode()

    segmented = [i for i in range(case.volume.shape[0]) if case.labels[i].any()]
    assert len(segmented) == 5
    assert len(images) == len(segmented)
    assert [referenced_uid(im) for im in images] == [
        str(case.volume.datasets[i].SOPInstanceUID) for i in segmented
    ]
    assert [im.InstanceNumber for im in images] == [1, 2, 3, 4, 5]


def test_every_image_is_a_valid_secondary_capture_in_the_source_study(
    case: Case, tmp_path: Path
) -> None:
    source = case.volume.datasets[0]
    for number, image in enumerate(case.encode()):
        path = tmp_path / f"{number}.dcm"
        image.save_as(path, enforce_file_format=True)

        assert dciodvfy_errors(path) == []
        written = dcmread(path)
        assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert written.SOPClassUID == SecondaryCaptureImageStorage
        assert written.StudyInstanceUID == source.StudyInstanceUID
        assert written.PatientID == source.PatientID
        assert written.SeriesInstanceUID == SERIES_UID
        assert written.SeriesNumber == 3004
        assert written.SeriesDescription == "Test sphere segmenter overlay (AI)"
        assert list(written.ImageType) == ["DERIVED", "SECONDARY"]
        assert written.ConversionType == "WSD"
        assert written.BurnedInAnnotation == "YES"
        assert written.PhotometricInterpretation == "RGB"
        assert "InstanceCreationDate" not in written
        assert "DateOfSecondaryCapture" not in written


def test_uids_are_derived_from_the_base_and_the_slice(case: Case) -> None:
    first, second = case.encode(), case.encode()

    uids = [str(im.SOPInstanceUID) for im in first]
    assert uids == [str(im.SOPInstanceUID) for im in second]
    assert len(set(uids)) == len(uids)
    assert uids[0] == sc_image_uid(INSTANCE_UID, 1)  # the sphere starts at slice 1
    assert [im.PixelData for im in first] == [im.PixelData for im in second]


def test_segment_voxels_are_coloured_and_the_rest_grey(case: Case) -> None:
    image = next(im for im in case.encode() if referenced_uid(im) == _uid(case, INSIDE[0]))

    red, green, blue = (int(v) for v in pixel(image, case.volume, *INSIDE[1:]))
    assert red > green and red > blue  # the first segment's colour, a red, over grey
    outside = pixel(image, case.volume, *OUTSIDE[1:])
    assert outside[0] == outside[1] == outside[2]


def test_the_text_band_holds_the_findings(case: Case) -> None:
    image = case.encode()[0]

    band = text_band(image, case.volume)
    assert band.shape[0] > 30  # several lines of text
    assert (band > 0).any()
    yellow = (band[..., 0] > 200) & (band[..., 1] > 200) & (band[..., 2] < 100)
    assert yellow.any()  # the not-for-diagnosis notice
    swatch = (band == segment_colour(1)).all(axis=-1)
    assert swatch.any()  # the segment's colour key beside its volume


def test_a_ct_without_window_is_shown_in_a_soft_tissue_window(case: Case) -> None:
    image = case.encode()[2]

    assert int(pixel(image, case.volume, *OUTSIDE[1:])[0]) == 0  # -850 HU is below it


def test_the_source_window_is_used_when_it_has_one(case: Case) -> None:
    volume = copy.copy(case.volume)
    volume.datasets = [copy.deepcopy(ds) for ds in case.volume.datasets]
    for ds in volume.datasets:
        ds.WindowCenter, ds.WindowWidth = -600, 1500  # a lung window
    windowed = Case(volume, case.labels, case.manifest, case.findings).encode()[2]

    grey = int(pixel(windowed, volume, *OUTSIDE[1:])[0])
    assert 70 < grey < 100  # (-850 + 600) / 1500 + 0.5 of 255


def test_more_segmented_slices_than_the_cap_are_chosen_evenly(case: Case) -> None:
    images = case.encode(max_images=3)

    chosen = [referenced_uid(im) for im in images]
    assert chosen == [_uid(case, 1), _uid(case, 3), _uid(case, 5)]


def test_a_classification_gives_one_image_of_the_middle_slice(case: Case) -> None:
    manifest = classification_manifest()
    output = ModelOutput(probabilities={"mass": 0.93})
    findings = summarise(manifest, case.volume, output)

    images = encode_overlay(case.volume, None, manifest, findings, SERIES_UID, INSTANCE_UID)

    assert len(images) == 1
    assert referenced_uid(images[0]) == _uid(case, case.volume.shape[0] // 2)
    assert check_overlay(images[0], case.volume.datasets) == []
    band = text_band(images[0], case.volume)
    assert (band > 0).any()
    middle = pixel(images[0], case.volume, *INSIDE[1:])
    assert middle[0] == middle[1] == middle[2]  # nothing is coloured


def many_segments(count: int) -> ModelManifest:
    segments = [
        {"label": n, "name": f"Organ {n}", "category": LESION, "type": MASS}
        for n in range(1, count + 1)
    ]
    return fake_manifest(
        "test-many-organs", "segmentation", version="1", title="Many organs", segments=segments
    )


def test_many_segments_list_those_on_the_slice_and_count_the_rest(case: Case) -> None:
    labels = np.where(case.labels > 0, 24, 0).astype(np.uint8)

    def band(count: int) -> np.ndarray:
        manifest = many_segments(count)
        findings = summarise(manifest, case.volume, ModelOutput(labels=labels % (count + 1)))
        images = encode_overlay(
            case.volume, labels % (count + 1), manifest, findings, SERIES_UID, INSTANCE_UID
        )
        return text_band(images[0], case.volume)

    twelve, thirty = band(12), band(30)

    assert thirty.shape == twelve.shape  # eleven findings and a line counting the rest
    # Listed: segment 24 (on the slice), then 1 to 10. Colours repeat every twelve
    # segments: 24's is 12's, which is not listed, and 11's is missing.
    assert (thirty == segment_colour(24)).all(axis=-1).any()
    assert not (thirty == segment_colour(11)).all(axis=-1).any()


def test_undeclared_label_values_are_refused(case: Case) -> None:
    labels = case.labels.copy()
    labels[0, 0, 0] = 7

    with pytest.raises(EncodingError, match=r"\[7\]"):
        encode_overlay(case.volume, labels, case.manifest, case.findings, SERIES_UID, INSTANCE_UID)


def test_findings_missing_a_segment_are_refused(case: Case) -> None:
    with pytest.raises(EncodingError, match="Sphere lesion"):
        encode_overlay(
            case.volume, case.labels, case.manifest, {"segments": {}}, SERIES_UID, INSTANCE_UID
        )


def test_the_nodes_own_overlays_pass_its_checks(case: Case) -> None:
    for image in case.encode():
        assert check_overlay(image) == []
        assert check_overlay(image, case.volume.datasets) == []


def _drop_source_reference(image: Dataset) -> None:
    del image.SourceImageSequence


def _other_study(image: Dataset) -> None:
    image.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.99"


def _not_burned_in(image: Dataset) -> None:
    image.BurnedInAnnotation = "NO"


def _greyscale(image: Dataset) -> None:
    image.PhotometricInterpretation = "MONOCHROME2"


def _other_sop_class(image: Dataset) -> None:
    image.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_drop_source_reference, "SourceImageSequence is empty"),
        (_other_study, "StudyInstanceUID"),
        (_not_burned_in, "Burned In Annotation"),
        (_greyscale, "not RGB"),
        (_other_sop_class, "not SC"),
    ],
    ids=["no-source-reference", "other-study", "not-burned-in", "greyscale", "sop-class"],
)
def test_check_overlay_names_each_problem(
    case: Case, damage: Callable[[Dataset], None], expected: str
) -> None:
    image = copy.deepcopy(case.encode()[0])
    damage(image)

    problems = check_overlay(image, case.volume.datasets)

    assert len(problems) == 1, problems
    assert expected in problems[0]
    assert problems[0].startswith("SC overlay: ")


def test_a_reference_to_an_image_outside_the_source_is_caught(case: Case) -> None:
    image = copy.deepcopy(case.encode()[0])
    image.SourceImageSequence[0].ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.7"

    assert check_overlay(image) == []  # without the sources, nothing to compare with
    assert check_overlay(image, case.volume.datasets) == [
        "SC overlay: source image 1.2.826.0.1.3680043.8.498.7 is not one of the source images"
    ]


def _uid(case: Case, index: int) -> str:
    return str(case.volume.datasets[index].SOPInstanceUID)
