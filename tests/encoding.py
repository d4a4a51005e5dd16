"""What the tests of ``workers.encode`` share: validators, manifests, a CT of a sphere.

A synthetic CT series with a sphere goes through load -> encode; the SEG and SR are
written to files for the validators (dicom3tools ``dciodvfy``, ``dcentvfy``, DCMTK's
``dsrdump``), which a machine without them fails, never skips.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset

from models.manifest import ModelManifest
from tests.factories import ANATOMY, LESION, LUNG, MASS, fake_manifest, make_ct_series, write_series
from workers.encode.identity import ResultUIDs
from workers.encode.seg import encode_segmentation
from workers.encode.sr import encode_report
from workers.load.series import load_series
from workers.volume import ModelOutput, Volume

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
NODULE = {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"}


def tool(name: str) -> str:
    """The path of a validator; a machine without it fails the test, never skips it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install dicom3tools dcmtk)")
    return path


def run_tool(*args: str | Path) -> str:
    result = subprocess.run(
        [tool(str(args[0])), *map(str, args[1:])], capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    print(f"$ {' '.join(map(str, args))}\n{output}")
    return output


def assert_valid_iod(path: Path) -> None:
    output = run_tool("dciodvfy", path)
    errors = [line for line in output.splitlines() if "Error" in line]
    assert errors == [], f"dciodvfy reports errors for {path.name}:\n" + "\n".join(errors)


def segmentation_manifest(*, labels: tuple[int, ...] = (3, 7)) -> ModelManifest:
    """Label 3 is a lesion (the sphere), label 7 the lung (left empty by the tests)."""
    specs = [
        {"label": 3, "name": "Sphere lesion", "category": LESION, "type": MASS},
        {"label": 7, "name": "Lung", "category": ANATOMY, "type": LUNG},
    ]
    return fake_manifest(
        "test-sphere-seg",
        "segmentation",
        version="1.2.0",
        title="Test sphere segmenter",
        demonstration=True,
        segments=[s for s in specs if s["label"] in labels],
    )


def classification_manifest() -> ModelManifest:
    return fake_manifest(
        "test-classifier",
        "classification",
        version="0.3",
        title="Test finding classifier",
        manufacturer="ainode tests",
        demonstration=False,
        classes=[
            {"name": "mass", "finding": MASS, "threshold": 0.5},
            {"name": "nodule", "finding": NODULE, "threshold": 0.3},
        ],
    )


@dataclass
class Series:
    volume: Volume
    paths: list[Path]
    labels: np.ndarray  # manifest label values: 3 in the sphere, 0 elsewhere


def sphere_series(directory: Path) -> Series:
    """A 12-slice CT of a sphere, loaded (so without its pixel data), with its labels."""
    z, y, x = np.mgrid[:12, :64, :64]
    sphere = ((z - 6) * 2.5) ** 2 + ((y - 30) * 0.7) ** 2 + ((x - 34) * 0.7) ** 2 < 10.0**2
    hu = np.where(sphere, 45.0, -850.0)
    paths = write_series(
        make_ct_series(hu, (2.5, 0.7, 0.7), origin=(-22.4, -22.4, 100.0)),
        directory,
    )
    # Loading drops the source pixel data: the encoders must work from headers only.
    volume = load_series(paths)
    return Series(volume, paths, np.where(sphere, 3, 0).astype(np.uint8))


@dataclass
class Encoded:
    seg: Dataset
    sr: Dataset
    seg_path: Path
    sr_path: Path
    uids: ResultUIDs


def encode(
    series: Series,
    manifest: ModelManifest,
    labels: np.ndarray,
    directory: Path,
    probabilities: dict[str, float] | None = None,
) -> Encoded:
    uids = ResultUIDs.of_volume(series.volume, manifest)
    seg = encode_segmentation(series.volume, labels, manifest, uids.seg_series, uids.seg_instance)
    output = ModelOutput(labels=labels, probabilities=probabilities or {})
    sr = encode_report(series.volume, manifest, output, seg, uids.sr_series, uids.sr_instance)
    seg_path, sr_path = directory / "seg.dcm", directory / "sr.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    sr.save_as(sr_path, enforce_file_format=True)
    return Encoded(seg, sr, seg_path, sr_path, uids)


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
