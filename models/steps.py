"""The preprocessing step contract: what a manifest's ``preprocessing:`` may say.

Each step a manifest may name has a parameter model here (its fields are the step's
parameters, checked when a package is read), a role (``intensity`` steps change
values, ``geometric`` ones move voxels onto another grid, a ``temporal`` one makes a
4D series one volume) and, for a geometric step, the size it fixes. ``check_steps``
applies the ordering rules: a temporal step comes first (every later step works on
one volume), ``mask_padding`` before any geometric step (padding is read per source
slice). The worker implements each step (``workers.preprocessing``, whose operations
subclass these models); discovery and the network feed (``models.feed``) read only
this contract, so neither needs the numerical libraries that do the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.contract_errors import ManifestError
from models.manifest import PreprocessStep

Percent = Annotated[float, Field(ge=0, le=100)]
Size = tuple[int | None, int | None, int | None]

# Patient axis and sign each orientation letter names (DICOM LPS: +x left, +y
# posterior, +z superior).
ORIENTATION_LETTERS = {
    "L": (0, 1),
    "R": (0, -1),
    "P": (1, 1),
    "A": (1, -1),
    "S": (2, 1),
    "I": (2, -1),
}


class StepRole(StrEnum):
    """What a step does to a volume."""

    INTENSITY = "intensity"
    GEOMETRIC = "geometric"
    TEMPORAL = "temporal"


class StepParameters(BaseModel):
    """A step kind's parameters; ``name`` is how a manifest names it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str]
    role: ClassVar[StepRole] = StepRole.INTENSITY

    @property
    def fixed_size(self) -> Size | None:
        """The (slices, rows, columns) a geometric step leaves, None on an axis it does
        not fix; None when the step fixes no size."""
        return None


# ------------------------------------------------------------------------------ intensity


class _Range(StepParameters):
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> _Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class WindowStep(_Range):
    """``window``: clip to [low, high] (HU for CT)."""

    name = "window"


class ScaleStep(_Range):
    """``scale``: map [low, high] linearly onto [0, 1]; values outside keep going."""

    name = "scale"


class ZScoreStep(StepParameters):
    """``zscore``: subtract a mean and divide by a standard deviation.

    Fixed ``mean`` and ``std`` when given (both or neither); otherwise the volume's own,
    over the voxels above ``mask_above`` when given (the body, not the air around it).
    """

    name = "zscore"
    mean: float | None = None
    std: Annotated[float, Field(gt=0)] | None = None
    mask_above: float | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> ZScoreStep:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither to use the volume's own")
        if self.mean is not None and self.mask_above is not None:
            raise ValueError("mask_above applies to the volume's own statistics, not fixed ones")
        return self


class _PercentileRange(StepParameters):
    p_low: Percent = 0.5
    p_high: Percent = 99.5
    mask_above: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _PercentileRange:
        if not self.p_low < self.p_high:
            raise ValueError(f"p_low ({self.p_low}) must be below p_high ({self.p_high})")
        return self


class PercentileScaleStep(_PercentileRange):
    """``percentile_scale``: map the volume's [p_low, p_high] percentiles onto [0, 1]."""

    name = "percentile_scale"
    clip: bool = True


class ClipOutliersStep(_PercentileRange):
    """``clip_outliers``: clip values outside the volume's [p_low, p_high] percentiles."""

    name = "clip_outliers"


class MaskPaddingStep(StepParameters):
    """``mask_padding``: set padding voxels (Pixel Padding Value, or below ``below``) to
    ``fill`` before any normalisation sees them."""

    name = "mask_padding"
    fill: float
    below: float | None = None
    pixel_padding_value: bool = True


class N4BiasFieldStep(StepParameters):
    """``n4_bias_field``: divide out a smooth multiplicative field (MR)."""

    name = "n4_bias_field"
    shrink: Annotated[int, Field(ge=1, le=16)] = 4
    iterations: Annotated[
        list[Annotated[int, Field(ge=1, le=1000)]], Field(min_length=1, max_length=8)
    ] = [50, 50, 30, 20]
    mask_above: float | None = None


# ------------------------------------------------------------------------------ geometric


