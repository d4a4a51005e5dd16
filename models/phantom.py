"""Synthetic chest-CT phantoms: the training and test data of the demonstration models.

A phantom is a CT-like volume in Hounsfield units with a voxel-exact ground truth:
air around the body, subcutaneous fat, muscle, ribs, spine, sternum, mediastinum,
trachea, two textured lungs with vessels, and optionally nodules inside the lungs.
Every shape is drawn in millimetres, so the same anatomy comes out at any spacing
and matrix size. Only numpy is used, and every structure is drawn from 2D maps
broadcast along the slices, so a 40x512x512 phantom takes well under a second.

Axes follow DICOM display: slices, rows (anterior to posterior), columns (patient
right to left).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND = 0
LUNG = 1
LESION = 2

AIR_HU = -1000.0


@dataclass
class Phantom:
    """A synthetic CT volume and its ground truth.

    ``hu`` is float32 (slices, rows, columns) in HU; ``labels`` is uint8 of the same
    shape with 0 background, 1 lung (lesions excluded), 2 lesion. ``has_lesion`` is
    True when at least one lesion voxel was placed (a lesion needs lung to sit in).
    ``spacing`` is (between slices, between rows, between columns) in mm.
    """

    hu: np.ndarray
    labels: np.ndarray
    has_lesion: bool
    spacing: tuple[float, float, float]


def random_geometry(
    rng: np.random.Generator, slices: int
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """A scanner-like matrix and spacing: 256 or 512 px, 1-5 mm slices, varied field of view.

    Most fields of view fit the body (260-460 mm); one in ten is a zoomed
    reconstruction (180-260 mm) that cuts the body off, as targeted recons do.
    """
    size = int(rng.choice([256, 512]))
    zoomed = rng.random() < 1 / 10
    fov = rng.uniform(180.0, 260.0) if zoomed else rng.uniform(260.0, 460.0)
    pixel = float(fov / size)
    slice_spacing = float(rng.choice([1.0, 1.25, 2.0, 2.5, 3.0, 5.0]))
    return (slices, size, size), (slice_spacing, pixel, pixel)


def make_phantom(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = (40, 256, 256),
    spacing: tuple[float, float, float] = (2.5, 1.4, 1.4),
    lesions: int = 0,
    abdomen_chance: float = 0.0,
) -> Phantom:
    """Draw one random chest phantom with up to ``lesions`` nodules in its lungs.

    With probability ``abdomen_chance`` the whole volume lies below the lung bases
    instead (an upper-abdomen scan, bowel gas and no lung): training data uses this so
    that a network learns air inside the body is not necessarily lung.
    """
    slices, rows, cols = shape
    dz, dy, dx = spacing
    z = ((np.arange(slices) - (slices - 1) / 2) * dz).astype(np.float32)
    y = ((np.arange(rows) - (rows - 1) / 2) * dy).astype(np.float32)[:, None]
    x = ((np.arange(cols) - (cols - 1) / 2) * dx).astype(np.float32)[None, :]
    anatomy = _sample_anatomy(rng, z, abdomen_chance)

    hu = np.full(shape, AIR_HU, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    lung = _draw_body(rng, anatomy, hu, x, y, z)
    _draw_lung_parenchyma(rng, anatomy, hu, lung, x, y, z, spacing)
    labels[lung] = LUNG

    placed = 0
    for _ in range(lesions):
        placed += _draw_lesion(rng, hu, labels, spacing)

    _blur_inplane(hu, passes=int(rng.integers(0, 3)))
    sigma = float(rng.uniform(6.0, 30.0))
    hu += rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    return Phantom(hu=hu, labels=labels, has_lesion=placed > 0, spacing=spacing)


@dataclass
class _Anatomy:
    """The random sizes and positions of one phantom, in mm."""

    cx: float
    cy: float
    half_width: float
    half_depth_front: float
    half_depth_back: float
    fat: float
    muscle: float
    lung_z_centre: float
    lung_up: float  # lung extent from its widest slice towards the apex
    lung_down: float  # ... and towards the diaphragm
    flip_z: bool


def _sample_anatomy(rng: np.random.Generator, z: np.ndarray, abdomen_chance: float) -> _Anatomy:
    half_width = rng.uniform(120.0, 185.0)
    extent = float(z.max() - z.min()) if z.size > 1 else 0.0
    lung_down = rng.uniform(50.0, 90.0)
    flip_z = bool(rng.random() < 0.5)
    # The lungs' widest level sits anywhere within the scanned range (and a little
    # beyond), so some volumes catch the apex, the bases or no lung at all.
    lung_z_centre = rng.uniform(-0.6, 0.6) * extent + rng.uniform(-20.0, 20.0)
    if rng.random() < abdomen_chance:
        # An upper-abdomen volume: every slice lies below the lung bases.
        below = lung_down + rng.uniform(5.0, 60.0)
        lung_z_centre = z.min() - below if flip_z else z.max() + below
    return _Anatomy(
        cx=rng.uniform(-15.0, 15.0),
        cy=rng.uniform(-10.0, 25.0),
        half_width=half_width,
        half_depth_front=half_width * rng.uniform(0.55, 0.8),
        half_depth_back=half_width * rng.uniform(0.5, 0.7),
        fat=rng.uniform(4.0, 30.0),
        muscle=rng.uniform(8.0, 20.0),
        lung_z_centre=float(lung_z_centre),
        lung_up=rng.uniform(110.0, 170.0),
        lung_down=lung_down,
        flip_z=flip_z,
    )


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Squared normalised radius of an axis-aligned ellipse (< 1 inside), 2D."""
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2


