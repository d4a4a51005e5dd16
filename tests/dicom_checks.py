"""Checks with validators nobody on this project wrote: dciodvfy and dcentvfy (dicom3tools)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def _run(tool: str, *paths: Path) -> str:
    if shutil.which(tool) is None:
        raise RuntimeError(f"{tool} is not installed (tests/peers.sh installs dicom3tools)")
    result = subprocess.run([tool, *map(str, paths)], capture_output=True, text=True, timeout=120)
    return result.stdout + result.stderr


def dciodvfy_errors(path: Path) -> list[str]:
    """Every line dciodvfy reports as an Error for one file (warnings are not errors)."""
    return [line for line in _run("dciodvfy", path).splitlines() if line.startswith("Error")]


def dcentvfy_errors(*paths: Path) -> list[str]:
    """Inconsistencies dcentvfy finds across files of one patient/study/series."""
    return [line for line in _run("dcentvfy", *paths).splitlines() if line.startswith("Error")]
