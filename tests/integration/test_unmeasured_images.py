"""A real chest radiograph whose Pixel Spacing is "0\\0" (pydicom-data's RG1 CR).

``ainode analyze`` with the CT lung model refuses it as the node's routing would,
naming the model's ``accepts``; a model that does take it gets a SEG and an SC
overlay that state no zero spacing (dciodvfy finds no error, the gate passes); and
the CLI's decode limits come from the settings.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom

from node.db.models import ResultKind
from tests.dicom_checks import dciodvfy_errors
from tests.encoding import segmentation_manifest
from tests.factories import make_ct_series, write_series
from tests.series_loading import shipped_file
from workers.load.series import load_series
from workers.pipeline import encode, gate, summarise
from workers.volume import ModelOutput

RADIOGRAPH = "RG1_UNCI.dcm"


def ainode(*args: str, data_dir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {"AINODE_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    env.update({f"AINODE_{k.upper()}": v for k, v in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def test_analyze_refuses_a_radiograph_for_the_ct_lung_model(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    source = shutil.copy(shipped_file(RADIOGRAPH), tmp_path / "in")
    header = pydicom.dcmread(source, stop_before_pixels=True)
    assert header.Modality == "CR" and [float(v) for v in header.PixelSpacing] == [0, 0]

    result = ainode(
        "analyze", str(tmp_path / "in"), "--model", "ct-lung-nodule-seg",
        "--out", str(tmp_path / "out"), data_dir=tmp_path,
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == (
        f"{header.SeriesInstanceUID}: not analysed: model ct-lung-nodule-seg does not "
        "accept it: modality CR not in ['CT']"
    )
    assert list((tmp_path / "out").glob("*")) == []


def test_results_on_a_radiograph_state_no_zero_spacing(tmp_path: Path) -> None:
    volume = load_series([shipped_file(RADIOGRAPH)])
    manifest = segmentation_manifest(labels=(3,))
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[0, 800:1100, 700:1000] = 3
    output = ModelOutput(labels=labels)

    objects = encode(volume, manifest, output, summarise(manifest, volume, output), overlay=True)
    gate(objects, volume.datasets)

    kinds = [kind for kind, _ in objects]
    assert kinds[:2] == [ResultKind.SEG, ResultKind.SR] and ResultKind.SC in kinds
    for kind, dataset in objects:
        if kind is ResultKind.SR:
            continue
        path = tmp_path / f"{kind.lower()}-{dataset.SOPInstanceUID}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], kind
        written = pydicom.dcmread(path)
        assert "PixelSpacing" not in written, kind
        for groups in written.get("SharedFunctionalGroupsSequence") or ():
            for measures in groups.get("PixelMeasuresSequence") or ():
                assert "PixelSpacing" not in measures, kind


def test_analyze_takes_its_decode_limits_from_the_settings(tmp_path: Path) -> None:
    series = make_ct_series(np.full((3, 32, 32), -700.0))
    write_series(series, tmp_path / "in")

    result = ainode(
        "analyze", str(tmp_path / "in"), "--model", "ct-nodule-classifier",
        "--out", str(tmp_path / "out"), data_dir=tmp_path, max_decoded_bytes="10000",
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    assert result.stdout.strip() == (
        f"{series[0].SeriesInstanceUID}: not analysed: the series of 3 slices of 32x32 "
        "pixels needs 14336 bytes decoded, over the limit of 10000 bytes per series "
        "(AINODE_MAX_DECODED_BYTES)"
    )