class ResampleStep(StepParameters):
    """``resample``: to ``spacing`` = [slice, row, column] mm (null keeps an axis)."""

    name = "resample"
    role = StepRole.GEOMETRIC
    spacing: Annotated[
        list[Annotated[float, Field(gt=0, le=100)] | None], Field(min_length=3, max_length=3)
    ]
    order: Literal[0, 1, 3] = 1


class CanonicalOrientationStep(StepParameters):
    """``canonical_orientation``: voxel axes reordered and flipped to ``code`` (ITK letters)."""

    name = "canonical_orientation"
    role = StepRole.GEOMETRIC
    code: str = "LPS"

    @field_validator("code")
    @classmethod
    def _three_axes(cls, value: str) -> str:
        value = value.upper()
        axes = sorted(ORIENTATION_LETTERS[c][0] for c in value if c in ORIENTATION_LETTERS)
        if len(value) != 3 or axes != [0, 1, 2]:
            raise ValueError(
                f"code {value!r} must name each patient axis once, one of L/R, P/A, S/I each"
            )
        return value


class CropOrPadStep(StepParameters):
    """``crop_or_pad``: centred, to ``size`` = [slices, rows, columns] (null keeps an axis);
    padding takes ``value``."""

    name = "crop_or_pad"
    role = StepRole.GEOMETRIC
    size: Annotated[
        list[Annotated[int, Field(ge=1, le=4096)] | None], Field(min_length=3, max_length=3)
    ]
    value: float = 0.0

    @property
    def fixed_size(self) -> Size:
        slices, rows, columns = self.size
        return (slices, rows, columns)


class ResizeInplaneStep(StepParameters):
    """``resize_inplane``: every slice resized to ``size`` = [rows, columns], bilinear."""

    name = "resize_inplane"
    role = StepRole.GEOMETRIC
    size: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=2, max_length=2)]

    @property
    def fixed_size(self) -> Size:
        rows, columns = self.size
        return (None, rows, columns)


# ------------------------------------------------------------------------------- temporal


class SliceTimingStep(StepParameters):
    """``slice_timing``: slice-timing correction of a 4D series to one reference slice's
    times, then a reduction over time (mean, max, or temporal position ``phase``)."""

    name = "slice_timing"
    role = StepRole.TEMPORAL
    reference: Literal["first", "middle"] = "middle"
    reduce: Literal["mean", "max", "phase"] = "mean"
    phase: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _phase_only_when_reduced_to_one(self) -> SliceTimingStep:
        if self.phase and self.reduce != "phase":
            raise ValueError(f"phase applies to reduce: phase, not reduce: {self.reduce}")
        return self


STEP_KINDS: dict[str, type[StepParameters]] = {
    kind.name: kind
    for kind in (
        WindowStep,
        ScaleStep,
        ZScoreStep,
        PercentileScaleStep,
        ClipOutliersStep,
        MaskPaddingStep,
        N4BiasFieldStep,
        ResampleStep,
        CanonicalOrientationStep,
        CropOrPadStep,
        ResizeInplaneStep,
        SliceTimingStep,
    )
}


def _parameters(position: int, step: PreprocessStep) -> StepParameters:
    kind = STEP_KINDS.get(step.step)
    if kind is None:
        raise ManifestError(
            f"preprocessing step {position} {step.step!r} is unknown "
            f"(known: {', '.join(sorted(STEP_KINDS))})"
        )
    try:
        return kind.model_validate(step.parameters)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'parameters'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ManifestError(
            f"preprocessing step {position} {step.step!r} has bad parameters: {problems}"
        ) from exc


def check_steps(steps: Sequence[PreprocessStep]) -> list[StepParameters]:
    """Every step's parameters, in order; ManifestError naming the step that is wrong."""
    checked: list[StepParameters] = []
    geometric_before: str | None = None
    for position, step in enumerate(steps, start=1):
        parameters = _parameters(position, step)
        if parameters.role is StepRole.TEMPORAL and position != 1:
            raise ManifestError(
                f"preprocessing step {position} {step.step!r} must be the first step: "
                "it makes the one volume every other step works on"
            )
        if isinstance(parameters, MaskPaddingStep) and geometric_before is not None:
            raise ManifestError(
                f"preprocessing step {position} {step.step!r} must come before geometric "
                f"steps (it follows {geometric_before!r}): padding is read per source slice"
            )
        if parameters.role is StepRole.GEOMETRIC and geometric_before is None:
            geometric_before = step.step
        checked.append(parameters)
    return checked