def _body_radius(anatomy: _Anatomy, x: np.ndarray, y: np.ndarray, inset: float) -> np.ndarray:
    """Squared normalised radius of the body outline shrunk by ``inset`` mm.

    The back is flatter than the front, as a supine patient's is.
    """
    a = anatomy.half_width - inset
    front = anatomy.half_depth_front - inset
    back = anatomy.half_depth_back - inset
    b = np.where(y < anatomy.cy, front, back)
    return ((x - anatomy.cx) / a) ** 2 + ((y - anatomy.cy) / b) ** 2


def _lung_profile(anatomy: _Anatomy, z: np.ndarray, up: float, down: float) -> np.ndarray:
    """Per-slice scale of a lung's cross-section: 0 outside it, 1 at its widest."""
    t = (z - anatomy.lung_z_centre) * (-1.0 if anatomy.flip_z else 1.0)
    rel = np.where(t >= 0, t / up, t / down)
    return np.sqrt(np.clip(1.0 - rel**2, 0.0, 1.0)).astype(np.float32)


def _draw_body(
    rng: np.random.Generator,
    a: _Anatomy,
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
) -> np.ndarray:
    """Draw everything but the lung interior; return the 3D lung mask."""
    body = _body_radius(a, x, y, 0.0) < 1.0
    inner = _body_radius(a, x, y, a.fat) < 1.0
    cage_inset = a.fat + a.muscle
    cavity = _body_radius(a, x, y, cage_inset + 6.0) < 1.0
    back = a.cy + a.half_depth_back

    _draw_table(rng, hu, x, y, back)
    hu[:, body] = rng.uniform(-120.0, -85.0)
    hu[:, inner] = rng.uniform(35.0, 60.0)
    hu[:, cavity] = rng.uniform(20.0, 45.0)  # mediastinal soft tissue and fat, averaged
    _draw_ribs(rng, a, hu, x, y, z)

    # Spine: vertebral body (cancellous core, cortical rim), canal, spinous process.
    spine_r = rng.uniform(14.0, 22.0)
    spine_cx = a.cx + rng.uniform(-4.0, 4.0)
    spine_cy = back - cage_inset - spine_r * rng.uniform(1.6, 2.2)
    vertebra = _ellipse(x, y, spine_cx, spine_cy, spine_r, spine_r * 0.9)
    canal_cy = spine_cy + spine_r * 1.3
    canal = _ellipse(x, y, spine_cx, canal_cy, 7.0, 6.0) < 1.0
    arch = (_ellipse(x, y, spine_cx, canal_cy, 13.0, 11.0) < 1.0) & ~canal
    process = (np.abs(x - spine_cx) < 4.0) & (y > canal_cy) & (y < canal_cy + 28.0)
    # Intervertebral discs interrupt the bone every ~25 mm.
    disc_period = rng.uniform(22.0, 30.0)
    in_disc = ((z + rng.uniform(0, disc_period)) % disc_period) < rng.uniform(4.0, 8.0)
    bone_hu = np.where(in_disc, np.float32(80.0), np.float32(rng.uniform(200.0, 350.0)))
    rim_hu = np.where(in_disc, np.float32(90.0), np.float32(rng.uniform(700.0, 1000.0)))
    _paint(hu, vertebra < 1.0, rim_hu)
    _paint(hu, vertebra < 0.75, bone_hu)
    _paint(hu, arch | process, rim_hu * 0.8)
    hu[:, canal] = rng.uniform(10.0, 35.0)

    # Sternum, in front of the mediastinum.
    front = a.cy - a.half_depth_front
    sternum = _ellipse(x, y, a.cx, front + a.fat + a.muscle * 0.6, 14.0, 5.0) < 1.0
    hu[:, sternum] = rng.uniform(300.0, 600.0)

    # Descending aorta beside the spine; trachea in front of it.
    aorta_r = rng.uniform(10.0, 15.0)
    aorta = (
        _ellipse(
            x, y, spine_cx + spine_r + aorta_r * 0.6, spine_cy - spine_r * 0.6, aorta_r, aorta_r
        )
        < 1.0
    )
    hu[:, aorta] = rng.uniform(30.0, 50.0)

    # Lungs: two perturbed ellipses inside the rib cage, carved by the mediastinum.
    cavity_a = a.half_width - cage_inset - 6.0
    cavity_b = 0.5 * (a.half_depth_front + a.half_depth_back) - cage_inset - 6.0
    heart = (
        _ellipse(
            x,
            y,
            a.cx + rng.uniform(5.0, 30.0),
            a.cy - rng.uniform(5.0, 25.0),
            cavity_a * rng.uniform(0.3, 0.42),
            cavity_b * rng.uniform(0.45, 0.65),
        )
        < 1.0
    )
    mediastinum = (
        (np.abs(x - a.cx) < cavity_a * rng.uniform(0.1, 0.2))
        | (_ellipse(x, y, spine_cx, spine_cy, spine_r + 6.0, spine_r + 6.0) < 1.0)
        | aorta
    )
    lung = np.zeros(hu.shape, dtype=bool)
    for side in (-1.0, 1.0):
        lung |= _lung_mask(rng, a, x, y, z, side, cavity_a, cavity_b)
    lung &= (cavity & ~mediastinum)[None]

    # Heart in the lower half of the lungs; liver below the right lung's base.
    t = (z - a.lung_z_centre) * (-1.0 if a.flip_z else 1.0)
    heart_slices = (t < a.lung_up * 0.35) & (t > -a.lung_down * 1.2)
    _fill(lung, heart_slices, heart, False)
    _fill(hu, heart_slices, heart, rng.uniform(30.0, 50.0))
    liver_slices = t < -a.lung_down * 0.55
    liver = cavity & (
        _ellipse(x, y, a.cx - cavity_a * 0.35, a.cy, cavity_a * 0.95, cavity_b * 1.2) < 1.0
    )
    _fill(lung, liver_slices, liver, False)
    _fill(hu, liver_slices, liver, rng.uniform(50.0, 70.0))

    # Bowel gas below the lung bases: air inside the body that is not lung.
    abdomen_slices = t < -a.lung_down * 0.6
    gut = cavity & ~liver & ~mediastinum
    _draw_bowel_gas(rng, hu, lung, abdomen_slices, gut, x, y, z)

    trachea_slices = t > a.lung_up * 0.3
    trachea = (
        _ellipse(
            x,
            y,
            spine_cx + rng.uniform(-3, 3),
            spine_cy - spine_r - 16.0,
            rng.uniform(7.0, 11.0),
            rng.uniform(7.0, 10.0),
        )
        < 1.0
    )
    _fill(hu, trachea_slices, trachea, AIR_HU + rng.uniform(0.0, 30.0))
    return lung


