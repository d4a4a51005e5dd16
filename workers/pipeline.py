"""The analysis pipeline: load -> register -> preprocess -> infer -> postprocess -> encode -> gate.

Each step is a function with typed inputs and outputs, owned by its own module and
named here: ``load`` (``workers.load``), ``register`` (``workers.coregistration``),
``preprocess`` (``workers.preprocessing``), ``infer`` (``workers.infer``),
``postprocess`` (``workers.postprocess``), ``encode`` (``workers.encode``: SEG, SR,
SC objects, and a KO flagging the images of critical findings (``workers.critical``),
with the UIDs of ``workers.encode.identity``) and ``gate``
(``workers.encode.conformance``). ``analyze`` runs them in order for one job;
``run_model`` runs preprocess, infer and postprocess on a volume already loaded.

Nothing here knows about Celery or the database; the task module records each step
through the ``step`` callable it passes in, under the names load, register,
preprocess, infer, postprocess and encode (the gate is part of encoding). ``analyze``
can therefore run in a worker, in a test, in a benchmark, or on local files.
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
from models.package import ModelPackage
from node.db.models import ResultKind
from workers import preprocessing
from workers.coregistration import align_inputs
from workers.critical import FINDINGS_KEY, FiredRule, critical_summary, fired_rules
from workers.encode.conformance import gate
from workers.encode.identity import ResultUIDs
from workers.encode.kos import encode_key_objects
from workers.encode.sc import encode_overlay
from workers.encode.seg import encode_segmentation
from workers.encode.sr import encode_report
from workers.errors import AnalysisError
from workers.infer import NetworkCache, infer
from workers.load.cache import DecodedSeriesCache
from workers.load.limits import DecodeLimits
from workers.load.series import load_series
from workers.postprocess import postprocess
from workers.preprocessing import Prepared
from workers.volume import ModelOutput, Volume

__all__ = [
    "Analysis",
    "Inputs",
    "StepRecorder",
    "analyze",
    "encode",
    "gate",
    "infer",
    "load",
    "postprocess",
    "preprocess",
    "register",
    "run_model",
    "summarise",
]

StepRecorder = Callable[[str], AbstractContextManager[object]]
Result = tuple[ResultKind, Dataset]


def _no_recording(_name: str) -> AbstractContextManager[object]:
    return nullcontext()


@dataclass
class Analysis:
    """A job's outcome: what was found, and the DICOM objects that say so (SEG first)."""

    findings: dict
    objects: list[Result] = field(default_factory=list)


@dataclass(frozen=True)
class Inputs:
    """The series a model is run on: the primary, and each further series a multimodal
    model takes, in the order of the manifest's ``additional_inputs``."""

    primary: Volume
    additional: list[Volume] = field(default_factory=list)


def load(
    paths: Sequence[Path],
    additional_paths: Sequence[Sequence[Path]] = (),
    limits: DecodeLimits | None = None,
    series: DecodedSeriesCache | None = None,
) -> Inputs:
    """The load step: the primary series' files and each further series' as volumes,
    each refused before decoding when it would pass ``limits``. With ``series`` (the
    worker's decoded series), a series decoded for an earlier job is not decoded again;
    its volume is then shared, read-only."""
    if series is None:
        return Inputs(
            load_series(paths, limits), [load_series(p, limits) for p in additional_paths]
        )
    return Inputs(series.load(paths, limits), [series.load(p, limits) for p in additional_paths])


def register(inputs: Inputs, manifest: ModelManifest) -> Inputs:
    """The register step: every further series brought onto the primary's grid."""
    return Inputs(
        inputs.primary, align_inputs(inputs.primary, inputs.additional, manifest.additional_inputs)
    )


def preprocess(inputs: Inputs, package: ModelPackage) -> Prepared:
    """The preprocess step: the manifest's steps on the primary series and on each
    further series (already on its grid), which become further input channels.

    AnalysisError when their number is not the manifest's.
    """
    manifest = package.manifest
    if len(inputs.additional) != len(manifest.additional_inputs):
        roles = ", ".join(s.role for s in manifest.additional_inputs) or "none"
        raise AnalysisError(
            f"model {package.name} takes {len(manifest.additional_inputs)} additional "
            f"series (roles: {roles}) besides the primary, {len(inputs.additional)} given"
        )
    return preprocessing.preprocess(inputs.primary, manifest.preprocessing, inputs.additional)


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
                "threshold": spec.threshold,  # so the worklist words it without the manifest
            }
            for spec in manifest.outputs.classes
        }
    return summary


