"""Where an array lies in patient space (``Grid``), and the record of a move between grids.

A ``GridChange`` is what a geometric step (``workers.preprocessing.geometry``)
returns: it replays the step forward (``to_prepared``) or backward (``to_source``) on
any array of the same grid, labels by nearest neighbour and scores by linear
interpolation, so a network's output maps back onto the source grid.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from workers.volume import Volume

Interpolation = Literal["nearest", "linear"]


@dataclass(frozen=True)
class Grid:
    """Where a (slices, rows, columns) array lies: ``axes[a]`` is the unit direction of
    array axis ``a`` (slice, row index, column index), ``spacing[a]`` its step in mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: np.ndarray
    axes: np.ndarray  # (3, 3)

    @classmethod
    def of(cls, volume: Volume) -> Grid:
        axes = np.stack([volume.slice_direction, volume.column_direction, volume.row_direction])
        return cls(
            shape=volume.shape,
            spacing=tuple(float(s) for s in volume.spacing),  # type: ignore[arg-type]
            origin=np.asarray(volume.origin, dtype=np.float64),
            axes=np.asarray(axes, dtype=np.float64),
        )

    def place(self, volume: Volume, voxels: np.ndarray) -> Volume:
        """``volume`` with ``voxels`` on this grid (its headers kept)."""
        return replace(
            volume,
            voxels=voxels,
            spacing=self.spacing,
            origin=self.origin,
            slice_direction=self.axes[0],
            column_direction=self.axes[1],
            row_direction=self.axes[2],
        )


class GridChange(ABC):
    """How one geometric step moved voxels: applied forward, or inverted."""

    source: Grid
    target: Grid

    @property
    def slicewise(self) -> bool:
        """Whether output slice ``k`` is made from input slice ``k`` alone."""
        return False

    @abstractmethod
    def forward(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        """``values`` on the source grid taken to the target grid."""

    @abstractmethod
    def inverse(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        """``values`` on the target grid taken back to the source grid."""


def leading_axes(values: np.ndarray) -> int:
    """How many axes come before (slices, rows, columns) in ``values``."""
    if values.ndim < 3:
        raise ValueError(f"values of shape {values.shape} are not (..., slices, rows, columns)")
    return values.ndim - 3