def _lung_mask(
    rng: np.random.Generator,
    a: _Anatomy,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    side: float,
    cavity_a: float,
    cavity_b: float,
) -> np.ndarray:
    """One lung as a 3D mask: a wobbly ellipse whose size follows the lung profile."""
    lcx = a.cx + side * cavity_a * rng.uniform(0.45, 0.58)
    lcy = a.cy + rng.uniform(-0.05, 0.15) * cavity_b
    la = cavity_a * rng.uniform(0.42, 0.55)
    lb = cavity_b * rng.uniform(0.8, 1.0)
    theta = np.arctan2(y - lcy, x - lcx)
    wobble = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        wobble += rng.uniform(0.0, 0.08 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    q = _ellipse(x, y, lcx, lcy, la, lb) / wobble**2
    up, down = a.lung_up * rng.uniform(0.9, 1.1), a.lung_down * rng.uniform(0.9, 1.1)
    scale = _lung_profile(a, z, up, down)
    return q.astype(np.float32)[None] < (scale**2)[:, None, None]


def _draw_bowel_gas(
    rng: np.random.Generator,
    hu: np.ndarray,
    lung: np.ndarray,
    on_slices: np.ndarray,
    gut: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
) -> None:
    """Gas and mottled stool pockets in the abdomen, as ellipsoids clipped to the gut.

    Without them the only air inside a phantom's body is lung (and trachea), and a
    network learns that any dark pocket in soft tissue is lung with a nodule beside it.
    """
    slices = np.flatnonzero(on_slices)
    rows, cols = np.nonzero(gut)
    if slices.size == 0 or rows.size == 0:
        return
    for _ in range(int(rng.integers(2, 13))):
        pick = rng.integers(rows.size)
        cz, cy, cx = z[slices[rng.integers(slices.size)]], y[rows[pick], 0], x[0, cols[pick]]
        ry, rx, rz = rng.uniform(4.0, 22.0), rng.uniform(4.0, 22.0), rng.uniform(5.0, 40.0)
        zs = np.flatnonzero((np.abs(z - cz) < rz) & on_slices)
        rs = np.flatnonzero(np.abs(y[:, 0] - cy) < ry)
        cs = np.flatnonzero(np.abs(x[0] - cx) < rx)
        if not (zs.size and rs.size and cs.size):
            continue
        inside = (
            ((z[zs] - cz) / rz)[:, None, None] ** 2
            + ((y[rs, 0] - cy) / ry)[None, :, None] ** 2
            + ((x[0, cs] - cx) / rx)[None, None, :] ** 2
        ) < 1.0
        box = np.ix_(zs, rs, cs)
        inside &= gut[np.ix_(rs, cs)][None] & ~lung[box]
        region = hu[box]
        if rng.random() < 0.4:
            stool = np.where(rng.random(inside.shape) < 0.5, np.float32(-950.0), np.float32(20.0))
            region[inside] = stool[inside]
        else:
            region[inside] = rng.uniform(-1000.0, -960.0)
        hu[box] = region


def _draw_ribs(
    rng: np.random.Generator,
    a: _Anatomy,
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
) -> None:
    """Ribs as arcs of a band inside the muscle layer, cut by a slanted periodic pattern.

    Ribs slope down towards the front, so an axial slice cuts each one as a short arc
    whose position moves round the chest from slice to slice.
    """
    inset = a.fat + a.muscle * rng.uniform(0.3, 0.6)
    radius = np.sqrt(_body_radius(a, x, y, inset))
    thickness = rng.uniform(5.0, 9.0) / a.half_width
    band = (np.abs(radius - 1.0) < thickness / 2) & (y < a.cy + a.half_depth_back * 0.8)
    rows, cols = np.nonzero(band)
    if rows.size == 0:
        return
    theta = np.arctan2(y[rows, 0] - a.cy, x[0, cols] - a.cx)
    # Angle away from the spine (posterior midline, +pi/2): ribs descend from there.
    from_spine = np.abs(np.angle(np.exp(1j * (theta - np.pi / 2))))
    period = rng.uniform(24.0, 34.0)
    slope = rng.uniform(60.0, 100.0)  # mm of height change per radian round the chest
    phase = (z[:, None] + slope * from_spine[None]) / period
    on = np.cos(2 * np.pi * phase + rng.uniform(0, 2 * np.pi)) > rng.uniform(0.2, 0.5)
    values = np.where(on, np.float32(rng.uniform(400.0, 900.0)), hu[:, rows, cols])
    hu[:, rows, cols] = values


def _draw_table(
    rng: np.random.Generator, hu: np.ndarray, x: np.ndarray, y: np.ndarray, back: float
) -> None:
    """A curved patient table under the back, two thin shells as carbon tables show."""
    if rng.random() < 0.2:
        return
    top = back + rng.uniform(2.0, 25.0)
    sag = rng.uniform(0.0, 0.0015)
    curve = top - sag * x**2
    value = rng.uniform(100.0, 400.0)
    for offset in (0.0, rng.uniform(20.0, 40.0)):
        shell = np.abs(y - (curve + offset)) < rng.uniform(1.0, 2.5)
        hu[:, shell] = value


def _fill(volume: np.ndarray, on_slices: np.ndarray, mask2d: np.ndarray, value: float) -> None:
    """Set the pixels of a 2D mask to ``value`` on the chosen slices only."""
    rows, cols = np.nonzero(mask2d)
    volume[np.flatnonzero(on_slices)[:, None], rows[None, :], cols[None, :]] = value


def _paint(hu: np.ndarray, mask2d: np.ndarray, per_slice: np.ndarray) -> None:
    """Set the pixels of a 2D mask on every slice to that slice's value."""
    rows, cols = np.nonzero(mask2d)
    values = per_slice.astype(np.float32)[:, None]
    hu[:, rows, cols] = np.broadcast_to(values, (hu.shape[0], rows.size))


def _draw_lung_parenchyma(
    rng: np.random.Generator,
    a: _Anatomy,
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


def _draw_lesion(
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


def _blur_inplane(hu: np.ndarray, passes: int) -> None:
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
