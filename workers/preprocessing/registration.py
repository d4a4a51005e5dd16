"""Registration: a second series resampled onto the first's grid (SimpleITK).

Not a per-volume step: it takes two volumes. Mattes mutual information, so series of
different contrast (T1 onto T2, contrast onto native CT) align; a rigid or affine
transform, estimated coarse to fine from the geometric centres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk

from workers.errors import AnalysisError
from workers.preprocessing.bias import to_image
from workers.volume import Volume

# Fixed seed for the metric's random sampling, so a registration is reproducible.
_SAMPLING_SEED = 20240102


def resample(moving: Volume, fixed: Volume, transform: sitk.Transform) -> Volume:
    """``moving`` on ``fixed``'s grid (and with its headers), through ``transform``
    (fixed patient coordinates to moving ones); linear, outside filled with its minimum."""
    resampled = sitk.Resample(
        to_image(moving.voxels, moving),
        to_image(fixed.voxels, fixed),
        transform,
        sitk.sitkLinear,
        float(moving.voxels.min()),
    )
    return Volume(
        voxels=sitk.GetArrayFromImage(resampled).astype(np.float32, copy=False),
        spacing=fixed.spacing,
        origin=np.array(fixed.origin, dtype=np.float64),
        row_direction=np.array(fixed.row_direction, dtype=np.float64),
        column_direction=np.array(fixed.column_direction, dtype=np.float64),
        slice_direction=np.array(fixed.slice_direction, dtype=np.float64),
        datasets=fixed.datasets,
        frame_numbers=fixed.frame_numbers,
    )


@dataclass
class Registered:
    """``volume``: the moving series on the fixed series' grid (and its headers).
    ``transform`` maps fixed patient coordinates (mm) to moving ones; ``metric`` is
    the final mutual information (negative: lower is better)."""

    volume: Volume
    transform: sitk.Transform
    metric: float


def register(
    moving: Volume,
    fixed: Volume,
    transform: Literal["rigid", "affine"] = "rigid",
    *,
    sampling: float = 0.5,
    iterations: int = 300,
) -> Registered:
    """Align ``moving`` to ``fixed`` by Mattes mutual information; resample it linearly.

    Raises AnalysisError for an unknown transform kind or when the optimiser fails.
    """
    kinds = {"rigid": sitk.Euler3DTransform, "affine": sitk.AffineTransform}
    if transform not in kinds:
        raise AnalysisError(f"registration transform {transform!r} is not rigid or affine")
    fixed_image = to_image(fixed.voxels, fixed)
    moving_image = to_image(moving.voxels, moving)
    initial = sitk.CenteredTransformInitializer(
        fixed_image,
        moving_image,
        kinds[transform](3) if transform == "affine" else kinds[transform](),
        sitk.CenteredTransformInitializerFilter.GEOMETRY,
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, _SAMPLING_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-5,
        numberOfIterations=iterations,
        relaxationFactor=0.7,
        gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    levels = [f for f in (4, 2, 1) if min(fixed.shape[1:]) // f >= 16]
    method.SetShrinkFactorsPerLevel(levels)
    method.SetSmoothingSigmasPerLevel([max(0, f // 2) for f in levels])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    try:
        found = method.Execute(fixed_image, moving_image)
    except RuntimeError as exc:
        raise AnalysisError(f"registration failed: {exc}") from exc
    volume = resample(moving, fixed, found)
    return Registered(volume=volume, transform=found, metric=float(method.GetMetricValue()))
