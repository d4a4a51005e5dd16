"""Whether a series' own data say it is complete, and why: the evidence rules.

DICOM sends no "end of series" on C-STORE, but the data often tell: a single
multi-frame instance is its whole series; Images in Acquisition, Number of Temporal
Positions or an expected count (a sender's rule) say how many instances to wait
for; and a sender that released its association after Instance Numbers 1..N, with no
gap and evenly spaced slices, has most likely sent the whole series. A sender's rule
(``node.completion_settings``) may say more (``release``: its associations carry whole
series) or less (``quiet``: only the quiet period counts).

Everything here is pure: :mod:`node.completion` reads the series' aggregates (kept by
the index, ``node.completion_evidence``) and, only when a rule needs them, the
positions of its instances, and asks :func:`complete_by_evidence`. A wrong early call
costs a second analysis, no more: an instance that arrives later sends the series back
to RECEIVING and its next report supersedes the first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import median

from node.completion_settings import CompletionRule

# As the loader judges a stack (workers.load.stack): positions closer than this are one
# position; a step may differ from the median step by 1 %, or 0.01 mm when that is more.
SAME_POSITION_MM = 0.01
STEP_RELATIVE_TOLERANCE = 0.01
STEP_ABSOLUTE_TOLERANCE_MM = 0.01


@dataclass(frozen=True)
class SeriesEvidence:
    """What a receiving series' row holds about its size and its sender."""

    instances: int
    lowest_number: int | None  # Instance Number
    highest_number: int | None
    frames: int | None  # the largest Number of Frames of its instances
    images_in_acquisition: int | None
    temporal_positions: int | None  # Number of Temporal Positions
    released: bool  # its sender released the association after its last instance
    sender: str  # calling AE title of its latest instance


@dataclass(frozen=True)
class InstanceLayout:
    """Each instance's Instance Number, slice position and Temporal Position Identifier."""

    numbers: Sequence[int | None]
    positions: Sequence[float | None]
    temporal: Sequence[int | None]


def numbered_from_one(numbers: Sequence[int | None]) -> bool:
    """Instance Numbers 1..N, each once."""
    known = [number for number in numbers if number is not None]
    return len(known) == len(numbers) and sorted(known) == list(range(1, len(known) + 1))


def _positions(positions: Sequence[float]) -> tuple[list[float], list[int]]:
    """The distinct positions (ascending) and how many instances lie at each."""
    distinct: list[float] = []
    counts: list[int] = []
    for position in sorted(positions):
        if distinct and position - distinct[-1] < SAME_POSITION_MM:
            counts[-1] += 1
        else:
            distinct.append(position)
            counts.append(1)
    return distinct, counts


def evenly_spaced(positions: Sequence[float | None]) -> bool:
    """The slices are evenly spaced, with as many instances at each (one each in a 3D
    series, one per temporal position in a 4D one); true when no instance has a
    position (nothing to judge), false when only some have one."""
    if all(p is None for p in positions):
        return True
    if any(p is None for p in positions):
        return False
    distinct, counts = _positions([p for p in positions if p is not None])
    if len(set(counts)) != 1:
        return False
    steps = [b - a for a, b in zip(distinct, distinct[1:], strict=False)]
    if len(steps) < 2:
        return True
    step = median(steps)
    tolerance = max(STEP_RELATIVE_TOLERANCE * step, STEP_ABSOLUTE_TOLERANCE_MM)
    return all(abs(s - step) <= tolerance for s in steps)


def every_temporal_position(temporal: Sequence[int | None], positions: int) -> bool:
    """Temporal Position Identifiers 1..``positions``, as many instances at each."""
    counts = Counter(temporal)
    return set(counts) == set(range(1, positions + 1)) and len(set(counts.values())) == 1


def complete_at_release(evidence: SeriesEvidence, rule: CompletionRule | None) -> str | None:
    """Why a series whose sender's rule is ``release`` is complete: it was released (no
    grace needed: such a sender does not continue a series on another association)."""
    if rule is not None and rule.kind == "release" and evidence.released and evidence.instances:
        return f"{evidence.sender} released the association (its rule: release)"
    return None


def complete_by_evidence(
    evidence: SeriesEvidence,
    rule: CompletionRule | None,
    layout: Callable[[], InstanceLayout],
) -> str | None:
    """Why the series is complete, or None when its data do not say so (yet).

    ``rule`` is its sender's; ``layout`` reads every instance's numbers and positions
    (a query), called only when numbering or temporal positions are to be judged.
    """
    read: list[InstanceLayout] = []

    def instances() -> InstanceLayout:  # one query at most
        if not read:
            read.append(layout())
        return read[0]

    count = evidence.instances
    if count == 0 or (rule is not None and rule.kind == "quiet"):
        return None
    if (at_release := complete_at_release(evidence, rule)) is not None:
        return at_release
    if rule is not None and rule.count is not None and count >= rule.count:
        return f"{count} instances, as expected from {evidence.sender} (its rule: {rule})"
    if count == 1 and (evidence.frames or 0) > 1:
        return f"a single multi-frame instance ({evidence.frames} frames)"
    if evidence.images_in_acquisition and count >= evidence.images_in_acquisition:
        return f"Images in Acquisition reached ({count} of {evidence.images_in_acquisition})"
    temporal = evidence.temporal_positions
    if (
        temporal
        and temporal > 1
        and count % temporal == 0
        and every_temporal_position(instances().temporal, temporal)
    ):
        return f"Number of Temporal Positions reached ({temporal} x {count // temporal})"
    if evidence.released and evidence.lowest_number == 1 and evidence.highest_number == count:
        held = instances()
        if numbered_from_one(held.numbers) and evenly_spaced(held.positions):
            return (
                f"{evidence.sender} released the association after Instance Numbers "
                f"1..{count} without a gap, evenly spaced"
            )
    return None
