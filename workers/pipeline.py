"""The analysis pipeline: load -> preprocess -> infer -> postprocess -> encode.

Nothing here knows about Celery or the database; the task module records each step
through the ``step`` callable it passes in. ``analyse`` can therefore run in a worker,
in a test, or on local files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from pydicom import Dataset

from models.manifest import ModelManifest
from models.registry import ModelPackage
from node.uids import result_uids
from workers.encode.conformance import assert_conformant
from workers.encode.overlay import encode_overlay
from workers.encode.seg import encode_segmentation
from workers.encode.sr import encode_report
from workers.infer import NetworkCache, run_model
from workers.inputs import align_inputs
from workers.load import load_series
from workers.volume import ModelOutput, Volume

StepRecorder = Callable[[str], AbstractContextManager[object]]


def _no_recording(_name: str) -> AbstractContextManager[object]:
    return nullcontext()


@dataclass
class Analysis:
    """A job's outcome: what was found, and the DICOM objects that say so (SEG first)."""

    findings: dict
    objects: list[tuple[str, Dataset]] = field(default_factory=list)


def summarise(manifest: ModelManifest, volume: Volume, output: ModelOutput) -> dict:
    """The findings as the API and worklist show them."""
    summary: dict = {"model": manifest.name, "version": manifest.version}
    if output.labels is not None:
        counts = np.bincount(output.labels.ravel(), minlength=256)
        summary["segments"] = {
            spec.name: {
                "label": spec.label,
                "voxels": int(counts[spec.label]),
                "volume_ml": round(float(counts[spec.label]) * volume.voxel_volume_ml, 3),
            }
            for spec in manifest.outputs.segments
        }
    if manifest.outputs.classes:
        summary["classes"] = {
            spec.name: {
                "probability": round(float(output.probabilities.get(spec.name, 0.0)), 4),
                "present": float(output.probabilities.get(spec.name, 0.0)) >= spec.threshold,
                "finding": spec.finding.meaning,
            }
            for spec in manifest.outputs.classes
        }
    return summary


def analyse(
    paths: list[Path],
    package: ModelPackage,
    device: torch.device,
    cache: NetworkCache,
    step: StepRecorder = _no_recording,
    additional_paths: Sequence[list[Path]] = (),
    *,
    overlay: bool = False,
    supersedes: Sequence[Dataset] = (),
) -> Analysis:
    """Run one model on one series' files and encode what it found.

    ``additional_paths`` holds the files of each further series a multimodal model
    takes, in the order of the manifest's ``additional_inputs``. ``overlay`` adds the
    Secondary Capture series (for destinations without SEG support); ``supersedes``
    holds the headers of this model's earlier reports on the series, which the new
    SR names as its predecessors.
    """
    manifest = package.manifest
    with step("load"):
        volume = load_series(paths)
        others = [load_series(p) for p in additional_paths]
    if manifest.additional_inputs or others:
        with step("register"):
            others = align_inputs(volume, others, manifest.additional_inputs)
        output = run_model(package, volume, device, cache, step=step, additional=others)
    else:
        output = run_model(package, volume, device, cache, step=step)
    with step("encode"):
        uids = result_uids(
            (str(ds.SOPInstanceUID) for ds in volume.datasets), manifest.name, manifest.version
        )
        objects: list[tuple[str, Dataset]] = []
        segmentation = None
        if output.labels is not None:
            segmentation = encode_segmentation(
                volume,
                output.labels,
                manifest,
                uids["seg_series"],
                uids["seg_instance"],
                segment_probabilities=output.segment_probabilities,
            )
            assert_conformant("SEG", segmentation)
            objects.append(("SEG", segmentation))
        report = encode_report(
            volume, manifest, output, segmentation, uids["sr_series"], uids["sr_instance"],
            supersedes=[d for d in supersedes if d.SOPInstanceUID != uids["sr_instance"]],
        )  # fmt: skip
        assert_conformant("SR", report)
        objects.append(("SR", report))
        findings = summarise(manifest, volume, output)
        if overlay:
            images = encode_overlay(
                volume, output.labels, manifest, findings,
                uids["overlay_series"], uids["overlay_instance"],
            )  # fmt: skip
            for image in images:
                assert_conformant("SC", image, volume.datasets)
                objects.append(("SC", image))
    return Analysis(findings=findings, objects=objects)
