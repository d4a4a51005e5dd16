"""The shared vocabulary of the synthetic chest phantoms (``training.phantom``).

Label values, Hounsfield units of air, one phantom's random anatomy (sizes and
positions in mm) and the 2D shape helpers every drawing module uses: shapes are drawn
as 2D maps broadcast along the slices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND = 0
LUNG = 1
LESION = 2

AIR_HU = -1000.0


@dataclass
class Anatomy:
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


def sample_anatomy(rng: np.random.Generator, z: np.ndarray, abdomen_chance: float) -> Anatomy:
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
    return Anatomy(
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


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Squared normalised radius of an axis-aligned ellipse (< 1 inside), 2D."""
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2


def body_radius(anatomy: Anatomy, x: np.ndarray, y: np.ndarray, inset: float) -> np.ndarray:
    """Squared normalised radius of the body outline shrunk by ``inset`` mm.

    The back is flatter than the front, as a supine patient's is.
    """
    a = anatomy.half_width - inset
    front = anatomy.half_depth_front - inset
    back = anatomy.half_depth_back - inset
    b = np.where(y < anatomy.cy, front, back)
    return ((x - anatomy.cx) / a) ** 2 + ((y - anatomy.cy) / b) ** 2


def lung_profile(anatomy: Anatomy, z: np.ndarray, up: float, down: float) -> np.ndarray:
    """Per-slice scale of a lung's cross-section: 0 outside it, 1 at its widest."""
    t = (z - anatomy.lung_z_centre) * (-1.0 if anatomy.flip_z else 1.0)
    rel = np.where(t >= 0, t / up, t / down)
    return np.sqrt(np.clip(1.0 - rel**2, 0.0, 1.0)).astype(np.float32)


def fill_slices(
    volume: np.ndarray, on_slices: np.ndarray, mask2d: np.ndarray, value: float
) -> None:
    """Set the pixels of a 2D mask to ``value`` on the chosen slices only."""
    rows, cols = np.nonzero(mask2d)
    volume[np.flatnonzero(on_slices)[:, None], rows[None, :], cols[None, :]] = value


def paint(hu: np.ndarray, mask2d: np.ndarray, per_slice: np.ndarray) -> None:
    """Set the pixels of a 2D mask on every slice to that slice's value."""
    rows, cols = np.nonzero(mask2d)
    values = per_slice.astype(np.float32)[:, None]
    hu[:, rows, cols] = np.broadcast_to(values, (hu.shape[0], rows.size))
