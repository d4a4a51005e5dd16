"""A model's findings in words: the one wording the SC overlay and the worklist share.

The findings are the summary ``workers.pipeline.summarise`` makes of a job's outputs
(kept as ``Job.findings``): ``segments`` maps each segment's name to its ``volume_ml``;
``classes`` maps each class's name to its ``probability``, ``present``, ``finding`` (the
code meaning of the finding it stands for) and ``threshold``; both in the manifest's
order. Each output reads as one line, e.g. "Lung nodule: 2.4 mL" or
"Nodule: present, probability 0.93 (threshold 0.50)".

The overlay words each output of its manifest (:func:`segment_words`,
:func:`class_words`), having checked that the findings hold them all; the worklist
words whatever a stored summary holds (:func:`finding_lines`), which may predate a
field (a summary without ``threshold`` reads without it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def millilitres(volume_ml: float) -> str:
    """A volume in mL: one decimal, or two significant digits below 1 mL.

    So that a small segment, visible on the image, does not read as 0.0 mL.
    """
    if volume_ml == 0 or volume_ml >= 1:
        return f"{volume_ml:.1f} mL"
    return f"{volume_ml:.2g} mL"


def segment_words(name: str, volume_ml: float) -> str:
    """A segment's line: its name and volume, e.g. "Lung nodule: 2.4 mL"."""
    return f"{name}: {millilitres(volume_ml)}"


def class_words(
    finding: str, probability: float, threshold: float | None, present: bool | None = None
) -> str:
    """A class's line: the finding, present or absent, its probability and the threshold.

    ``present`` defaults to the probability reaching ``threshold`` (the model's rule);
    without either, the line says the probability alone.
    """
    if present is None and threshold is not None:
        present = probability >= threshold
    state = "" if present is None else "present, " if present else "absent, "
    words = f"{finding}: {state}probability {probability:.2f}"
    return words if threshold is None else f"{words} (threshold {threshold:.2f})"


def finding_lines(findings: Mapping[str, Any] | None) -> list[str]:
    """One line per output a stored summary holds, segments first, in its order.

    An entry that lacks the value it needs (a summary of another shape) is left out
    rather than guessed at.
    """
    if not isinstance(findings, Mapping):
        return []
    lines = []
    segments = findings.get("segments")
    for name, segment in segments.items() if isinstance(segments, Mapping) else ():
        volume = _number(segment, "volume_ml")
        if volume is not None:
            lines.append(segment_words(str(name), volume))
    classes = findings.get("classes")
    for name, result in classes.items() if isinstance(classes, Mapping) else ():
        probability = _number(result, "probability")
        if probability is None:
            continue
        present = result.get("present")
        lines.append(
            class_words(
                str(result.get("finding") or name),
                probability,
                _number(result, "threshold"),
                present if isinstance(present, bool) else None,
            )
        )
    return lines


def _number(entry: Any, key: str) -> float | None:
    """``entry[key]`` as a float, None when absent or not a number."""
    if not isinstance(entry, Mapping):
        return None
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
