"""Critical findings: which of a model's critical rules fired on a series, and which
images show each.

A manifest may mark an output critical (``models.manifest``: a class's ``critical``
probability threshold, a segment's ``critical`` minimum volume, each with an urgency).
After the findings are summarised, the pipeline asks :func:`fired_rules` which rules
fired; each :class:`FiredRule` carries the images that show it (slice indices of the
volume: a classifier's slices whose probability passes the threshold, a segment's
slices that it covers, the most telling one first). The Key Object Selection encoder
(``workers.encode.kos``) references those images; :func:`critical_summary` is what
the job's findings say under ``"critical"``, which the ledger turns into
``CriticalFinding`` rows (``node.jobs.critical_findings``).

Pure: no database, no Celery, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.manifest import ClassSpec, CodedConcept, ModelManifest, SegmentSpec, Urgency
from workers.volume import ModelOutput, Volume

FINDINGS_KEY = "critical"  # where the job's findings list the rules that fired
PROBABILITY_UNIT = ""  # a probability has no unit
VOLUME_UNIT = "ml"


@dataclass(frozen=True)
class FiredRule:
    """One critical rule of the manifest that fired on the series.

    ``value`` is the class's probability (``unit`` "") or the segment's volume in ml
    (``unit`` "ml"); ``threshold`` the rule's. ``slices`` are the volume's slice
    indices that show the finding, the most telling first (highest probability,
    largest cross-section), then the others in slice order.
    """

    output: str  # the manifest's class or segment name
    finding: CodedConcept  # the class's finding, or the segment's property type
    value: float
    unit: str
    threshold: float
    urgency: Urgency
    slices: tuple[int, ...]

    @property
    def text(self) -> str:
        """The finding in words, as the worklist, the KOS and the notifications say it."""
        if self.unit == VOLUME_UNIT:
            measure = f"volume {self.value:.2f} ml, at or above the critical {self.threshold:g} ml"
        else:
            measure = f"probability {self.value:.3f}, at or above the critical {self.threshold:g}"
        return f"{self.output} ({self.finding.meaning}): {measure}; urgency {self.urgency.value}"


def fired_rules(manifest: ModelManifest, volume: Volume, output: ModelOutput) -> list[FiredRule]:
    """The manifest's critical rules that ``output`` fires, in manifest order."""
    fired: list[FiredRule] = []
    for index, spec in enumerate(manifest.outputs.classes):
        rule = _class_rule(index, spec, output, volume)
        if rule is not None:
            fired.append(rule)
    if output.labels is not None:
        for spec in manifest.outputs.segments:
            rule = _segment_rule(spec, output.labels, volume)
            if rule is not None:
                fired.append(rule)
    return fired


def _class_rule(
    index: int, spec: ClassSpec, output: ModelOutput, volume: Volume
) -> FiredRule | None:
    if spec.critical is None:
        return None
    probability = float(output.probabilities.get(spec.name, 0.0))
    if probability < spec.critical.threshold:
        return None
    if output.slice_probabilities is None:
        # One score for the whole volume: every image of the series shows it.
        slices = tuple(range(volume.shape[0]))
    else:
        scores = output.slice_probabilities[:, index]
        passing = np.flatnonzero(scores >= spec.critical.threshold)
        best = int(np.argmax(scores))
        slices = _best_first(best, passing)
    return FiredRule(
        output=spec.name,
        finding=spec.finding,
        value=round(probability, 4),
        unit=PROBABILITY_UNIT,
        threshold=spec.critical.threshold,
        urgency=spec.critical.urgency,
        slices=slices,
    )


def _segment_rule(spec: SegmentSpec, labels: np.ndarray, volume: Volume) -> FiredRule | None:
    if spec.critical is None:
        return None
    areas = np.count_nonzero(labels == spec.label, axis=(1, 2))
    volume_ml = float(areas.sum()) * volume.voxel_volume_ml
    if volume_ml < spec.critical.min_volume_ml or not areas.any():
        return None
    return FiredRule(
        output=spec.name,
        finding=spec.type,
        value=round(volume_ml, 3),
        unit=VOLUME_UNIT,
        threshold=spec.critical.min_volume_ml,
        urgency=spec.critical.urgency,
        slices=_best_first(int(np.argmax(areas)), np.flatnonzero(areas)),
    )


def _best_first(best: int, others: np.ndarray) -> tuple[int, ...]:
    return (best, *(int(i) for i in others if int(i) != best))


def critical_summary(fired: list[FiredRule]) -> list[dict]:
    """The rules that fired as the job's findings list them (JSON), one entry each."""
    return [
        {
            "output": rule.output,
            "code": rule.finding.model_dump(),
            "value": rule.value,
            "unit": rule.unit,
            "threshold": rule.threshold,
            "urgency": rule.urgency.value,
            "text": rule.text,
            "images": len(rule.slices),
        }
        for rule in fired
    ]
