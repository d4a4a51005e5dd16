"""FRACTIONAL (probability) SEG: the manifest asks, inference provides, the encoder writes.

Synthetic CT series and probability maps with known values go through
``encode_segmentation``; the SEG is read back through bytes with highdicom and
validated with dciodvfy. A package copied from the shipped segmentation model and
switched to fractional goes through ``analyze``.
"""

from __future__ import annotations

import copy
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
import yaml
from pydicom import Dataset

from models.manifest import ManifestError, ModelManifest, SegmentationType
from models.registry import open_package, shipped_packages_dir
from node.db.models import ResultKind
from node.uids import derive_uid
from tests.dicom_checks import dciodvfy_errors
from tests.factories import (
    ANATOMY,
    LESION,
    LUNG,
    MASS,
    fake_manifest,
    make_ct_series,
    write_series,
)
from tests.model_packages import CPU
from training.phantom import make_phantom
from workers.encode.conformance import assert_conformant, check_segmentation
from workers.encode.identity import ResultUIDs, segment_tracking_uid
from workers.encode.seg import encode_segmentation
from workers.errors import EncodingError
from workers.infer import NetworkCache
from workers.load.series import load_series
from workers.pipeline import analyze, run_model
from workers.volume import Volume

STEP = 1 / 255
SEGMENTER = "ct-lung-nodule-seg"


def manifest_of(segmentation_type: str | None = "fractional", segments: int = 2) -> ModelManifest:
    """Label 3: a lesion; label 7: lung (the probability map leaves it empty)."""
    specs = [
        {"label": 3, "name": "Sphere lesion", "category": LESION, "type": MASS},
        {"label": 7, "name": "Lung", "category": ANATOMY, "type": LUNG},
    ][:segments]
    return fake_manifest(
        "test-fractional",
        "segmentation",
        title="Test fractional segmenter",
        segments=specs,
        segmentation_type=segmentation_type,
    )


@dataclass
class Series:
    volume: Volume
    probabilities: np.ndarray  # (segments, slices, rows, columns) float32


