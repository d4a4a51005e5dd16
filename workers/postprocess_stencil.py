"""The stencil of linear ``Prepared.to_source``: which prepared voxels each source voxel
is interpolated from, with what weights, and how far the float32 result may stray.

Every geometric change of ``workers.preprocessing.geometry`` moves each array axis on
its own (after a permutation of the axes), so mapping back linearly is a separable
operator: source voxel (z, y, x) is ``sum(wz * wy * wx * prepared[iz, iy, ix])`` over
a few indices per axis. ``source_stencil`` composes, change by change in the order
``to_source`` applies them, the one-axis maps each ``inverse`` uses: for a rescaling
its own index and float32 weight formula, for an in-plane resize the weights torch
itself computes (read off by interpolating one-hot rows, then checked against the
change on a random plane), for crop/pad a shift, for a reorientation a permutation
with flips. A change it does not know gives no stencil, and postprocessing then maps
every voxel back the exact way.

The stencil lists every voxel the interpolation reads, a zero weight included: a
voxel read with weight 0 still changes how the sum rounds. Voxels cropped away by the
preprocessing read a fill voxel: index 0 or ``n + 1`` of the prepared axis padded by
one voxel each side (``index`` counts in that padded axis).

``Stencil.error`` bounds how far ``to_source``'s float32 result lies from the exact
weighted sum: ``rounding`` times the largest magnitude among the voxels read (float32
unit roundoff ``u``: at most 6u per linear pass along one axis, ``a + (b - a) * w``;
at most 5u per bilinear pass in the plane, in whatever order torch sums; the budgets
below are larger), plus ``UNDERFLOW``: below its smallest normal number float32
rounds with an absolute error (up to 2^-150 an operation), not a relative one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from workers.preprocessing import Prepared
from workers.preprocessing.geometry import CropPad, InplaneResize, Reorientation, Rescaling
from workers.preprocessing.grid import GridChange

# Unit roundoff of float32, the precision to_source computes in.
UNIT_ROUNDOFF = 2.0**-24
# Absolute error budget for results below float32's smallest normal number (2^-126):
# far above 2^-150 times the operations of any chain of changes.
UNDERFLOW = 2.0**-126
# Error budgets per pass, in units of roundoff (each above the bound derived above).
_LINEAR_PASS = 8.0
_BILINEAR_PASS = 16.0
# The float64 evaluation of the exact sum and weights that do not sum exactly to one.
_EVALUATION = 4.0


@dataclass(frozen=True)
class AxisStencil:
    """What one source axis reads: prepared axis ``axis`` (padded by a fill voxel each
    side) at ``index[i]`` with weights ``weight[i]`` for source index ``i``."""

    axis: int
    index: np.ndarray  # (source length, reads) intp
    weight: np.ndarray  # (source length, reads) float64

    @property
    def start(self) -> np.ndarray:
        """The lowest padded index each source index reads."""
        return self.index.min(axis=1)

    @property
    def span(self) -> int:
        """How many consecutive padded indices from ``start`` cover every read."""
        return int((self.index.max(axis=1) - self.start).max()) + 1

    def rows(self, start: int, stop: int) -> AxisStencil:
        """The stencil of source indices ``start`` to ``stop``."""
        return replace(self, index=self.index[start:stop], weight=self.weight[start:stop])

    def shifted(self, offset: int) -> AxisStencil:
        """The same reads, counted from padded index ``offset``."""
        return replace(self, index=self.index - offset)

    def combined(
        self, low: np.ndarray, high: np.ndarray, w_low: np.ndarray, w_high: np.ndarray
    ) -> AxisStencil:
        """A linear pass on top: new index ``i`` reads old ``low[i]`` with weight
        ``w_low[i]`` and old ``high[i]`` with ``w_high[i]``."""
        return replace(
            self,
            index=np.concatenate((self.index[low], self.index[high]), axis=1),
            weight=np.concatenate(
                (w_low[:, None] * self.weight[low], w_high[:, None] * self.weight[high]), axis=1
            ),
        )


@dataclass(frozen=True)
class Stencil:
    """The separable stencil of ``to_source`` for (slice, row, column) source axes."""

    axes: tuple[AxisStencil, AxisStencil, AxisStencil]
    rounding: float

    def error(self, reach: np.ndarray | float) -> np.ndarray | float:
        """The most ``to_source`` may differ from the exact sum at a voxel whose reads
        are at most ``reach`` in magnitude."""
        return self.rounding * reach + UNDERFLOW


def source_stencil(prepared: Prepared) -> Stencil | None:
    """The stencil of ``prepared.to_source(values, "linear", fill)`` onto the whole
    source grid, or None when a change is not one this module can follow."""
    axes = [
        AxisStencil(axis, np.arange(1, n + 1, dtype=np.intp)[:, None], np.ones((n, 1)))
        for axis, n in enumerate(prepared.array.shape)
    ]
    passes = 0.0
    for change in reversed(prepared.changes):
        step = _inverse(change, axes)
        if step is None:
            return None
        axes, cost = step
        passes += cost
    if tuple(len(a.index) for a in axes) != prepared.source_shape:
        return None
    return Stencil(tuple(axes), (passes + _EVALUATION) * UNIT_ROUNDOFF)  # type: ignore[arg-type]


def _inverse(change: GridChange, axes: list[AxisStencil]) -> tuple[list[AxisStencil], float] | None:
    """The stencil after ``change.inverse``, and its rounding budget in roundoffs."""
    if isinstance(change, Reorientation):
        # Source axis a is target axis m with permutation[m] == a, reversed if flipped.
        order = [change.permutation.index(a) for a in range(3)]
        return [_flipped(axes[m]) if change.flips[m] else axes[m] for m in order], 0.0
    if isinstance(change, CropPad):
        return [_moved(axes[a], change.source.shape[a], change.offset[a]) for a in range(3)], 0.0
    if isinstance(change, Rescaling):
        return _rescaled(change, axes)
    if isinstance(change, InplaneResize):
        return _resized(change, axes)
    return None


def _flipped(axis: AxisStencil) -> AxisStencil:
    return replace(axis, index=axis.index[::-1], weight=axis.weight[::-1])


def _moved(axis: AxisStencil, length: int, offset: int) -> AxisStencil:
    """``CropPad.inverse``: source index i is target index ``i - offset``, or fill."""
    target = np.arange(length) - offset
    inside = (target >= 0) & (target < len(axis.index))
    index = np.zeros((length, axis.index.shape[1]), dtype=np.intp)
    weight = np.zeros((length, axis.index.shape[1]))
    index[inside] = axis.index[target[inside]]
    weight[inside] = axis.weight[target[inside]]
    weight[~inside, 0] = 1.0  # the fill voxel at padded index 0
    return replace(axis, index=index, weight=weight)


def _rescaled(change: Rescaling, axes: list[AxisStencil]) -> tuple[list[AxisStencil], float]:
    """``Rescaling.inverse``: per axis, index ``i`` at fractional target index
    ``(i - offset) / step``, clamped, the weight rounded to float32 as it does."""
    out, cost = list(axes), 0.0
    extent = change.source.shape
    if change.slicewise:  # the slice axis keeps the length it is given
        extent = (len(axes[0].index), *extent[1:])
    for a in range(3):
        size = len(axes[a].index)
        coords = (np.arange(extent[a]) - change.offset[a]) / change.step[a]
        if len(coords) == size and np.array_equal(coords, np.arange(size)):
            continue
        low = np.clip(np.floor(coords), 0, size - 1).astype(np.intp)
        high = np.minimum(low + 1, size - 1)
        w_high = np.clip(coords - low, 0.0, 1.0).astype(np.float32).astype(np.float64)
        # a + (b - a) * w is exactly (1 - w) * a + w * b.
        out[a] = axes[a].combined(low, high, 1.0 - w_high, w_high)
        cost += _LINEAR_PASS
    return out, cost


def _resized(
    change: InplaneResize, axes: list[AxisStencil]
) -> tuple[list[AxisStencil], float] | None:
    """``InplaneResize.inverse``: torch's bilinear interpolation of rows and columns,
    checked against the change itself on one random plane."""
    plane = (len(axes[1].index), len(axes[2].index))
    if plane == change.source.shape[1:]:
        return axes, 0.0
    rows = bilinear_weights(plane[0], change.source.shape[1])
    columns = bilinear_weights(plane[1], change.source.shape[2])
    if rows is None or columns is None or not _resizes_alike(change, plane, rows, columns):
        return None
    return [axes[0], axes[1].combined(*rows), axes[2].combined(*columns)], _BILINEAR_PASS


def _resizes_alike(change: InplaneResize, plane: tuple[int, int], rows, columns) -> bool:
    """Whether ``rows`` and ``columns`` weights give what ``change.inverse`` gives to
    within the rounding budget on a random plane: a guard against a torch build that
    computes its weights differently for other shapes than the one-hot probe."""
    values = np.random.default_rng(0).standard_normal((1, *plane)).astype(np.float32)
    mapped = change.inverse(values, "linear", 0.0)[0]
    exact, reach = values[0].astype(np.float64), np.abs(values[0])
    for axis, (low, high, w_low, w_high) in enumerate((rows, columns)):
        shape = (-1, 1) if axis == 0 else (1, -1)
        below, above = np.take(exact, low, axis=axis), np.take(exact, high, axis=axis)
        exact = below * w_low.reshape(shape) + above * w_high.reshape(shape)
        reach = np.maximum(np.take(reach, low, axis=axis), np.take(reach, high, axis=axis))
    return bool(np.all(np.abs(exact - mapped) <= _BILINEAR_PASS * UNIT_ROUNDOFF * reach))


def bilinear_weights(
    size_in: int, size_out: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The two input indices each output index of torch's bilinear resize
    (``align_corners=False``, no antialiasing, as ``InplaneResize.inverse`` calls it)
    reads, with their weights: asked of torch itself by resizing one-hot
    rows, so the weights are its own float32 values. None if torch reads otherwise than
    two neighbours."""
    one_hot = torch.eye(size_in, dtype=torch.float32).reshape(1, size_in, size_in, 1)
    with torch.inference_mode():
        resized = F.interpolate(
            one_hot, size=(size_out, 1), mode="bilinear", align_corners=False, antialias=False
        )
    weights = resized.reshape(size_in, size_out).T.numpy().astype(np.float64)  # (out, in)
    rows = np.arange(size_out)
    low = np.argmax(weights != 0, axis=1)
    high = np.minimum(low + 1, size_in - 1)
    w_low = weights[rows, low]
    w_high = np.where(high > low, weights[rows, high], 0.0)
    rest = weights.copy()
    rest[rows, low] = 0.0
    rest[rows, high] = 0.0
    if rest.any() or not np.allclose(w_low + w_high, 1.0, rtol=0, atol=1e-6):
        return None
    return low, high, w_low, w_high
