"""Analysis of local files without a PACS: ``ainode analyze DICOM_DIR --model NAME``.

Runs the very pipeline a worker runs (``workers.pipeline.analyze``) on each series
found under a folder, and writes its SEG and SR next to each other in an output
folder, so a site can try a model on its own images before routing studies to it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import torch
from pydicom import dcmread, dcmwrite
from pydicom.errors import InvalidDicomError

from models.package import ModelPackage
from workers.errors import ANALYSIS_ERRORS
from workers.infer import NetworkCache
from workers.pipeline import analyze


@dataclass
class SeriesOutcome:
    series_instance_uid: str
    files: list[Path]
    error: str = ""
    findings: dict | None = None


def find_series(folder: Path) -> dict[str, list[Path]]:
    """DICOM files under ``folder``, grouped by Series Instance UID (others ignored)."""
    series: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            header = dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "")
        if uid:
            series[uid].append(path)
    return dict(series)


def analyze_directory(
    folder: Path, package: ModelPackage, out_dir: Path, device: torch.device
) -> list[SeriesOutcome]:
    """Analyse every series under ``folder``; write results to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = NetworkCache()
    outcomes = []
    for uid, paths in find_series(folder).items():
        outcome = SeriesOutcome(uid, [])
        try:
            analysis = analyze(paths, package, device, cache)
        except ANALYSIS_ERRORS as exc:
            outcome.error = str(exc)
        else:
            outcome.findings = analysis.findings
            for kind, dataset in analysis.objects:
                target = out_dir / f"{kind.lower()}-{dataset.SOPInstanceUID}.dcm"
                buffer = BytesIO()
                dcmwrite(buffer, dataset, enforce_file_format=True)
                target.write_bytes(buffer.getvalue())
                outcome.files.append(target)
        outcomes.append(outcome)
    return outcomes
