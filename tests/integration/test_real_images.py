"""Real images as a PACS sends them: load, analyse with the shipped models, validate.

Every file below ships offline with pydicom or pydicom-data (a missing one fails the
test, it is never skipped). Each either loads into a sane ``Volume`` whose values
match pydicom's own Modality LUT, or is refused with a reason. Every one that loads
then goes through the whole pipeline with the shipped classifier (non-CT images
included: routing would not send them to a CT model, but the pipeline must still
behave), CT through the shipped segmentation model too, and the SEG and SR written
are checked by dciodvfy. Enhanced multi-frame sources get a round trip: each SEG
frame must reference the source frame it was computed on and match its labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from pydicom import Dataset, uid
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from models.registry import ModelPackage, discover_packages
from node.uids import derive_uid
from tests.dicom_checks import dciodvfy_errors
from tests.factories import make_ct_series
from training.phantom import make_phantom
from workers.encode.seg import encode_segmentation
from workers.errors import EncodingError, SeriesNotAnalysable
from workers.infer import NetworkCache
from workers.load.series import load_series
from workers.pipeline import Analysis, analyze, run_model
from workers.pixels import inversion_pivot
from workers.volume import Volume

CLASSIFIER = "ct-nodule-classifier"
SEGMENTER = "ct-lung-nodule-seg"
CPU = torch.device("cpu")


def shipped_file(name: str) -> Path:
    """A file shipped offline by pydicom or pydicom-data; fails if it is not on disk."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"test file {name} is not installed"
    return Path(path)


@dataclass(frozen=True)
class Loads:
    """A file expected to load: what it is, and its lossless twin when it is compressed."""

    kind: str
    same_values_as: str | None = None
    lossy: bool = False


# What loads, by kind; CT and enhanced CT also go through the segmentation model.
LOADS = {
    "CT_small.dcm": Loads("CT"),
    "693_UNCI.dcm": Loads("CT"),
    "693_J2KI.dcm": Loads("CT", same_values_as="693_UNCI.dcm", lossy=True),
    "693_J2KR.dcm": Loads("CT", same_values_as="693_UNCR.dcm"),
    "J2K_pixelrep_mismatch.dcm": Loads("CT"),
    "eCT_Supplemental.dcm": Loads("enhanced CT"),
    "RG1_UNCI.dcm": Loads("CR MONOCHROME1"),
    "RG1_J2KI.dcm": Loads("CR MONOCHROME1", same_values_as="RG1_UNCI.dcm", lossy=True),
    "RG3_J2KR.dcm": Loads("CR MONOCHROME1", same_values_as="RG3_UNCR.dcm"),
    "MR_small.dcm": Loads("MR"),
    "MR_small_RLE.dcm": Loads("MR", same_values_as="MR_small.dcm"),
    "MR_small_jpeg_ls_lossless.dcm": Loads("MR", same_values_as="MR_small.dcm"),
    "MR_small_jp2klossless.dcm": Loads("MR", same_values_as="MR_small.dcm"),
    "MR_small_bigendian.dcm": Loads("MR", same_values_as="MR_small.dcm"),
    "MR_small_expb.dcm": Loads("MR", same_values_as="MR_small.dcm"),
    "MR_small_implicit.dcm": Loads("MR", same_values_as="MR_small.dcm"),
    "MR2_J2KR.dcm": Loads("MR", same_values_as="MR2_UNCR.dcm"),
    "image_dfl.dcm": Loads("secondary capture, deflated"),
    "mlut_18.dcm": Loads("secondary capture, Modality LUT Sequence"),
    "vlut_04.dcm": Loads("secondary capture, VOI LUT Sequence"),
    "JPEG2000.dcm": Loads("NM secondary capture"),
    "JPEG-LL.dcm": Loads("NM secondary capture"),
    "JPGExtended.dcm": Loads("NM secondary capture"),
    "JPGLosslessP14SV1_1s_1f_8b.dcm": Loads("greyscale ultrasound"),
}

