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

from training.anatomy import AIR_HU, BACKGROUND, LESION, LUNG, sample_anatomy
from training.phantom_body import draw_body
from training.phantom_lung import blur_inplane, draw_lesion, draw_lung_parenchyma

__all__ = [
    "AIR_HU",
    "BACKGROUND",
    "LESION",
    "LUNG",
    "Phantom",
    "make_phantom",
    "random_geometry",
]


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
    anatomy = sample_anatomy(rng, z, abdomen_chance)

    hu = np.full(shape, AIR_HU, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    lung = draw_body(rng, anatomy, hu, x, y, z)
    draw_lung_parenchyma(rng, anatomy, hu, lung, x, y, z, spacing)
    labels[lung] = LUNG

    placed = 0
    for _ in range(lesions):
        placed += draw_lesion(rng, hu, labels, spacing)

    blur_inplane(hu, passes=int(rng.integers(0, 3)))
    sigma = float(rng.uniform(6.0, 30.0))
    hu += rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    return Phantom(hu=hu, labels=labels, has_lesion=placed > 0, spacing=spacing)