def encode(
    volume: Volume,
    manifest: ModelManifest,
    output: ModelOutput,
    findings: dict,
    *,
    overlay: bool = False,
    supersedes: Sequence[Dataset] = (),
    critical: Sequence[FiredRule] = (),
) -> list[Result]:
    """The encode step: the SEG (for a segmentation), the SR, with ``overlay`` the
    Secondary Capture images, and when ``critical`` rules fired the Key Object
    Selection flagging their images, of one job, in that order, under its result UIDs.

    ``supersedes`` holds the headers of this model's earlier reports on the series,
    which the new SR names as its predecessors.
    """
    uids = ResultUIDs.of_volume(volume, manifest)
    results: list[Result] = []
    segmentation = None
    if output.labels is not None:
        segmentation = encode_segmentation(
            volume, output.labels, manifest, uids.seg_series, uids.seg_instance,
            segment_probabilities=output.segment_probabilities,
        )  # fmt: skip
        results.append((ResultKind.SEG, segmentation))
    report = encode_report(
        volume, manifest, output, segmentation, uids.sr_series, uids.sr_instance,
        supersedes=[d for d in supersedes if d.SOPInstanceUID != uids.sr_instance],
    )  # fmt: skip
    results.append((ResultKind.SR, report))
    if overlay:
        images = encode_overlay(
            volume, output.labels, manifest, findings, uids.sc_series, uids.sc_instance
        )
        results.extend((ResultKind.SC, image) for image in images)
    if critical:
        key_objects = encode_key_objects(
            volume, manifest, critical, uids.ko_series, uids.ko_instance
        )
        results.append((ResultKind.KO, key_objects))
    return results


def run_model(
    package: ModelPackage,
    volume: Volume,
    device: torch.device,
    cache: NetworkCache,
    step: StepRecorder = _no_recording,
    additional: Sequence[Volume] = (),
) -> ModelOutput:
    """Preprocess, infer and postprocess: a package run on a volume, the output in the
    volume's own geometry.

    ``additional[i]`` is the series for the manifest's ``additional_inputs[i]``,
    already on ``volume``'s grid; the network gets the primary then each of them as
    channels. ``step`` records the steps "preprocess", "infer" and "postprocess".
    """
    with step("preprocess"):
        prepared = preprocess(Inputs(volume, list(additional)), package)
    with step("infer"):
        outputs = infer(prepared, package, device, cache)
    with step("postprocess"):
        return postprocess(outputs, prepared, package)


def analyze(
    paths: list[Path],
    package: ModelPackage,
    device: torch.device,
    cache: NetworkCache,
    step: StepRecorder = _no_recording,
    additional_paths: Sequence[list[Path]] = (),
    *,
    overlay: bool = False,
    key_objects: bool = False,
    supersedes: Sequence[Dataset] = (),
    limits: DecodeLimits | None = None,
    series: DecodedSeriesCache | None = None,
) -> Analysis:
    """Run one model on one series' files and encode what it found.

    ``additional_paths`` holds the files of each further series a multimodal model
    takes, in the order of the manifest's ``additional_inputs``. ``overlay`` adds the
    Secondary Capture series (for destinations without SEG support); ``key_objects`` the
    Key Object Selection flagging the images of the critical rules that fired (for
    destinations that take KO: the notifications; the findings say what fired either
    way, under "critical"); ``supersedes`` holds the headers of this model's earlier
    reports on the series. ``limits`` bounds what decoding the series may take
    (``workers.load.limits``; default its defaults); ``series`` keeps decoded series for
    the next job on them (``workers.load.cache``).
    """
    manifest = package.manifest
    with step("load"):
        inputs = load(paths, additional_paths, limits, series)
    if manifest.additional_inputs or inputs.additional:
        with step("register"):
            inputs = register(inputs, manifest)
    with step("preprocess"):
        prepared = preprocess(inputs, package)
    with step("infer"):
        outputs = infer(prepared, package, device, cache)
    with step("postprocess"):
        output = postprocess(outputs, prepared, package)
    with step("encode"):
        findings = summarise(manifest, inputs.primary, output)
        fired = fired_rules(manifest, inputs.primary, output)  # workers.critical
        if fired:
            findings[FINDINGS_KEY] = critical_summary(fired)
        objects = encode(
            inputs.primary, manifest, output, findings, overlay=overlay, supersedes=supersedes,
            critical=fired if key_objects else (),
        )  # fmt: skip
        gate(objects, inputs.primary.datasets)
    return Analysis(findings=findings, objects=objects)
