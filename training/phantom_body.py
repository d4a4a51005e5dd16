"""The body of a synthetic chest phantom: everything but the lung interior.

Table, body wall, ribs, spine, sternum, aorta, heart, liver, bowel gas and trachea,
drawn in HU into the volume, and the two lungs' 3D mask carved out of the chest
cavity. The random draws are taken in a fixed order, so a seed gives one phantom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.anatomy import (
    AIR_HU,
    Anatomy,
    body_radius,
    ellipse,
    fill_slices,
    lung_profile,
    paint,
)


@dataclass(frozen=True)
class _Spine:
    """Where the vertebral body is drawn, in mm: centre and radius."""

    cx: float
    cy: float
    r: float


def draw_body(
    rng: np.random.Generator,
    a: Anatomy,
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
) -> np.ndarray:
    """Draw everything but the lung interior; return the 3D lung mask.

    The parts are drawn in a fixed order: each takes its random draws from ``rng`` in
    turn, so a seed gives one phantom.
    """
    cavity = _draw_wall(rng, a, hu, x, y, z)
    spine = _draw_spine(rng, a, hu, x, y, z)
    aorta = _draw_sternum_and_aorta(rng, a, hu, x, y, spine)
    lung, t = _draw_chest_organs(rng, a, hu, x, y, z, cavity, spine, aorta)
    _draw_trachea(rng, a, hu, x, y, t, spine)
    return lung


def _draw_wall(
    rng: np.random.Generator,
    a: Anatomy,
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
) -> np.ndarray:
    """Table, fat, muscle and ribs; the 2D mask of the chest cavity inside them."""
    body = body_radius(a, x, y, 0.0) < 1.0
    inner = body_radius(a, x, y, a.fat) < 1.0
    cavity = body_radius(a, x, y, a.fat + a.muscle + 6.0) < 1.0
    _draw_table(rng, hu, x, y, a.cy + a.half_depth_back)
    hu[:, body] = rng.uniform(-120.0, -85.0)
    hu[:, inner] = rng.uniform(35.0, 60.0)
    hu[:, cavity] = rng.uniform(20.0, 45.0)  # mediastinal soft tissue and fat, averaged
    _draw_ribs(rng, a, hu, x, y, z)
    return cavity


def _draw_spine(
    rng: np.random.Generator,
    a: Anatomy,
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
) -> _Spine:
    """Vertebral body (cancellous core, cortical rim), canal, spinous process."""
    back = a.cy + a.half_depth_back
    spine_r = rng.uniform(14.0, 22.0)
    spine_cx = a.cx + rng.uniform(-4.0, 4.0)
    spine_cy = back - (a.fat + a.muscle) - spine_r * rng.uniform(1.6, 2.2)
    vertebra = ellipse(x, y, spine_cx, spine_cy, spine_r, spine_r * 0.9)
    canal_cy = spine_cy + spine_r * 1.3
    canal = ellipse(x, y, spine_cx, canal_cy, 7.0, 6.0) < 1.0
    arch = (ellipse(x, y, spine_cx, canal_cy, 13.0, 11.0) < 1.0) & ~canal
    process = (np.abs(x - spine_cx) < 4.0) & (y > canal_cy) & (y < canal_cy + 28.0)
    # Intervertebral discs interrupt the bone every ~25 mm.
    disc_period = rng.uniform(22.0, 30.0)
    in_disc = ((z + rng.uniform(0, disc_period)) % disc_period) < rng.uniform(4.0, 8.0)
    bone_hu = np.where(in_disc, np.float32(80.0), np.float32(rng.uniform(200.0, 350.0)))
    rim_hu = np.where(in_disc, np.float32(90.0), np.float32(rng.uniform(700.0, 1000.0)))
    paint(hu, vertebra < 1.0, rim_hu)
    paint(hu, vertebra < 0.75, bone_hu)
    paint(hu, arch | process, rim_hu * 0.8)
    hu[:, canal] = rng.uniform(10.0, 35.0)
    return _Spine(cx=spine_cx, cy=spine_cy, r=spine_r)


def _draw_sternum_and_aorta(
    rng: np.random.Generator,
    a: Anatomy,
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    spine: _Spine,
) -> np.ndarray:
    """The sternum in front of the mediastinum, the descending aorta beside the spine;
    the aorta's 2D mask."""
    front = a.cy - a.half_depth_front
    sternum = ellipse(x, y, a.cx, front + a.fat + a.muscle * 0.6, 14.0, 5.0) < 1.0
    hu[:, sternum] = rng.uniform(300.0, 600.0)
    aorta_r = rng.uniform(10.0, 15.0)
    aorta_cx = spine.cx + spine.r + aorta_r * 0.6
    aorta = ellipse(x, y, aorta_cx, spine.cy - spine.r * 0.6, aorta_r, aorta_r) < 1.0
    hu[:, aorta] = rng.uniform(30.0, 50.0)
    return aorta