# What is refused, and the words the reason must hold.
REFUSED = {
    "emri_small.dcm": "multi-frame image of 10 frames without Per-Frame Functional Groups",
    "emri_small_RLE.dcm": "without Per-Frame Functional Groups",
    "emri_small_big_endian.dcm": "without Per-Frame Functional Groups",
    "emri_small_jpeg_2k_lossless.dcm": "without Per-Frame Functional Groups",
    "emri_small_jpeg_ls_lossless.dcm": "without Per-Frame Functional Groups",
    "MR_truncated.dcm": "is cut short: its pixel data should end at byte 9692",
    "SC_rgb.dcm": "is a colour image (RGB",
    "SC_ybr_full_422_uncompressed.dcm": "is a colour image (YBR_FULL_422",
    "US1_J2KI.dcm": "is a colour image (YBR_ICT",
    "examples_palette.dcm": "is a colour image (PALETTE COLOR",
    "liver.dcm": "is a segmentation, a result rather than an image",
    "rtdose.dcm": "is a radiotherapy dose grid, not an image",
    "bad_sequence.dcm": "StudyInstanceUID '05fa52f0e599",
    "JPEGLSNearLossless_16.dcm": "StudyInstanceUID is missing",
}

# Every transfer syntax the installed plugins decode for greyscale images, each
# exercised above by a real file that loads. (JPEG Baseline ships in colour only.)
DECODED_TRANSFER_SYNTAXES = {
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.RLELossless,
    uid.JPEGExtended12Bit,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
}

CT_FILES = sorted(name for name, spec in LOADS.items() if "CT" in spec.kind)


@pytest.fixture(scope="module")
def packages() -> dict[str, ModelPackage]:
    registry = discover_packages()
    return {name: registry.get(name) for name in (CLASSIFIER, SEGMENTER)}


@pytest.fixture(scope="module")
def cache(packages: dict[str, ModelPackage]) -> NetworkCache:
    """Networks loaded once, up front: a retraining elsewhere cannot change them mid-run."""
    networks = NetworkCache()
    for package in packages.values():
        networks.get(package, CPU)
    return networks


def write_objects(analysis: Analysis, directory: Path) -> dict[str, Path]:
    paths = {}
    for kind, ds in analysis.objects:
        paths[kind] = directory / f"{kind.lower()}.dcm"
        ds.save_as(paths[kind], enforce_file_format=True)
    return paths


def assert_valid(paths: dict[str, Path]) -> None:
    for kind, path in paths.items():
        assert dciodvfy_errors(path) == [], f"dciodvfy reports errors in the {kind}"


# Loading ------------------------------------------------------------------------


def reference_values(path: Path) -> np.ndarray:
    """pydicom's modality values of a single-frame file, inverted as the loader inverts."""
    ds = pydicom.dcmread(path)
    values = np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)
    pivot = inversion_pivot(ds)
    return values if pivot is None else np.float32(pivot) - values


@pytest.mark.parametrize("name", sorted(LOADS))
def test_real_image_loads_with_sane_geometry_and_values(name: str) -> None:
    spec = LOADS[name]
    path = shipped_file(name)

    volume = load_series([path])

    assert volume.voxels.dtype == np.float32 and volume.voxels.ndim == 3
    assert np.isfinite(volume.voxels).all()
    assert all(value > 0 for value in volume.spacing)
    for direction in (volume.row_direction, volume.column_direction, volume.slice_direction):
        assert np.linalg.norm(direction) == pytest.approx(1.0)
    assert abs(float(np.dot(volume.row_direction, volume.column_direction))) < 1e-3
    np.testing.assert_allclose(
        volume.slice_direction,
        np.cross(volume.row_direction, volume.column_direction),
        atol=1e-6,
    )
    assert len(volume.datasets) == volume.shape[0]
    if spec.kind == "enhanced CT":
        assert volume.frame_numbers is not None
        assert sorted(volume.frame_numbers) == list(range(1, volume.shape[0] + 1))
    else:
        assert volume.frame_numbers is None
        # float32 arithmetic here, float64 in pydicom: equal to a float32 ulp.
        np.testing.assert_allclose(volume.voxels[0], reference_values(path), rtol=1e-6)
    if "CT" in spec.kind:
        # Plausible HU: air to bone inside the body (the padding outside the
        # reconstruction circle may lie far below -1000).
        assert -1100 <= float(np.median(volume.voxels)) <= 1100
        assert float(volume.voxels.max()) <= 4100
    if spec.same_values_as is not None:
        twin = load_series([shipped_file(spec.same_values_as)])
        if spec.lossy:
            difference = np.abs(volume.voxels - twin.voxels)
            assert float(difference.mean()) < 0.01 * float(np.ptp(twin.voxels))
        else:
            np.testing.assert_array_equal(volume.voxels, twin.voxels)


