"""Bringing a multimodal job's further series onto its primary series' grid.

This module owns the pipeline's register step (``align_inputs``). Each additional
input is either registered by mutual information (rigid or affine,
``workers.preprocessing.registration``) or, with ``registration: none``, resampled as
it lies in the shared patient coordinate system (same frame of reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from models.manifest import SeriesInput
from workers.errors import SeriesNotAnalysable
from workers.preprocessing.bias import to_image
from workers.preprocessing.registration import register
from workers.volume import Volume


def resample_onto(moving: Volume, fixed: Volume) -> Volume:
    """``moving`` on ``fixed``'s grid with no motion assumed (identity transform)."""
    fixed_image = to_image(fixed.voxels, fixed)
    resampled = sitk.Resample(
        to_image(moving.voxels, moving),
        fixed_image,
        sitk.Transform(3, sitk.sitkIdentity),
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


def align_inputs(
    primary: Volume, volumes: Sequence[Volume], specs: Sequence[SeriesInput]
) -> list[Volume]:
    """Every additional volume on the primary grid, in the manifest's order."""
    if len(volumes) != len(specs):
        raise SeriesNotAnalysable(
            f"the model takes {len(specs)} further series, {len(volumes)} were given"
        )
    aligned = []
    for volume, spec in zip(volumes, specs, strict=True):
        if spec.registration == "none":
            aligned.append(resample_onto(volume, primary))
        else:
            aligned.append(register(volume, primary, transform=spec.registration).volume)
    return aligned
