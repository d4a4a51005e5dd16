"""Geometric steps and the records that invert them exactly.

A grid is where an array lies in patient space (``workers.preprocessing.grid``).
Every geometric step maps its input grid onto an output grid by a per-axis affine
map of voxel indices, after
an axis permutation with flips for ``canonical_orientation``; it returns a
``GridChange`` that replays the map forward (``to_prepared``) or backward
(``to_source``) on any array of the same grid, labels by nearest neighbour and
scores by linear interpolation. Permutations, flips and crop/pad are exact.

Index conventions: ``resample`` keeps the origin (voxel 0 stays where it was, output
index ``i`` samples input index ``i * new / old``); ``resize_inplane`` follows
``torch.nn.functional.interpolate(align_corners=False)``: pixel edges are kept, so
output index ``i`` samples input ``(i + 0.5) * old / new - 0.5``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from models.steps import (
    ORIENTATION_LETTERS,
    CanonicalOrientationStep,
    CropOrPadStep,
    ResampleStep,
    ResizeInplaneStep,
)
from workers.preprocessing.base import GeometricOperation
from workers.preprocessing.grid import Grid, GridChange, Interpolation, leading_axes
from workers.volume import Volume

__all__ = [
    "CanonicalOrientation",
    "CropOrPad",
    "Grid",
    "GridChange",
    "Interpolation",
    "Resample",
    "ResizeInplane",
]

# Slices resized per interpolate call: bounds the temporary memory of a resize.
_RESIZE_BATCH = 64


# ---------------------------------------------------------------------------------- resample


def _sample_axis(values: np.ndarray, axis: int, coords: np.ndarray, order: int) -> np.ndarray:
    """Values at fractional indices ``coords`` along ``axis``, clamped at the edges."""
    size = values.shape[axis]
    if len(coords) == size and np.array_equal(coords, np.arange(size)):
        return values
    if order == 0:
        index = np.clip(np.floor(coords + 0.5), 0, size - 1).astype(np.intp)
        return np.take(values, index, axis=axis)
    low = np.clip(np.floor(coords), 0, size - 1).astype(np.intp)
    high = np.minimum(low + 1, size - 1)
    shape = [1] * values.ndim
    shape[axis] = len(coords)
    weight = np.clip(coords - low, 0.0, 1.0).astype(np.float32).reshape(shape)
    below = np.take(values, low, axis=axis).astype(np.float32, copy=False)
    above = np.take(values, high, axis=axis).astype(np.float32, copy=False)
    above -= below
    above *= weight
    below += above
    return below


def _sample_axes(values: np.ndarray, coords: list[np.ndarray], order: int) -> np.ndarray:
    """Separable sampling of the last three axes at per-axis fractional indices."""
    lead = leading_axes(values)
    if order == 3:
        scale = [(c[1] - c[0]) if len(c) > 1 else 1.0 for c in coords]
        offset = [float(c[0]) for c in coords]
        flat = values.reshape(-1, *values.shape[lead:]).astype(np.float32, copy=False)
        out = np.stack(
            [
                ndimage.affine_transform(
                    item,
                    np.asarray(scale),
                    offset=offset,
                    output_shape=tuple(len(c) for c in coords),
                    order=3,
                    mode="nearest",
                )
                for item in flat
            ]
        )
        return out.reshape(*values.shape[:lead], *out.shape[1:])
    # The axis that shrinks most goes first, so later passes touch fewer voxels.
    for axis in sorted(range(3), key=lambda a: len(coords[a]) / values.shape[lead + a]):
        values = _sample_axis(values, lead + axis, coords[axis], order)
    return values


@dataclass(frozen=True)
class Rescaling(GridChange):
    """Output index ``i`` along axis ``a`` samples input index ``i * step[a] + offset[a]``."""

    source: Grid
    target: Grid
    step: tuple[float, float, float]
    offset: tuple[float, float, float]
    order: int = 1

    @property
    def slicewise(self) -> bool:
        return self.step[0] == 1.0 and self.offset[0] == 0.0

    def forward(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        order = 0 if interpolation == "nearest" else self.order
        coords = [
            np.arange(n) * s + o
            for n, s, o in zip(
                self._extent(values, self.target), self.step, self.offset, strict=True
            )
        ]
        return _sample_axes(values, coords, order)

    def inverse(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        order = 0 if interpolation == "nearest" else 1
        coords = [
            (np.arange(n) - o) / s
            for n, s, o in zip(
                self._extent(values, self.source), self.step, self.offset, strict=True
            )
        ]
        return _sample_axes(values, coords, order)

    def _extent(self, values: np.ndarray, grid: Grid) -> tuple[int, int, int]:
        if self.slicewise:
            return (values.shape[-3], grid.shape[1], grid.shape[2])
        return grid.shape


def _rescaled_grid(grid: Grid, shape: tuple[int, int, int], step, offset) -> Grid:
    origin = grid.origin + sum(offset[a] * grid.spacing[a] * grid.axes[a] for a in range(3))
    spacing = tuple(grid.spacing[a] * step[a] for a in range(3))
    return Grid(shape=shape, spacing=spacing, origin=origin, axes=grid.axes)  # type: ignore[arg-type]


class Resample(ResampleStep, GeometricOperation):
    """Resample to ``spacing`` = [slice, row, column] mm (null keeps an axis as it is).

    ``order`` 1 (linear, the default), 0 (nearest) or 3 (cubic spline). The origin is
    kept; each axis gets ``round(extent / spacing)`` voxels (at least one).
    """

    def apply(self, volume: Volume) -> tuple[Volume, Rescaling]:
        source = Grid.of(volume)
        shape, step = [], []
        for n, old, new in zip(source.shape, source.spacing, self.spacing, strict=True):
            if new is None or abs(new - old) < 1e-6 * old:
                shape.append(n)
                step.append(1.0)
            else:
                shape.append(max(1, round(n * old / new)))
                step.append(new / old)
        offset = (0.0, 0.0, 0.0)
        target = _rescaled_grid(source, tuple(shape), step, offset)  # type: ignore[arg-type]
        change = Rescaling(source, target, tuple(step), offset, self.order)  # type: ignore[arg-type]
        return target.place(volume, change.forward(volume.voxels, "linear", 0.0)), change


# ------------------------------------------------------------------------- in-plane resize


def _interpolate(values: np.ndarray, size: tuple[int, int], mode: str, antialias: bool):
    """Every (rows, columns) plane of ``values`` resized by torch, in batches."""
    lead = values.shape[:-2]
    planes = values.reshape(-1, 1, *values.shape[-2:])
    floating = planes.dtype == np.float32
    out = np.empty((planes.shape[0], *size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, planes.shape[0], _RESIZE_BATCH):
            batch = torch.from_numpy(
                planes[start : start + _RESIZE_BATCH]
                if floating
                else planes[start : start + _RESIZE_BATCH].astype(np.float32)
            )
            kwargs = {"align_corners": False, "antialias": antialias} if mode == "bilinear" else {}
            resized = F.interpolate(batch, size=size, mode=mode, **kwargs)
            out[start : start + _RESIZE_BATCH] = resized.squeeze(1).numpy()
    out = out.reshape(*lead, *size)
    return out if floating or mode == "bilinear" else out.astype(values.dtype)


@dataclass(frozen=True)
class InplaneResize(GridChange):
    """Every slice resized to ``target.shape[1:]`` (torch, ``align_corners=False``)."""

    source: Grid
    target: Grid

    @property
    def slicewise(self) -> bool:
        return True

    def forward(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        size = self.target.shape[1:]
        if values.shape[-2:] == size:
            return values
        if interpolation == "nearest":
            return _interpolate(values, size, "nearest-exact", False)
        antialias = size[0] < values.shape[-2] or size[1] < values.shape[-1]
        return _interpolate(values, size, "bilinear", antialias)

    def inverse(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        size = self.source.shape[1:]
        if values.shape[-2:] == size:
            return values
        # Linear maps back without antialiasing: a network's logits are upsampled.
        mode = "nearest-exact" if interpolation == "nearest" else "bilinear"
        return _interpolate(values, size, mode, False)


class ResizeInplane(ResizeInplaneStep, GeometricOperation):
    """Resize every slice to ``size`` = [rows, columns], bilinear.

    Downsampling is antialiased, so what a network sees does not depend on whether the
    source was 256 or 512 pixels wide beyond the resolution itself.
    """

    def apply(self, volume: Volume) -> tuple[Volume, InplaneResize]:
        source = Grid.of(volume)
        rows, cols = self.size
        step = (1.0, source.shape[1] / rows, source.shape[2] / cols)
        offset = (0.0, 0.5 * step[1] - 0.5, 0.5 * step[2] - 0.5)
        target = _rescaled_grid(source, (source.shape[0], rows, cols), step, offset)
        change = InplaneResize(source, target)
        return target.place(volume, change.forward(volume.voxels, "linear", 0.0)), change


# ---------------------------------------------------------------------------- orientation


@dataclass(frozen=True)
class Reorientation(GridChange):
    """Output axis ``m`` is input axis ``permutation[m]``, reversed where ``flips[m]``."""

    source: Grid
    target: Grid
    permutation: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @property
    def slicewise(self) -> bool:
        return self.permutation == (0, 1, 2) and not self.flips[0]

    def forward(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        lead = leading_axes(values)
        order = (*range(lead), *(lead + p for p in self.permutation))
        out = np.transpose(values, order)
        flipped = tuple(lead + m for m in range(3) if self.flips[m])
        return np.ascontiguousarray(np.flip(out, flipped) if flipped else out)

    def inverse(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        lead = leading_axes(values)
        flipped = tuple(lead + m for m in range(3) if self.flips[m])
        values = np.flip(values, flipped) if flipped else values
        order = (*range(lead), *(lead + int(np.argsort(self.permutation)[a]) for a in range(3)))
        return np.ascontiguousarray(np.transpose(values, order))


def _nearest_axes(axes: np.ndarray) -> tuple[int, int, int]:
    """The patient axis closest to each array axis, as a permutation (best total fit)."""
    best = max(
        itertools.permutations(range(3)),
        key=lambda p: sum(abs(axes[a, p[a]]) for a in range(3)),
    )
    return best  # type: ignore[return-value]


class CanonicalOrientation(CanonicalOrientationStep, GeometricOperation):
    """Reorder and flip the voxel axes to the nearest patient axes named by ``code``.

    ``code`` uses the ITK/NIfTI convention: its letters are where increasing column,
    row and slice index point (``LPS``: columns toward the patient's left, rows
    posterior, slices superior; ``RAS`` the opposite in-plane). Only permutations and
    flips: no interpolation, so an oblique series stays oblique but nearest-aligned.
    """

    def apply(self, volume: Volume) -> tuple[Volume, Reorientation]:
        source = Grid.of(volume)
        patient_of = _nearest_axes(source.axes)
        # Array axis m (slice, row, column) must follow the code's letter 2 - m.
        wanted = [ORIENTATION_LETTERS[self.code[2 - m]] for m in range(3)]
        permutation = tuple(patient_of.index(axis) for axis, _ in wanted)
        flips = tuple(
            bool(np.sign(source.axes[a, axis]) != sign)
            for a, (axis, sign) in zip(permutation, wanted, strict=True)
        )
        origin = source.origin + sum(
            (source.shape[a] - 1) * source.spacing[a] * source.axes[a]
            for a, flip in zip(permutation, flips, strict=True)
            if flip
        )
        target = Grid(
            shape=tuple(source.shape[a] for a in permutation),  # type: ignore[arg-type]
            spacing=tuple(source.spacing[a] for a in permutation),  # type: ignore[arg-type]
            origin=origin,
            axes=np.stack(
                [
                    -source.axes[a] if flip else source.axes[a]
                    for a, flip in zip(permutation, flips, strict=True)
                ]
            ),
        )
        change = Reorientation(source, target, permutation, flips)  # type: ignore[arg-type]
        return target.place(volume, change.forward(volume.voxels, "nearest", 0.0)), change


# ------------------------------------------------------------------------------ crop or pad


@dataclass(frozen=True)
class CropPad(GridChange):
    """Output index ``i`` is input index ``i + offset`` (pad outside the input)."""

    source: Grid
    target: Grid
    offset: tuple[int, int, int]

    @property
    def slicewise(self) -> bool:
        return self.offset[0] == 0 and self.source.shape[0] == self.target.shape[0]

    def forward(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        return self._move(values, self.target, self.offset, fill)

    def inverse(self, values: np.ndarray, interpolation: Interpolation, fill: float) -> np.ndarray:
        return self._move(values, self.source, tuple(-o for o in self.offset), fill)

    def _move(self, values: np.ndarray, grid: Grid, offset, fill: float) -> np.ndarray:
        lead = leading_axes(values)
        shape = (values.shape[-3] if self.slicewise else grid.shape[0], *grid.shape[1:])
        out = np.full((*values.shape[:lead], *shape), fill, dtype=values.dtype)
        into, outof = [], []
        for n_out, n_in, o in zip(shape, values.shape[lead:], offset, strict=True):
            start, stop = max(0, -o), min(n_out, n_in - o)
            into.append(slice(start, max(start, stop)))
            outof.append(slice(start + o, max(start, stop) + o))
        out[(..., *into)] = values[(..., *outof)]
        return out


class CropOrPad(CropOrPadStep, GeometricOperation):
    """Crop or pad, centred, to ``size`` = [slices, rows, columns] (null keeps an axis).

    Padding takes ``value`` (e.g. -1000 HU for air, or 0 after scaling).
    """

    @property
    def fill(self) -> float:
        return self.value

    def apply(self, volume: Volume) -> tuple[Volume, CropPad]:
        source = Grid.of(volume)
        shape = tuple(n if s is None else s for n, s in zip(source.shape, self.size, strict=True))
        # A negative offset pads; an odd difference leaves its extra voxel at the end.
        offset = tuple(
            (n - s) // 2 if n >= s else -((s - n) // 2)
            for n, s in zip(source.shape, shape, strict=True)
        )
        origin = source.origin + sum(
            offset[a] * source.spacing[a] * source.axes[a] for a in range(3)
        )
        target = Grid(shape, source.spacing, origin, source.axes)  # type: ignore[arg-type]
        change = CropPad(source, target, offset)  # type: ignore[arg-type]
        return target.place(volume, change.forward(volume.voxels, "linear", self.value)), change