def test_the_loadable_files_cover_every_decoded_transfer_syntax() -> None:
    covered = {
        pydicom.dcmread(shipped_file(name), stop_before_pixels=True).file_meta.TransferSyntaxUID
        for name in LOADS
    }

    assert covered >= DECODED_TRANSFER_SYNTAXES


def test_monochrome1_radiograph_loads_with_larger_meaning_brighter() -> None:
    path = shipped_file("RG1_UNCI.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"

    volume = load_series([path])

    # Stored values and loaded values run opposite ways, within the 15-bit range.
    stored = ds.pixel_array.astype(np.float32)
    np.testing.assert_array_equal(volume.voxels[0], (2**15 - 1) - stored)
    assert np.corrcoef(volume.voxels[0].ravel(), stored.ravel())[0, 1] == pytest.approx(-1.0)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_real_object_is_refused_with_a_reason(name: str) -> None:
    with pytest.raises(SeriesNotAnalysable) as refusal:
        load_series([shipped_file(name)])

    assert REFUSED[name] in str(refusal.value)
    print(f"{name}: {refusal.value}")


# The whole pipeline -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOADS))
def test_classifier_pipeline_behaves_on_every_loadable_image(
    name: str, packages: dict[str, ModelPackage], cache: NetworkCache, tmp_path: Path
) -> None:
    analysis = analyze([shipped_file(name)], packages[CLASSIFIER], CPU, cache)

    (probability,) = [c["probability"] for c in analysis.findings["classes"].values()]
    assert 0.0 <= probability <= 1.0
    assert [kind for kind, _ in analysis.objects] == ["SR"]
    assert_valid(write_objects(analysis, tmp_path))


@pytest.mark.parametrize("name", CT_FILES)
def test_segmentation_pipeline_on_real_ct(
    name: str, packages: dict[str, ModelPackage], cache: NetworkCache, tmp_path: Path
) -> None:
    path = shipped_file(name)
    has_frame_of_reference = "FrameOfReferenceUID" in pydicom.dcmread(path, stop_before_pixels=True)

    if not has_frame_of_reference:
        # A SEG must share its source's frame of reference: refused, with the reason.
        with pytest.raises(EncodingError, match="Frame Of Reference"):
            analyze([path], packages[SEGMENTER], CPU, cache)
        return
    analysis = analyze([path], packages[SEGMENTER], CPU, cache)

    assert [kind for kind, _ in analysis.objects] == ["SEG", "SR"]
    assert set(analysis.findings["segments"]) == {"Lung", "Lung nodule"}
    assert_valid(write_objects(analysis, tmp_path))


# Multi-frame round trip ---------------------------------------------------------


def label_values(seg: Dataset) -> dict[int, int]:
    """Segment number -> the manifest label value it encodes (from the SEG's labels)."""
    manifest = discover_packages().get(SEGMENTER).manifest
    by_name = {spec.name: spec.label for spec in manifest.outputs.segments}
    return {int(item.SegmentNumber): by_name[item.SegmentLabel] for item in seg.SegmentSequence}


def assert_seg_frames_reference_their_source_frames(
    seg: Dataset, volume: Volume, labels: np.ndarray
) -> None:
    """Each SEG frame names a source frame, lies where it lies and holds its labels."""
    assert volume.frame_numbers is not None
    source = volume.datasets[0]
    slice_of_frame = {frame: index for index, frame in enumerate(volume.frame_numbers)}
    label_of = label_values(seg)
    pixels = seg.pixel_array.reshape(-1, seg.Rows, seg.Columns)
    seen: dict[int, set[int]] = {number: set() for number in label_of}
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        (reference,) = item.DerivationImageSequence[0].SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
        frame = int(reference.ReferencedFrameNumber)
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        np.testing.assert_array_equal(
            pixels[index].astype(bool), labels[slice_of_frame[frame]] == label_of[segment]
        )
        source_position = source.PerFrameFunctionalGroupsSequence[frame - 1]
        np.testing.assert_allclose(
            [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient],
            [float(v) for v in source_position.PlanePositionSequence[0].ImagePositionPatient],
        )
        seen[segment].add(frame)
    # Every slice holding a segment has its frame; the others were left out as empty.
    for segment, frames in seen.items():
        holding = {
            frame
            for frame in volume.frame_numbers
            if (labels[slice_of_frame[frame]] == label_of[segment]).any()
        }
        assert frames == holding or (not holding and len(frames) == len(volume.frame_numbers))


def test_real_enhanced_ct_seg_references_the_frames_it_was_computed_on(
    packages: dict[str, ModelPackage], cache: NetworkCache, tmp_path: Path
) -> None:
    path = shipped_file("eCT_Supplemental.dcm")
    volume = load_series([path])
    labels = run_model(packages[SEGMENTER], volume, CPU, cache).labels
    assert labels is not None and volume.frame_numbers == [2, 1]

    analysis = analyze([path], packages[SEGMENTER], CPU, cache)
    seg = dict(analysis.objects)["SEG"]

    assert_seg_frames_reference_their_source_frames(seg, volume, labels)
    assert_valid(write_objects(analysis, tmp_path))


def shuffled_enhanced_ct(directory: Path) -> Path:
    """A Legacy Converted Enhanced CT of a chest phantom, frames in no spatial order."""
    phantom = make_phantom(np.random.default_rng(5), (16, 128, 128), (2.5, 2.5, 2.5), lesions=2)
    datasets = make_ct_series(
        phantom.hu,
        phantom.spacing,
        origin=(-160.0, -160.0, -20.0),
        series_description="Phantom for enhanced CT",
    )
    series_uid = str(datasets[0].SeriesInstanceUID)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        datasets,
        series_instance_uid=series_uid,
        series_number=3,
        sop_instance_uid=derive_uid("tests.test_real_images", "enhanced", series_uid),
        instance_number=1,
    )
    order = list(np.random.default_rng(2).permutation(len(datasets)))
    frames = enhanced.pixel_array
    enhanced.PerFrameFunctionalGroupsSequence = [
        enhanced.PerFrameFunctionalGroupsSequence[i] for i in order
    ]
    enhanced.PixelData = np.ascontiguousarray(frames[order]).tobytes()
    path = directory / "enhanced.dcm"
    enhanced.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def enhanced_ct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield shuffled_enhanced_ct(tmp_path_factory.mktemp("enhanced"))


