"""Bringing a multimodal job's further series onto its primary series' grid.

This module owns the pipeline's register step (``align_inputs``). Each additional
input is either registered by mutual information (rigid or affine,
``workers.preprocessing.registration``) or, with ``registration: none``, resampled as
it lies in the shared patient coordinate system (same frame of reference).
"""

from __future__ import annotations

from collections.abc import Sequence

import SimpleITK as sitk

from models.manifest import SeriesInput
from workers.errors import SeriesNotAnalysable
from workers.preprocessing.registration import register, resample
from workers.volume import Volume


def resample_onto(moving: Volume, fixed: Volume) -> Volume:
    """``moving`` on ``fixed``'s grid with no motion assumed (identity transform)."""
    return resample(moving, fixed, sitk.Transform(3, sitk.sitkIdentity))


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
