"""workers.load.limits: a hostile or unlucky header is refused before any pixel is decoded.

The hostile files are real JPEG-LS codestreams (CharLS, through pyjpegls) of a blank
8192x8192 image, about 2 KB on disk, in CT data sets that declare the same size; and
the same codestream with its frame header claiming 65535x65535. Loading is measured
in a child process: its peak resident memory (``VmHWM``, which a new program starts
afresh, unlike ``ru_maxrss``, inherited from the forking test process) after the
refusal is compared with its peak before, and with the peak when the limits are
raised so that the very same file is decoded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset

from tests.factories import make_ct_series, write_series
from tests.hostile_files import blank_codestream, claiming, jpeg_ls_ct
from tests.series_loading import refusal, shipped_file
from workers.errors import SeriesTooLarge
from workers.load.limits import DecodeLimits, codestream_size
from workers.load.series import load_series

_MEASURE = """
import json, sys
from pathlib import Path
from workers.errors import ANALYSIS_ERRORS
from workers.load.limits import DecodeLimits
from workers.load.series import load_series

def peak_kib():
    status = Path("/proc/self/status").read_text()
    return int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1])

limits = DecodeLimits(**json.loads(sys.argv[2]))
before = peak_kib()
try:
    load_series([Path(sys.argv[1])], limits)
    error = None
except ANALYSIS_ERRORS as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"error": error, "grew_mib": (peak_kib() - before) / 1024}))
"""


def load_in_child(path: Path, limits: DecodeLimits) -> dict:
    """Load ``path`` in a fresh interpreter: the refusal, and how far its peak RSS grew."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), json.dumps(limits.__dict__)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_2_kb_file_declaring_8192x8192_is_refused_without_allocating(tmp_path: Path) -> None:
    path = jpeg_ls_ct(tmp_path / "hostile", 8192, 8192, blank_codestream(8192, 8192))
    assert path.stat().st_size < 4096

    refused = load_in_child(path, DecodeLimits())
    decoded = load_in_child(path, DecodeLimits(frame_bytes=1 << 40, series_bytes=1 << 40))

    print(
        f"{path.stat().st_size}-byte file declaring 8192x8192: peak RSS grew "
        f"{refused['grew_mib']:.1f} MiB when refused, {decoded['grew_mib']:.1f} MiB decoded"
    )
    assert refused["error"] == (
        "SeriesTooLarge: hostile.dcm (CT Image Storage) declares frames of 8192x8192 "
        "pixels at 16 bits (1 sample(s)), 128.0 MiB each once decoded, over the limit of "
        "64.0 MiB per frame (AINODE_MAX_FRAME_BYTES)"
    )
    assert refused["grew_mib"] < 16
    # The same file, allowed: what the limit saved (decoded 16-bit frame + float32 volume).
    assert decoded["error"] is None
    assert decoded["grew_mib"] > 300


def test_a_declared_65535x65535_image_is_refused_without_allocating(tmp_path: Path) -> None:
    stream = claiming(blank_codestream(64, 64), 65535, 65535)
    assert codestream_size(stream) == (65535, 65535, 1)
    path = jpeg_ls_ct(tmp_path / "hostile", 65535, 65535, stream)

    refused = load_in_child(path, DecodeLimits())

    assert refused["error"].startswith(
        "SeriesTooLarge: hostile.dcm (CT Image Storage) declares frames of 65535x65535 "
        "pixels at 16 bits (1 sample(s)), 8.0 GiB each once decoded"
    )
    assert refused["grew_mib"] < 16


def test_a_codestream_larger_than_its_data_set_declares_is_refused(tmp_path: Path) -> None:
    stream = claiming(blank_codestream(64, 64), 30000, 30000)
    path = jpeg_ls_ct(tmp_path / "hostile", 64, 64, stream)

    refused = load_in_child(path, DecodeLimits())

    assert refused["error"] == (
        "SeriesNotAnalysable: frame 1 of hostile.dcm (CT Image Storage) is a codestream "
        "of 30000x30000 pixels with 1 component(s) where the data set declares 64x64 "
        "with 1: refused before decoding, as its decoder would allocate what the "
        "codestream says"
    )
    assert refused["grew_mib"] < 16


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_jp2klossless.dcm",
        "JPEG2000.dcm",
        "JPGExtended.dcm",
        "JPEG-LL.dcm",
    ],
)
def test_real_codestreams_declare_what_their_data_sets_do(name: str) -> None:
    ds = pydicom.dcmread(shipped_file(name))
    first = next(pydicom.encaps.generate_fragmented_frames(ds.PixelData, number_of_frames=1))

    assert codestream_size(first[0]) == (ds.Rows, ds.Columns, ds.SamplesPerPixel)
    load_series([shipped_file(name)])  # and the checks let them through


@pytest.fixture
def ct(tmp_path: Path) -> list[Dataset]:
    return make_ct_series(np.zeros((3, 8, 8), dtype=np.float32))


@pytest.mark.parametrize(
    ("keyword", "value", "reason"),
    [
        ("Rows", 0, "declares Rows 0: not a positive number"),
        ("Columns", 0, "declares Columns 0: not a positive number"),
        ("BitsAllocated", 12, "declares Bits Allocated 12: decoders take 1, 8, 16, 32 or 64"),
        ("NumberOfFrames", 0, "declares Number of Frames 0: not a positive number"),
    ],
)
def test_nonsense_pixel_geometry_is_refused(
    tmp_path: Path, ct: list[Dataset], keyword: str, value: int, reason: str
) -> None:
    setattr(ct[1], keyword, value)

    assert reason in refusal(write_series(ct, tmp_path))


def test_native_pixel_data_shorter_than_declared_is_refused(
    tmp_path: Path, ct: list[Dataset]
) -> None:
    ct[2].Rows = 512

    assert (
        "holds 128 bytes of pixel data where its header declares 1 frame(s) of 512x8 at 16 "
        "bits (8192 bytes)"
    ) in refusal(write_series(ct, tmp_path))


def test_a_series_over_the_decoded_limit_is_refused(tmp_path: Path) -> None:
    paths = write_series(make_ct_series(np.zeros((20, 64, 64), dtype=np.float32)), tmp_path)

    with pytest.raises(SeriesTooLarge) as refused:
        load_series(paths, DecodeLimits(series_bytes=300_000))

    assert str(refused.value) == (
        "the series of 20 slices of 64x64 pixels needs 335872 bytes decoded, over the limit "
        "of 300000 bytes per series (AINODE_MAX_DECODED_BYTES)"
    )
    assert load_series(paths, DecodeLimits(series_bytes=400_000)).shape == (20, 64, 64)