def _draw_chest_organs(
    rng: np.random.Generator,
    a: Anatomy,
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    cavity: np.ndarray,
    spine: _Spine,
    aorta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Lungs (two perturbed ellipses inside the rib cage, carved by the mediastinum),
    heart, liver and bowel gas; the 3D lung mask and each slice's position along the
    lungs (mm from their widest level, towards the apex)."""
    cage_inset = a.fat + a.muscle
    cavity_a = a.half_width - cage_inset - 6.0
    cavity_b = 0.5 * (a.half_depth_front + a.half_depth_back) - cage_inset - 6.0
    heart_cx = a.cx + rng.uniform(5.0, 30.0)
    heart_cy = a.cy - rng.uniform(5.0, 25.0)
    heart_a = cavity_a * rng.uniform(0.3, 0.42)
    heart = ellipse(x, y, heart_cx, heart_cy, heart_a, cavity_b * rng.uniform(0.45, 0.65)) < 1.0
    mediastinum = (
        (np.abs(x - a.cx) < cavity_a * rng.uniform(0.1, 0.2))
        | (ellipse(x, y, spine.cx, spine.cy, spine.r + 6.0, spine.r + 6.0) < 1.0)
        | aorta
    )
    lung = np.zeros(hu.shape, dtype=bool)
    for side in (-1.0, 1.0):
        lung |= _lung_mask(rng, a, x, y, z, side, cavity_a, cavity_b)
    lung &= (cavity & ~mediastinum)[None]

    # Heart in the lower half of the lungs; liver below the right lung's base.
    t = (z - a.lung_z_centre) * (-1.0 if a.flip_z else 1.0)
    heart_slices = (t < a.lung_up * 0.35) & (t > -a.lung_down * 1.2)
    fill_slices(lung, heart_slices, heart, False)
    fill_slices(hu, heart_slices, heart, rng.uniform(30.0, 50.0))
    liver_slices = t < -a.lung_down * 0.55
    liver = cavity & (
        ellipse(x, y, a.cx - cavity_a * 0.35, a.cy, cavity_a * 0.95, cavity_b * 1.2) < 1.0
    )
    fill_slices(lung, liver_slices, liver, False)
    fill_slices(hu, liver_slices, liver, rng.uniform(50.0, 70.0))

    # Bowel gas below the lung bases: air inside the body that is not lung.
    abdomen_slices = t < -a.lung_down * 0.6
    gut = cavity & ~liver & ~mediastinum
    _draw_bowel_gas(rng, hu, lung, abdomen_slices, gut, x, y, z)
    return lung, t


def _draw_trachea(
    rng: np.random.Generator,
    a: Anatomy,
    hu: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    t: np.ndarray,
    spine: _Spine,
) -> None:
    """The trachea, air in front of the spine above the lungs' widest level."""
    trachea_slices = t > a.lung_up * 0.3
    trachea_cx = spine.cx + rng.uniform(-3, 3)
    trachea_a = rng.uniform(7.0, 11.0)
    trachea_b = rng.uniform(7.0, 10.0)
    trachea = ellipse(x, y, trachea_cx, spine.cy - spine.r - 16.0, trachea_a, trachea_b) < 1.0
    fill_slices(hu, trachea_slices, trachea, AIR_HU + rng.uniform(0.0, 30.0))


def _lung_mask(
    rng: np.random.Generator,
    a: Anatomy,
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
    q = ellipse(x, y, lcx, lcy, la, lb) / wobble**2
    up, down = a.lung_up * rng.uniform(0.9, 1.1), a.lung_down * rng.uniform(0.9, 1.1)
    scale = lung_profile(a, z, up, down)
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
    a: Anatomy,
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
    radius = np.sqrt(body_radius(a, x, y, inset))
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
