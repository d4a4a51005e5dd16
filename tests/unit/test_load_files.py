"""workers.load.files: what is not one series of greyscale images is refused, and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.factories import make_ct_series, write_series
from tests.series_loading import refusal, shipped_file


@pytest.fixture
def hu() -> np.ndarray:
    return np.random.default_rng(7).integers(-1024, 1500, size=(6, 10, 12)).astype(np.float32)


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


def test_mixed_matrix_sizes_are_refused(tmp_path: Path, hu: np.ndarray) -> None:
    datasets = make_ct_series(hu)
    other = make_ct_series(np.zeros((1, 8, 8)), series_uid=datasets[0].SeriesInstanceUID)[0]
    other.ImagePositionPatient = [0, 0, 100]

    reason = refusal(write_series([*datasets, other], tmp_path))

    assert "different matrix sizes" in reason
    assert "10x12 (6 instances)" in reason and "8x8 (1 instances)" in reason


def test_instances_of_several_series_are_refused(tmp_path: Path, hu: np.ndarray) -> None:
    first = make_ct_series(hu[:3], series_description="one")
    second = make_ct_series(hu[3:], series_description="two", origin=(0, 0, 100))

    assert "2 different series" in refusal(write_series([*first, *second], tmp_path))
