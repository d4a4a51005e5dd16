"""Declarative preprocessing: turn a volume into a network's input, as a manifest says.

A manifest lists steps by name with their parameters (``PreprocessStep``); this module
owns the registry of step kinds, checks their parameters, and applies them in order
to whole volumes at once (float32, vectorised, batches of slices resized together).
``Prepared`` keeps what inference needs to map outputs back onto the source grid.
Training uses these same functions, so a model sees at run time what it learnt on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.manifest import PreprocessStep
from workers.errors import AnalysisError, SeriesNotAnalysable
from workers.volume import Volume

# Slices resized per interpolate call: bounds the temporary memory of a resize.
_RESIZE_BATCH = 64


@dataclass
class Prepared:
    """A network-ready array and the source geometry it came from.

    ``array`` is float32 (slices, rows, columns) after every step; ``source_shape`` is
    the (rows, columns) of the volume it was made from, where outputs are mapped back.
    """

    array: np.ndarray
    source_shape: tuple[int, int]


class Operation(BaseModel):
    """A step kind: its fields are the step's parameters, ``apply`` does the work."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Transform a float32 (slices, rows, columns) array, in place where it can."""
        raise NotImplementedError


class Window(Operation):
    """Clip to [low, high] (HU for CT)."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def apply(self, array: np.ndarray) -> np.ndarray:
        return np.clip(array, self.low, self.high, out=array)


class Scale(Operation):
    """Map [low, high] linearly onto [0, 1]; values outside keep going (no clipping)."""

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def apply(self, array: np.ndarray) -> np.ndarray:
        array -= np.float32(self.low)
        array *= np.float32(1.0 / (self.high - self.low))
        return array


class ZScore(Operation):
    """Subtract a mean and divide by a standard deviation.

    Fixed ``mean`` and ``std`` when given (both or neither); otherwise the volume's own.
    """

    mean: float | None = None
    std: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> ZScore:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither to use the volume's own")
        return self

    def apply(self, array: np.ndarray) -> np.ndarray:
        if self.mean is not None and self.std is not None:
            mean, std = self.mean, self.std
        else:
            mean = float(array.mean(dtype=np.float64))
            std = float(array.std(dtype=np.float64))
        array -= np.float32(mean)
        # A constant volume has no spread to divide by; leave it centred at zero.
        array *= np.float32(1.0 / std) if std > 0 else np.float32(1.0)
        return array


class ResizeInplane(Operation):
    """Resize every slice to ``size`` = [rows, columns], bilinear.

    Downsampling is antialiased, so what a network sees does not depend on whether the
    source was 256 or 512 pixels wide beyond the resolution itself.
    """

    size: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(min_length=2, max_length=2)]

    def apply(self, array: np.ndarray) -> np.ndarray:
        rows, cols = self.size
        if array.shape[1:] == (rows, cols):
            return array
        antialias = rows < array.shape[1] or cols < array.shape[2]
        out = np.empty((array.shape[0], rows, cols), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, array.shape[0], _RESIZE_BATCH):
                batch = torch.from_numpy(array[start : start + _RESIZE_BATCH]).unsqueeze(1)
                resized = F.interpolate(
                    batch,
                    size=(rows, cols),
                    mode="bilinear",
                    align_corners=False,
                    antialias=antialias,
                )
                out[start : start + _RESIZE_BATCH] = resized.squeeze(1).numpy()
        return out


STEPS: dict[str, type[Operation]] = {
    "window": Window,
    "scale": Scale,
    "zscore": ZScore,
    "resize_inplane": ResizeInplane,
}


def build_steps(steps: Sequence[PreprocessStep]) -> list[Operation]:
    """Check every step's name and parameters; the error names the step that is wrong."""
    operations: list[Operation] = []
    for position, step in enumerate(steps, start=1):
        kind = STEPS.get(step.step)
        if kind is None:
            raise AnalysisError(
                f"preprocessing step {position} {step.step!r} is unknown "
                f"(known: {', '.join(sorted(STEPS))})"
            )
        try:
            operations.append(kind.model_validate(step.parameters))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'parameters'}: {err['msg']}"
                for err in exc.errors()
            )
            raise AnalysisError(
                f"preprocessing step {position} {step.step!r} has bad parameters: {problems}"
            ) from exc
    return operations


def preprocess_array(voxels: np.ndarray, steps: Sequence[PreprocessStep]) -> np.ndarray:
    """Apply the steps to a (slices, rows, columns) array; the input is left untouched."""
    operations = build_steps(steps)
    array = np.array(voxels, dtype=np.float32, copy=True, order="C")
    for operation in operations:
        array = operation.apply(array)
    return array


def preprocess(volume: Volume, steps: Sequence[PreprocessStep]) -> Prepared:
    """Make a network input from a volume, remembering the source in-plane shape."""
    if volume.voxels.ndim != 3 or 0 in volume.voxels.shape:
        raise SeriesNotAnalysable(f"volume of shape {volume.voxels.shape} has no slices to analyse")
    array = preprocess_array(volume.voxels, steps)
    return Prepared(array=array, source_shape=(volume.shape[1], volume.shape[2]))