def test_shuffled_enhanced_ct_round_trips_through_the_seg(
    enhanced_ct: Path, packages: dict[str, ModelPackage], cache: NetworkCache, tmp_path: Path
) -> None:
    volume = load_series([enhanced_ct])
    assert volume.frame_numbers != sorted(volume.frame_numbers or [])
    labels = run_model(packages[SEGMENTER], volume, CPU, cache).labels
    assert labels is not None and (labels == 1).any() and (labels == 2).any()

    analysis = analyze([enhanced_ct], packages[SEGMENTER], CPU, cache)
    paths = write_objects(analysis, tmp_path)

    assert_valid(paths)
    seg = hd.seg.segread(paths["SEG"])
    assert_seg_frames_reference_their_source_frames(seg, volume, labels)
    # highdicom's reader agrees: by source frame, the SEG gives back the labels.
    numbers = seg.get_pixels_by_source_frame(
        str(volume.datasets[0].SOPInstanceUID),
        source_frame_numbers=volume.frame_numbers,
        combine_segments=True,
        relabel=False,
        assert_missing_frames_are_empty=True,
    )
    lookup = np.zeros(max(label_values(seg)) + 1, dtype=np.uint8)
    for number, label in label_values(seg).items():
        lookup[number] = label
    np.testing.assert_array_equal(lookup[numbers], labels)
    sr = hd.sr.srread(paths["SR"])
    assert {uids[2] for uids in sr.get_evidence()} == {
        str(volume.datasets[0].SOPInstanceUID),
        str(seg.SOPInstanceUID),
    }


def test_seg_of_some_frames_of_a_multi_frame_source_references_those_frames(
    enhanced_ct: Path, tmp_path: Path
) -> None:
    full = load_series([enhanced_ct])
    kept = slice(3, 11)
    volume = Volume(
        voxels=full.voxels[kept],
        spacing=full.spacing,
        origin=full.origin + 3 * full.spacing[0] * full.slice_direction,
        row_direction=full.row_direction,
        column_direction=full.column_direction,
        slice_direction=full.slice_direction,
        datasets=full.datasets[kept],
        frame_numbers=(full.frame_numbers or [])[kept],
    )
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[2, 40:60, 50:70] = 2
    labels[5:7, 30:90, 20:50] = 1
    manifest = discover_packages().get(SEGMENTER).manifest

    seg = encode_segmentation(volume, labels, manifest, "1.2.826.0.1.3", "1.2.826.0.1.3.4")
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)

    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert_seg_frames_reference_their_source_frames(seg, volume, labels)
