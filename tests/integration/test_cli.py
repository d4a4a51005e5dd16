"""The ``ainode`` command as an operator runs it: models list, analyze on local files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from pydicom import dcmread

from tests.dicom_checks import dciodvfy_errors
from tests.factories import make_ct_series, write_series
from training.phantom import make_phantom


def ainode(*args: str, env_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        capture_output=True, text=True, timeout=300,
        env={"AINODE_DATA_DIR": str(env_dir), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_models_list_names_the_shipped_models(tmp_path: Path) -> None:
    result = ainode("models", "list", env_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert names == ["ct-lung-nodule-seg", "ct-nodule-classifier"]


def test_analyze_writes_valid_seg_and_sr_for_local_files(tmp_path: Path) -> None:
    phantom = make_phantom(
        np.random.default_rng(11), shape=(12, 256, 256), spacing=(3.0, 1.2, 1.2), lesions=1
    )
    write_series(make_ct_series(phantom.hu, phantom.spacing), tmp_path / "in")
    result = ainode(
        "analyze", str(tmp_path / "in"), "--model", "ct-lung-nodule-seg",
        "--out", str(tmp_path / "out"), env_dir=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = sorted((tmp_path / "out").glob("*.dcm"))
    assert [p.name.split("-")[0] for p in written] == ["seg", "sr"]
    for path in written:
        assert not dciodvfy_errors(path)
    assert dcmread(written[0]).Modality == "SEG"
    assert '"Lung nodule"' in result.stdout


def test_analyze_explains_what_it_cannot_do(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    unknown = ainode("analyze", str(tmp_path), "--model", "nope", "--out", "x", env_dir=tmp_path)
    assert unknown.returncode == 2 and "no model 'nope'" in unknown.stderr
    empty = ainode(
        "analyze", str(tmp_path / "empty"), "--model", "ct-nodule-classifier",
        "--out", str(tmp_path / "out"), env_dir=tmp_path,
    )  # fmt: skip
    assert empty.returncode == 1 and "no DICOM series" in empty.stderr
