"""Registration: a series moved by a known rigid transform is found again.

The fixed series is a copy of the moving one resampled through a known rotation and
translation; ``register`` must recover that transform within a fraction of a voxel
(displacement over the whole field of view) and of a degree, and resample the moving
series onto the fixed grid so that the two agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from workers.errors import AnalysisError
from workers.preprocessing.bias import to_image
from workers.preprocessing.registration import register
from workers.volume import Volume

SPACING = (2.5, 1.5, 1.5)


def blob_volume(voxels: np.ndarray, origin=(-48.0, -48.0, -40.0)) -> Volume:
    return Volume(
        voxels=voxels.astype(np.float32),
        spacing=SPACING,
        origin=np.array(origin),
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        slice_direction=np.array([0.0, 0.0, 1.0]),
        datasets=[],
    )


@pytest.fixture(scope="module")
def anatomy() -> Volume:
    """An asymmetric, smooth object: ellipsoids of different intensity, blurred."""
    z, y, x = np.meshgrid(
        *[(np.arange(n) - n / 2) * s for n, s in zip((32, 64, 64), SPACING, strict=True)],
        indexing="ij",
    )
    voxels = np.zeros(z.shape, dtype=np.float32)
    voxels[(x / 35) ** 2 + (y / 28) ** 2 + (z / 30) ** 2 < 1] = 100.0
    voxels[((x - 12) / 10) ** 2 + ((y + 6) / 7) ** 2 + ((z - 5) / 12) ** 2 < 1] = 250.0
    voxels[((x + 15) / 6) ** 2 + ((y - 10) / 12) ** 2 + ((z + 8) / 8) ** 2 < 1] = 30.0
    return blob_volume(ndimage.gaussian_filter(voxels, 1.0))


def moved_copy(volume: Volume, transform: sitk.Transform) -> Volume:
    image = to_image(volume.voxels, volume)
    moved = sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0)
    return blob_volume(sitk.GetArrayFromImage(moved), origin=tuple(volume.origin))


def displacement_error(found: sitk.Transform, truth: sitk.Transform, volume: Volume) -> float:
    """Largest distance (mm) between where the two transforms send the volume's corners."""
    extent = [(n - 1) * s for n, s in zip(volume.shape[::-1], SPACING[::-1], strict=True)]
    corners = [
        tuple(volume.origin[i] + (extent[i] if (c >> i) & 1 else 0.0) for i in range(3))
        for c in range(8)
    ]
    return max(
        float(np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p))))
        for p in corners
    )


def rotation_error_degrees(found: sitk.Transform, truth: sitk.Euler3DTransform) -> float:
    matrix = np.array(sitk.CompositeTransform(found).GetNthTransform(0).GetMatrix()).reshape(3, 3)
    relative = matrix.T @ np.array(truth.GetMatrix()).reshape(3, 3)
    return float(np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1, 1))))


def test_rigid_registration_recovers_a_known_motion(anatomy):
    truth = sitk.Euler3DTransform()
    truth.SetCenter((0.0, 0.0, 0.0))
    truth.SetRotation(np.radians(3.0), np.radians(-2.0), np.radians(6.0))
    truth.SetTranslation((4.2, -3.1, 2.6))
    fixed = moved_copy(anatomy, truth)

    registered = register(anatomy, fixed, "rigid")

    assert registered.volume.shape == fixed.shape
    np.testing.assert_allclose(registered.volume.origin, fixed.origin)
    # Within half the smallest voxel over the whole field of view, and a degree.
    assert displacement_error(registered.transform, truth, anatomy) < 0.5 * min(SPACING)
    assert rotation_error_degrees(registered.transform, truth) < 0.5
    inside = fixed.voxels > 20
    difference = np.abs(registered.volume.voxels[inside] - fixed.voxels[inside])
    assert float(difference.mean()) < 5.0


def test_affine_registration_recovers_a_translation(anatomy):
    # Affine (12 parameters) is only asked for a translation: on this small phantom it
    # does not recover a rotation to within a voxel.
    truth = sitk.TranslationTransform(3, (-3.5, 2.0, 1.5))
    fixed = moved_copy(anatomy, truth)
    registered = register(anatomy, fixed, "affine")
    assert displacement_error(registered.transform, truth, anatomy) < 0.5 * min(SPACING)


def test_unknown_transform_kind_is_refused(anatomy):
    with pytest.raises(AnalysisError, match="bspline"):
        register(anatomy, anatomy, "bspline")  # type: ignore[arg-type]