def sphere_probabilities(shape: tuple[int, int, int]) -> np.ndarray:
    """Segment 1: a soft sphere (1 at its centre, falling to 0) on a few slices;
    segment 2: no probability anywhere."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    distance = np.sqrt(((z - 4) * 2.5) ** 2 + ((y - 14) * 0.7) ** 2 + ((x - 12) * 0.7) ** 2)
    probabilities = np.zeros((2, *shape), dtype=np.float32)
    probabilities[0] = np.clip(1.2 - distance / 6.0, 0.0, 1.0)
    return probabilities


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    shape = (10, 28, 24)
    probabilities = sphere_probabilities(shape)
    hu = np.where(probabilities[0] > 0.5, 40.0, -850.0)
    paths = write_series(
        make_ct_series(hu, (2.5, 0.7, 0.7), origin=(-8.0, -9.8, 50.0)),
        tmp_path_factory.mktemp("ct"),
    )
    return Series(load_series(paths), probabilities)


def encode(series: Series, manifest: ModelManifest | None = None, **kwargs: object) -> Dataset:
    manifest = manifest or manifest_of()
    uids = ResultUIDs.of_volume(series.volume, manifest)
    arguments: dict[str, object] = {"segment_probabilities": series.probabilities, **kwargs}
    return encode_segmentation(
        series.volume,
        np.zeros(series.volume.shape, dtype=np.uint8),
        manifest,
        uids.seg_series,
        uids.seg_instance,
        **arguments,  # type: ignore[arg-type]
    )


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_back(ds: Dataset) -> hd.seg.Segmentation:
    return hd.seg.segread(io.BytesIO(to_bytes(ds)))


def stored_probabilities(seg: hd.seg.Segmentation, volume: Volume) -> np.ndarray:
    """(segments, slices, rows, columns) probabilities of a SEG, by source image."""
    pixels = seg.get_pixels_by_source_instance(
        [str(ds.SOPInstanceUID) for ds in volume.datasets], rescale_fractional=True
    )
    return np.moveaxis(pixels, -1, 0)


# Manifest -----------------------------------------------------------------------


def test_segmentation_type_defaults_to_binary_and_parses_fractional() -> None:
    assert manifest_of(None).outputs.segmentation_type is SegmentationType.BINARY
    assert manifest_of("binary").outputs.segmentation_type is SegmentationType.BINARY
    assert manifest_of("fractional").outputs.segmentation_type is SegmentationType.FRACTIONAL


def test_unknown_segmentation_type_is_refused_with_the_rule(tmp_path: Path) -> None:
    data = manifest_of().model_dump(mode="json")
    data["outputs"]["segmentation_type"] = "labelmap"
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(data))

    with pytest.raises(ManifestError, match="outputs.segmentation_type"):
        ModelManifest.from_file(tmp_path / "model.yaml")


def test_fractional_without_segments_is_refused() -> None:
    with pytest.raises(ValueError, match="fractional needs segments"):
        fake_manifest(
            "classifier",
            "classification",
            version="1",
            title="Classifier",
            accepts={},
            classes=[{"name": "mass", "finding": MASS}],
            segmentation_type="fractional",
        )


# Encoding -----------------------------------------------------------------------


def test_fractional_seg_is_probability_with_255_as_one(series: Series) -> None:
    seg = encode(series)

    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.SegmentationFractionalType == "PROBABILITY"
    assert seg.MaximumFractionalValue == 255
    assert seg.BitsAllocated == 8
    assert seg.SegmentsOverlap == "UNDEFINED"
    assert check_segmentation(seg) == []
    assert_conformant(ResultKind.SEG, seg)


def test_stored_probabilities_round_trip_within_one_step(series: Series) -> None:
    stored = stored_probabilities(read_back(encode(series)), series.volume)

    assert stored.shape == series.probabilities.shape
    # Rounded to the nearest 1/255: half a step at most.
    assert np.abs(stored - series.probabilities).max() <= STEP / 2 + 1e-6
    assert stored[0].max() == 1.0


def test_fractional_seg_passes_dciodvfy(series: Series, tmp_path: Path) -> None:
    path = tmp_path / "seg.dcm"
    encode(series).save_as(path, enforce_file_format=True)

    assert dciodvfy_errors(path) == []


def test_segments_keep_their_codes_algorithm_and_tracking_uids(series: Series) -> None:
    seg = encode(series)
    binary = encode(series, manifest_of("binary"), segment_probabilities=None)

    for fractional_item, binary_item in zip(
        seg.SegmentSequence, binary.SegmentSequence, strict=True
    ):
        for keyword in (
            "SegmentLabel",
            "SegmentedPropertyCategoryCodeSequence",
            "SegmentedPropertyTypeCodeSequence",
            "SegmentAlgorithmType",
            "SegmentAlgorithmName",
            "SegmentationAlgorithmIdentificationSequence",
            "TrackingID",
            "TrackingUID",
        ):
            assert fractional_item[keyword].value == binary_item[keyword].value, keyword
    assert seg.SegmentSequence[0].TrackingUID == segment_tracking_uid(seg.SOPInstanceUID, 1)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == (
        series.volume.datasets[0].SeriesInstanceUID
    )


def test_same_inputs_give_identical_bytes(series: Series) -> None:
    assert to_bytes(encode(series)) == to_bytes(encode(series))


def test_empty_frames_are_left_out_but_every_segment_stays_declared(series: Series) -> None:
    seg = encode(series)
    sources = {str(ds.SOPInstanceUID): i for i, ds in enumerate(series.volume.datasets)}
    quantised = np.rint(series.probabilities * 255)

    frames = []
    for groups in seg.PerFrameFunctionalGroupsSequence:
        segment = int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = groups.DerivationImageSequence[0].SourceImageSequence[0]
        frames.append((segment, sources[str(source.ReferencedSOPInstanceUID)]))

    expected = [(1, z) for z in range(series.volume.shape[0]) if quantised[0, z].any()]
    assert sorted(frames) == expected
    assert 0 < len(expected) < series.volume.shape[0]
    assert [int(item.SegmentNumber) for item in seg.SegmentSequence] == [1, 2]


def test_without_any_probability_every_frame_is_kept(series: Series) -> None:
    # Below half a step: stored as 0, so the SEG holds no voxel at all.
    faint = Series(series.volume, np.full_like(series.probabilities, STEP / 3))

    seg = encode(faint)

    assert seg.NumberOfFrames == 2 * series.volume.shape[0]
    assert not np.frombuffer(seg.PixelData, dtype=np.uint8).any()
    assert check_segmentation(seg) == []


def test_a_single_segment_does_not_overlap(series: Series) -> None:
    single = Series(series.volume, series.probabilities[:1])

    seg = encode(single, manifest_of(segments=1))

    assert seg.SegmentsOverlap == "NO"
    stored = stored_probabilities(read_back(seg), series.volume)
    assert np.abs(stored - single.probabilities).max() <= STEP / 2 + 1e-6


def test_single_image_without_geometry_gets_a_valid_fractional_seg(tmp_path: Path) -> None:
    ds = make_ct_series(np.zeros((1, 8, 8)), series_description="no geometry")[0]
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    volume = load_series(write_series([ds], tmp_path / "ct"))
    probabilities = np.zeros((2, *volume.shape), dtype=np.float32)
    probabilities[0, 0, 2:5, 3:6] = 0.6

    seg = encode(Series(volume, probabilities))
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)

    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert seg.NumberOfFrames == 1
    np.testing.assert_array_equal(
        seg.pixel_array.reshape(8, 8), np.rint(probabilities[0, 0] * 255).astype(np.uint8)
    )


def enhanced_ct(directory: Path, order: list[int]) -> Path:
    """A Legacy Converted Enhanced CT of 8 slices, its frames stored in ``order``."""
    datasets = make_ct_series(np.full((8, 20, 16), -800.0), (2.0, 0.8, 0.8))
    series_uid = str(datasets[0].SeriesInstanceUID)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets,
        series_instance_uid=series_uid,
        series_number=2,
        sop_instance_uid=derive_uid("tests.test_seg_fractional", "enhanced", series_uid),
        instance_number=1,
    )
    frames = enhanced.pixel_array
    enhanced.PerFrameFunctionalGroupsSequence = [
        enhanced.PerFrameFunctionalGroupsSequence[i] for i in order
    ]
    enhanced.PixelData = np.ascontiguousarray(frames[order]).tobytes()
    path = directory / "enhanced.dcm"
    enhanced.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("kept", [slice(0, 8), slice(2, 7)], ids=["all-frames", "some-frames"])
def test_multi_frame_source_frames_get_their_own_probabilities(tmp_path: Path, kept: slice) -> None:
    full = load_series([enhanced_ct(tmp_path, [5, 2, 7, 0, 3, 6, 1, 4])])
    volume = copy.copy(full)
    volume.voxels = full.voxels[kept]
    volume.datasets = full.datasets[kept]
    volume.frame_numbers = (full.frame_numbers or [])[kept]
    volume.origin = full.origin + kept.start * full.spacing[0] * full.slice_direction
    rng = np.random.default_rng(4)
    probabilities = rng.integers(0, 256, (2, *volume.shape)).astype(np.float32) / 255
    probabilities[1, 1] = 0.0  # one empty frame

    seg = encode(Series(volume, probabilities))
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)

    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert seg.NumberOfFrames == 2 * volume.shape[0] - 1
    stored = hd.seg.segread(tmp_path / "seg.dcm").get_pixels_by_source_frame(
        str(volume.datasets[0].SOPInstanceUID),
        source_frame_numbers=volume.frame_numbers,
        rescale_fractional=True,
    )
    np.testing.assert_allclose(np.moveaxis(stored, -1, 0), probabilities, atol=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: None, "gave no segment probabilities"),
        (lambda p: p[:1], r"shape \(1, 10, 28, 24\)"),
        (lambda p: (p * 255).astype(np.uint8), "must be floats"),
        (lambda p: p + 0.5, "outside 0..1"),
        (lambda p: np.where(p > 0.5, np.nan, p).astype(np.float32), "outside 0..1"),
    ],
    ids=["missing", "shape", "integers", "above-one", "nan"],
)
def test_unusable_probabilities_are_refused(
    series: Series, change: Callable[[np.ndarray], np.ndarray | None], message: str
) -> None:
    with pytest.raises(EncodingError, match=message):
        encode(series, segment_probabilities=change(series.probabilities))


# Conformance --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda seg: delattr(seg, "SegmentationFractionalType"), "Segmentation Fractional Type"),
        (lambda seg: delattr(seg, "MaximumFractionalValue"), "Maximum Fractional Value None"),
        (lambda seg: setattr(seg, "MaximumFractionalValue", 100), "stores 255, above"),
        (lambda seg: setattr(seg, "BitsAllocated", 1), "Bits Allocated 1, not 8"),
        (lambda seg: setattr(seg, "SegmentationType", "LABELMAP"), "not BINARY or FRACTIONAL"),
    ],
    ids=["fractional-type", "maximum", "value-above-maximum", "bits", "labelmap"],
)
def test_a_broken_fractional_seg_is_named(
    series: Series, damage: Callable[[Dataset], None], expected: str
) -> None:
    seg = encode(series)
    damage(seg)

    problems = check_segmentation(seg)

    assert len(problems) == 1, problems
    assert expected in problems[0]
    with pytest.raises(EncodingError, match="not conformant"):
        assert_conformant(ResultKind.SEG, seg)


def test_a_binary_seg_with_fractional_attributes_is_named(series: Series) -> None:
    seg = encode(series, manifest_of("binary"), segment_probabilities=None)
    assert check_segmentation(seg) == []
    seg.MaximumFractionalValue = 255

    assert check_segmentation(seg) == ["SEG: BINARY has MaximumFractionalValue (FRACTIONAL only)"]


# Inference and the pipeline -------------------------------------------------------


def fractional_copy_of_the_shipped_segmenter(directory: Path) -> Path:
    """The shipped lung and nodule package, its manifest switched to fractional."""
    folder = directory / SEGMENTER
    shutil.copytree(shipped_packages_dir() / SEGMENTER, folder)
    manifest = yaml.safe_load((folder / "model.yaml").read_text())
    manifest["outputs"]["segmentation_type"] = "fractional"
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def phantom_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    phantom = make_phantom(np.random.default_rng(8), (8, 96, 96), (3.0, 3.5, 3.5), lesions=2)
    return write_series(
        make_ct_series(phantom.hu, phantom.spacing), tmp_path_factory.mktemp("phantom")
    )


def test_probabilities_are_computed_only_for_a_fractional_model(
    phantom_paths: list[Path], tmp_path: Path
) -> None:
    volume = load_series(phantom_paths)
    cache = NetworkCache()
    binary = open_package(shipped_packages_dir() / SEGMENTER)
    fractional = open_package(fractional_copy_of_the_shipped_segmenter(tmp_path))

    plain = run_model(binary, volume, CPU, cache)
    output = run_model(fractional, volume, CPU, cache)

    assert plain.segment_probabilities is None
    probabilities = output.segment_probabilities
    assert probabilities is not None
    assert probabilities.dtype == np.float32 and probabilities.shape == (2, *volume.shape)
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    # The labels are the most probable channel, background being 1 - the sum.
    channels = np.concatenate([1.0 - probabilities.sum(axis=0, keepdims=True), probabilities])
    lookup = np.array([0] + [s.label for s in fractional.manifest.outputs.segments])
    decided = np.abs(np.sort(channels, axis=0)[-1] - np.sort(channels, axis=0)[-2]) > 1e-4
    np.testing.assert_array_equal(output.labels[decided], lookup[channels.argmax(axis=0)][decided])
    np.testing.assert_array_equal(output.labels, plain.labels)
    assert (output.labels == 1).any()


def test_a_fractional_package_gets_a_fractional_seg_from_analyze(
    phantom_paths: list[Path], tmp_path: Path
) -> None:
    package = open_package(fractional_copy_of_the_shipped_segmenter(tmp_path))
    assert package.manifest.outputs.segmentation_type is SegmentationType.FRACTIONAL

    analysis = analyze(phantom_paths, package, CPU, NetworkCache())

    assert [kind for kind, _ in analysis.objects] == [ResultKind.SEG, ResultKind.SR]
    seg = analysis.objects[0][1]
    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.SegmentationFractionalType == "PROBABILITY"
    assert analysis.findings["segments"]["Lung"]["voxels"] > 0
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    volume = load_series(phantom_paths)
    stored = stored_probabilities(hd.seg.segread(path), volume)
    expected = run_model(package, volume, CPU, NetworkCache()).segment_probabilities
    assert expected is not None
    assert np.abs(stored - expected).max() <= STEP / 2 + 1e-6
