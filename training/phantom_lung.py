"""Inside the lungs of a synthetic chest phantom: parenchyma texture and vessels,
nodules (lesions) with their labels, and the in-plane blur of a reconstruction kernel.
"""

from __future__ import annotations

import numpy as np

from training.anatomy import LESION, LUNG, Anatomy


def draw_lung_parenchyma(
    rng: np.random.Generator,
    a: Anatomy,
    hu: np.ndarray,
    lung: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    spacing: tuple[float, float, float],
) -> None:
    """Fill the lungs: parenchyma with texture, a gravity gradient and vessels.

    Vessels are where two smooth random fields are both near zero: the crossing of two
    level surfaces is a curve, so in a slice they show as dots and short segments, the
    way vessels do, and they can be confused with small nodules, which is the point.
    """
    index = np.nonzero(lung)
    if index[0].size == 0:
        return
    base = rng.uniform(-880.0, -780.0)
    # Dependent (posterior) lung is denser in a supine patient.
    gravity = rng.uniform(0.0, 60.0) * (y[index[1], 0] - a.cy) / a.half_depth_back
    (texture,) = _smooth_fields(rng, hu.shape, spacing, cell_mm=8.0, index=index)
    cell = rng.uniform(8.0, 14.0)
    f1, f2 = _smooth_fields(rng, hu.shape, spacing, cell_mm=cell, index=index, count=2)
    width = rng.uniform(0.08, 0.13)
    vessels = np.exp(-(f1**2 + f2**2) / np.float32(width**2))
    texture *= np.float32(rng.uniform(10.0, 30.0))
    vessels *= np.float32(rng.uniform(750.0, 900.0))
    hu[index] = (base + gravity + texture + vessels).astype(np.float32)


def _smooth_fields(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    spacing: tuple[float, float, float],
    cell_mm: float,
    index: tuple[np.ndarray, ...],
    count: int = 1,
) -> list[np.ndarray]:
    """``count`` smooth unit-variance random fields sampled at the voxels ``index``.

    Random values on a coarse grid (one per ``cell_mm``) interpolated trilinearly,
    evaluated only where asked, so the cost follows the lungs' size, not the volume's.
    Fields of one cell size share their interpolation weights.
    """
    coarse_shape = [int(np.ceil(n * s / cell_mm)) + 2 for n, s in zip(shape, spacing, strict=True)]
    coarse = [rng.standard_normal(coarse_shape).astype(np.float32).ravel() for _ in range(count)]
    strides = (coarse_shape[1] * coarse_shape[2], coarse_shape[2], 1)
    base = np.zeros(index[0].shape, dtype=np.intp)
    frac = []
    for axis_index, s, stride in zip(index, spacing, strides, strict=True):
        pos = axis_index.astype(np.float32) * np.float32(s / cell_mm)
        low = pos.astype(np.intp)  # positions are >= 0, so truncation is floor
        base += low * stride
        frac.append(pos - low)
    results = [np.zeros(index[0].shape, dtype=np.float32) for _ in range(count)]
    for corner in range(8):
        ups = [(corner >> axis) & 1 for axis in range(3)]
        weight = np.ones_like(results[0])
        for axis, up in enumerate(ups):
            weight *= frac[axis] if up else (1.0 - frac[axis])
        at = base + sum(up * stride for up, stride in zip(ups, strides, strict=True))
        for field, result in zip(coarse, results, strict=True):
            result += weight * field[at]
    return results


def draw_lesion(
    rng: np.random.Generator,
    hu: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, float, float],
) -> int:
    """Place one ellipsoidal nodule mostly inside the lung; return 1 if placed.

    The nodule is cut to the lung, so every lesion voxel lies inside the lungs.
    """
    lung_voxels = np.flatnonzero(labels == LUNG)
    if lung_voxels.size == 0:
        return 0
    dz, dy, dx = spacing
    for _attempt in range(20):
        radius = rng.uniform(4.0, 15.0)
        radii = radius * rng.uniform(0.8, 1.2, size=3)
        angle = rng.uniform(0.0, np.pi)
        centre = np.unravel_index(lung_voxels[rng.integers(lung_voxels.size)], labels.shape)
        reach = [int(np.ceil(radii.max() / s)) + 1 for s in spacing]
        lo = [max(0, int(c) - r) for c, r in zip(centre, reach, strict=True)]
        hi = [min(n, int(c) + r + 1) for c, n, r in zip(centre, labels.shape, reach, strict=True)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        oz = ((np.arange(lo[0], hi[0]) - centre[0]) * dz)[:, None, None]
        oy = ((np.arange(lo[1], hi[1]) - centre[1]) * dy)[None, :, None]
        ox = ((np.arange(lo[2], hi[2]) - centre[2]) * dx)[None, None, :]
        # Rotate in-plane so the nodule's axes are not always aligned with the grid.
        u = ox * np.cos(angle) + oy * np.sin(angle)
        v = -ox * np.sin(angle) + oy * np.cos(angle)
        inside = (u / radii[2]) ** 2 + (v / radii[1]) ** 2 + (oz / radii[0]) ** 2 <= 1.0
        if not inside.any():
            continue
        in_lung = labels[box] == LUNG
        if (inside & in_lung).sum() < 0.85 * inside.sum():
            continue
        nodule = inside & in_lung
        region = hu[box]
        region[nodule] = rng.uniform(20.0, 60.0)
        labels[box][nodule] = LESION
        return 1
    return 0


def blur_inplane(hu: np.ndarray, passes: int) -> None:
    """Soften edges in place with a [1, 2, 1]/4 kernel along rows and columns.

    Real reconstructions have a point-spread function; a phantom with razor edges
    teaches a network to expect edges no scanner produces.
    """
    for _ in range(passes):
        for axis in (1, 2):
            lead = [slice(None)] * 3
            lag = [slice(None)] * 3
            lead[axis] = slice(1, None)
            lag[axis] = slice(None, -1)
            shifted_up = np.empty_like(hu)
            shifted_up[tuple(lag)] = hu[tuple(lead)]
            edge = [slice(None)] * 3
            edge[axis] = slice(-1, None)
            shifted_up[tuple(edge)] = hu[tuple(edge)]
            shifted_down = np.empty_like(hu)
            shifted_down[tuple(lead)] = hu[tuple(lag)]
            edge[axis] = slice(0, 1)
            shifted_down[tuple(edge)] = hu[tuple(edge)]
            hu *= 0.5
            hu += 0.25 * (shifted_up + shifted_down)
