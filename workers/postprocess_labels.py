"""Segment labels on the source grid, decided on the prepared grid wherever that is exact.

A source voxel's label is the segment whose logit margin over background, mapped back
linearly (``Prepared.to_source``), is largest and positive (``labels_of_margins``).
Mapping every channel of every source voxel back is most of the postprocessing time,
yet most voxels lie where every prepared voxel they are interpolated from says the
same. ``map_labels`` decides those from the prepared grid alone, and interpolates at
full resolution only the others:

- A prepared voxel is *background* when no margin is positive, and *segment k* when
  margin k beats zero and every other margin by more than twice the error bound
  (``Stencil.error`` of the largest magnitude in the chunk); otherwise unsure.
- A source voxel whose stencil reads only background voxels is background: its mapped
  margins are sums of non-positive values with non-negative weights, never positive in
  any rounding. One that reads only segment-k voxels is segment k: the exact weighted
  sum keeps margin k ahead of every other and above zero by more than the rounding
  can take away (the weights are non-negative and sum to one, to within rounding).
  Voxels cropped away read the fill margin (0, background) like any other.
- Every other source voxel is interpolated here in float64 from the stencil. Where the
  result clears the same bounds (relative to the largest value it reads), the label
  it gives is the one float32 ``to_source`` gives; the few where it does not (ties,
  near ties) take the label the exact mapping of their slice gives them.

Work goes by chunks of source slices, one per thread torch may use, so memory stays
bounded (below the exact path's per chunk). Outputs with a value that is not finite,
or too large for the bounds, take the exact path for their chunk.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from workers.postprocess_stencil import AxisStencil, Stencil
from workers.preprocessing import Prepared

# Source slices decided at a time: bounded memory on 512 matrices.
CHUNK_SLICES = 16
# Class of a prepared voxel, and code of a source voxel, left to interpolation.
UNSURE = 255
# Larger magnitudes would let a difference of two margins overflow float32.
_LARGEST_MARGIN = 1e30

ExactLabels = Callable[[int, int], np.ndarray]


def labels_of_margins(margins: torch.Tensor, lookup: torch.Tensor) -> np.ndarray:
    """Label values from mapped margins (segments, ...): the best positive margin's
    segment, 0 where none is positive. max() is several times faster than argmax()."""
    best = margins.max(dim=0)
    channel = torch.where(best.values > 0, best.indices + 1, 0)
    return lookup[channel].numpy()


def exact_labels(outputs: np.ndarray, prepared: Prepared, lookup: torch.Tensor) -> ExactLabels:
    """Labels of source slices ``[start, stop)`` by mapping every margin back: slice by
    slice when the grid changes allow it, else the whole volume once, kept. Safe to
    call from several threads."""
    whole: list[np.ndarray] = []
    lock = threading.Lock()

    def labels(start: int, stop: int) -> np.ndarray:
        with torch.inference_mode():
            if prepared.slicewise:
                return labels_of_margins(_mapped(outputs[:, start:stop], prepared), lookup)
            with lock:
                if not whole:
                    whole.append(labels_of_margins(_mapped(outputs, prepared), lookup))
            return whole[0][start:stop]

    return labels


def _mapped(logits: np.ndarray, prepared: Prepared) -> torch.Tensor:
    return torch.from_numpy(prepared.to_source(logits[1:] - logits[:1], "linear", 0.0))


def map_labels(
    outputs: np.ndarray, prepared: Prepared, lookup: np.ndarray, stencil: Stencil | None
) -> np.ndarray:
    """Label values on the source grid for logits ``outputs`` (channels, slices, rows,
    columns; channel 0 background) on the prepared grid: channel ``c`` >= 1 becomes
    ``lookup[c]``. Equal to mapping every margin back (``exact_labels``), which is
    what happens without a ``stencil``."""
    exact = exact_labels(outputs, prepared, torch.from_numpy(lookup))
    # Every code a source voxel may get, UNSURE included, has a value.
    lookup = np.concatenate((lookup, np.zeros(UNSURE + 1 - len(lookup), np.uint8)))
    labels = np.empty(prepared.source_shape, dtype=np.uint8)
    slices = labels.shape[0]
    if stencil is None:
        chunk = CHUNK_SLICES if prepared.slicewise else slices
        for start in range(0, slices, chunk):
            labels[start : start + chunk] = exact(start, start + chunk)
        return labels

    def decide(start: int) -> None:
        stop = min(start + CHUNK_SLICES, slices)
        labels[start:stop] = _chunk_labels(outputs, stencil, lookup, start, stop, exact)

    # Chunks on as many threads as torch computes with (numpy lets go of the GIL), each
    # writing its own slices: memory stays bounded by the chunks in hand.
    with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        for _ in pool.map(decide, range(0, slices, CHUNK_SLICES)):
            pass
    return labels


def _chunk_labels(
    outputs: np.ndarray,
    stencil: Stencil,
    lookup: np.ndarray,
    start: int,
    stop: int,
    exact: ExactLabels,
) -> np.ndarray:
    slices = stencil.axes[0].rows(start, stop)
    first = int(slices.index.min())
    axes = (slices.shifted(first), *stencil.axes[1:])
    margins = _padded_margins(outputs, axes, first, int(slices.index.max()))
    magnitude = np.abs(margins).max(axis=0)
    largest = float(magnitude.max())
    if not np.isfinite(largest) or largest > _LARGEST_MARGIN:  # NaN or infinity too
        return exact(start, stop)
    classes = _classes(margins, 2.0 * stencil.error(largest))
    code = _uniform(classes, axes)
    for axis, reads in enumerate(axes):
        if not _is_identity(reads.start, code.shape[axis]):
            code = np.take(code, reads.start, axis=axis)
    # flatnonzero and unravel: several times faster than nonzero on a 3D array.
    flat_band = np.flatnonzero(code == UNSURE)
    band = np.unravel_index(flat_band, code.shape)
    identity = np.array_equal(lookup[: len(margins) + 1], np.arange(len(margins) + 1))
    labels = np.ascontiguousarray(code if identity else lookup[code])
    values = _interpolated(margins, axes, band)
    # The largest magnitude a voxel reads, at most that of the box its stencil lies in.
    for axis, reads in enumerate(axes):
        magnitude = _window(magnitude, reads.span, axis, np.maximum)
    starts = tuple(np.take(reads.start, at) for reads, at in zip(axes, band, strict=True))
    reach = magnitude[starts].astype(np.float64)
    channel, sure = _decided(values, stencil.error(reach))
    labels.reshape(-1)[flat_band] = lookup[channel]
    # Near ties: the exact mapping of their slice decides them.
    unsure = tuple(at[~sure] for at in band)
    for index in np.unique(unsure[0]):
        rows, columns = (at[unsure[0] == index] for at in unsure[1:])
        labels[index, rows, columns] = exact(start + index, start + index + 1)[0, rows, columns]
    return labels


def _is_identity(index: np.ndarray, length: int) -> bool:
    return len(index) == length and bool(np.all(index == np.arange(length)))


def _padded_margins(
    outputs: np.ndarray, axes: tuple[AxisStencil, ...], first: int, last: int
) -> np.ndarray:
    """Margins over background (float32, as ``to_source`` gets them) of the prepared
    voxels at padded indices ``first`` to ``last`` along the slice stencil's axis, all
    of the others, a fill voxel (0) each side; axes in source order."""
    along = axes[0].axis
    index = np.arange(first, last + 1) - 1  # prepared index; -1 and n are the fill
    inside = (index >= 0) & (index < outputs.shape[1 + along])
    taken = np.take(outputs, index[inside], axis=1 + along)
    shape = list(taken.shape)
    shape[0] -= 1
    shape[1 + along] = len(index)
    margins = np.zeros(shape, dtype=np.float32)
    place = [slice(None)] * 4
    place[1 + along] = np.flatnonzero(inside)  # type: ignore[call-overload]
    margins[tuple(place)] = taken[1:] - taken[:1]
    pad = [(0, 0)] + [(0, 0) if a == along else (1, 1) for a in range(3)]
    margins = np.pad(margins, pad)
    return np.ascontiguousarray(margins.transpose(0, *(1 + a.axis for a in axes)))


def _classes(margins: np.ndarray, gap: float) -> np.ndarray:
    """Per prepared voxel: 0 when no margin is positive, segment ``k`` (1-based) when
    its margin beats zero and every other margin by more than ``gap``, else UNSURE."""
    best, channel, runner_up = _ranked(margins)
    clear = (best > gap) & (best - runner_up > gap)
    return np.where(best <= 0, 0, np.where(clear, channel, UNSURE)).astype(np.uint8)


def _uniform(classes: np.ndarray, axes: tuple[AxisStencil, ...]) -> np.ndarray:
    """Per prepared voxel: its class where the box of ``span`` voxels from it along
    every axis (every voxel a stencil starting there reads) has one class, else UNSURE."""
    low, high = classes, classes
    for axis, reads in enumerate(axes):
        low = _window(low, reads.span, axis, np.minimum)
        high = _window(high, reads.span, axis, np.maximum)
    return np.where(low == high, low, UNSURE).astype(np.uint8)


def _window(values: np.ndarray, span: int, axis: int, reduce: np.ufunc) -> np.ndarray:
    """``reduce`` over ``values[i:i + span]`` along ``axis`` (shorter at the end)."""
    out = values
    n = values.shape[axis]
    for shift in range(1, span):
        out = reduce(out, np.take(values, np.minimum(np.arange(n) + shift, n - 1), axis=axis))
    return out


def _interpolated(
    margins: np.ndarray, axes: tuple[AxisStencil, ...], voxels: tuple[np.ndarray, ...]
) -> np.ndarray:
    """The exact weighted sums (float64, (segments, voxels)) at source ``voxels``."""
    flat = margins.reshape(len(margins), -1)
    strides = (margins.shape[2] * margins.shape[3], margins.shape[3], 1)
    values = np.zeros((len(margins), len(voxels[0])))
    per_axis = [
        [
            (np.take(index, at) * stride, np.take(weight, at))
            for index, weight in zip(reads.index.T.copy(), reads.weight.T.copy(), strict=True)
        ]
        for reads, at, stride in zip(axes, voxels, strides, strict=True)
    ]
    for (iz, wz), (iy, wy), (ix, wx) in itertools.product(*per_axis):
        position, weight = iz + iy + ix, wz * wy * wx
        for channel, row in zip(values, flat, strict=True):
            row_values = np.take(row, position)
            channel += weight * row_values
    return values


def _decided(values: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channel (0 background, k segment) and whether float32 mapping, off the exact
    sums by at most ``bound``, must give it: every margin below zero by more than the
    bound, or one above zero by more than it and above every other by more than twice."""
    best, channel, runner_up = _ranked(values)
    segment = (best > bound) & (best - runner_up > 2.0 * bound)
    background = best < -bound
    return np.where(segment, channel, 0), segment | background


def _ranked(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along axis 0: the largest value, its 1-based row (uint8; either row of a tie),
    and the second largest value (-inf with one row)."""
    if len(values) == 1:
        return values[0], np.ones(values.shape[1:], np.uint8), np.full(values.shape[1:], -np.inf)
    if len(values) == 2:
        second = values[1] > values[0]
        best, runner_up = np.maximum(values[0], values[1]), np.minimum(values[0], values[1])
        return best, second.astype(np.uint8) + 1, runner_up
    channel = values.argmax(axis=0).astype(np.uint8) + 1
    ranked = np.partition(values, len(values) - 2, axis=0)
    return ranked[-1], channel, ranked[-2]
