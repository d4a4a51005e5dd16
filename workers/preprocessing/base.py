"""What a preprocessing step is: a validated set of parameters that transforms a volume.

The parameters and the rules a manifest must follow are the model contract's
(``models.steps``); each operation here subclasses its step's parameter model and
adds the work. Intensity steps change voxel values only; geometric steps change the grid and return
a ``GridChange`` record (``workers.preprocessing.geometry``) from which outputs are
mapped back. Both act on a ``Volume`` whose ``voxels`` they may modify in place:
``preprocess`` hands them a private float32 copy.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from models.steps import StepParameters, StepRole
from workers.volume import Volume

if TYPE_CHECKING:  # pragma: no cover - types only
    from workers.preprocessing.geometry import GridChange


class Operation(StepParameters):
    """A step kind: its fields are the step's parameters, ``apply`` does the work."""

    @abstractmethod
    def apply(self, volume: Volume) -> tuple[Volume, GridChange | None]:
        """The transformed volume, and the grid change when the step moved voxels."""


class IntensityOperation(Operation):
    """A step that changes values, never where they are."""

    @abstractmethod
    def adjust(self, array: np.ndarray, volume: Volume) -> np.ndarray:
        """New float32 (slices, rows, columns) values, computed in place where possible."""

    def apply(self, volume: Volume) -> tuple[Volume, None]:
        return replace(volume, voxels=self.adjust(volume.voxels, volume)), None


class GeometricOperation(Operation):
    """A step that moves voxels onto another grid, recording how for the inverse."""

    role = StepRole.GEOMETRIC

    @property
    def fill(self) -> float:
        """The value voxels outside the input take."""
        return 0.0

    def replay(self, volume: Volume, change: GridChange) -> Volume:
        """``volume``, on the grid ``change`` came from, moved as ``apply`` moved it: a
        further input channel follows the primary's geometry without re-deriving it."""
        return change.target.place(volume, change.forward(volume.voxels, "linear", self.fill))
