"""Analysis of local files without a PACS: ``ainode analyze DICOM_DIR --model NAME``.

Runs the very pipeline a worker runs (``workers.pipeline.analyze``) on each series
found under a folder, and writes its SEG and SR next to each other in an output
folder, so a site can try a model on its own images before routing studies to it.
A series goes to the model only when the model's ``accepts`` takes it, judged as the
node's routing judges a received series (``SeriesSelection.refusal`` on the indexed
attributes of its first instance); otherwise it is reported with the reason.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import torch
from pydicom import dcmread, dcmwrite
from pydicom.errors import InvalidDicomError
from pydicom.uid import ImplicitVRLittleEndian

from models.package import ModelPackage
from node.index import InstanceHeader
from node.uids import InvalidUID
from workers.errors import ANALYSIS_ERRORS
from workers.infer import NetworkCache
from workers.load.limits import DecodeLimits
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


def selection_refusal(package: ModelPackage, paths: list[Path]) -> str | None:
    """Why ``package`` does not take the series at ``paths``, as routing would say it;
    None when its ``accepts`` takes it. Malformed UIDs are left to the loader to name."""
    header = dcmread(paths[0], stop_before_pixels=True)
    meta = getattr(header, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    try:
        indexed = InstanceHeader.from_dataset(header, str(syntax or ImplicitVRLittleEndian))
    except InvalidUID:
        return None
    refusal = package.manifest.accepts.refusal(
        modality=indexed.modality,
        sop_class_uid=indexed.sop_class_uid,
        body_part_examined=indexed.body_part_examined,
        image_type=indexed.image_type,
        instances=len(paths),
    )
    return None if refusal is None else f"model {package.name} does not accept it: {refusal}"


def analyze_directory(
    folder: Path,
    package: ModelPackage,
    out_dir: Path,
    device: torch.device,
    limits: DecodeLimits | None = None,
) -> list[SeriesOutcome]:
    """Analyse every series under ``folder`` that ``package`` accepts; write results to
    ``out_dir``. A series it does not accept, or that cannot be analysed (``limits``
    bound its decoding), has its reason in ``SeriesOutcome.error``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = NetworkCache()
    outcomes = []
    for uid, paths in find_series(folder).items():
        outcome = SeriesOutcome(uid, [])
        outcomes.append(outcome)
        refusal = selection_refusal(package, paths)
        if refusal is not None:
            outcome.error = refusal
            continue
        try:
            analysis = analyze(paths, package, device, cache, limits=limits)
        except ANALYSIS_ERRORS as exc:
            outcome.error = str(exc)
            continue
        outcome.findings = analysis.findings
        for kind, dataset in analysis.objects:
            target = out_dir / f"{kind.lower()}-{dataset.SOPInstanceUID}.dcm"
            buffer = BytesIO()
            dcmwrite(buffer, dataset, enforce_file_format=True)
            target.write_bytes(buffer.getvalue())
            outcome.files.append(target)
    return outcomes
