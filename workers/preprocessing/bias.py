"""MR bias field correction (N4, Tustison et al. 2010) with SimpleITK.

The field is estimated on a shrunk copy, where N4 is tens of times faster, then
evaluated at full resolution (``GetLogBiasFieldAsImage`` of the full image: the field
is a B-spline, smooth by construction) and divided out.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from models.steps import N4BiasFieldStep
from workers.preprocessing.base import IntensityOperation
from workers.volume import Volume


def to_image(array: np.ndarray, volume: Volume) -> sitk.Image:
    """A SimpleITK image of a (slices, rows, columns) array on ``volume``'s geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing([float(s) for s in reversed(volume.spacing)])
    image.SetOrigin([float(v) for v in volume.origin])
    directions = np.column_stack(
        [volume.row_direction, volume.column_direction, volume.slice_direction]
    )
    image.SetDirection([float(v) for v in directions.ravel()])
    return image


class N4BiasField(N4BiasFieldStep, IntensityOperation):
    """Divide out a smooth multiplicative field: ``shrink`` for the estimate, ``iterations``
    per fitting level, statistics inside voxels above ``mask_above`` (Otsu when null).

    N4 works on logarithms; a volume with values at or below zero is shifted to a
    minimum of 1 for the estimate and shifted back after.
    """

    def adjust(self, array: np.ndarray, volume: Volume) -> np.ndarray:
        shift = float(1.0 - array.min()) if array.min() <= 0 else 0.0
        if shift:
            array += np.float32(shift)
        image = to_image(array, volume)
        if array.shape[0] == 1:  # one slice: N4's B-spline needs extent on every axis
            image = image[:, :, 0]
        factors = [self.shrink] * image.GetDimension()
        if image.GetDimension() == 3:
            factors[2] = max(1, min(self.shrink, array.shape[0] // 8))
        shrunk = sitk.Shrink(image, factors)
        if self.mask_above is None:
            mask = sitk.OtsuThreshold(shrunk, 0, 1, 200)
        else:
            mask = sitk.Cast(shrunk > self.mask_above + shift, sitk.sitkUInt8)
        corrector = sitk.N4BiasFieldCorrectionImageFilter()
        corrector.SetMaximumNumberOfIterations(list(self.iterations))
        corrector.Execute(shrunk, mask)
        log_field = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(image))
        array /= np.exp(log_field, dtype=np.float32).reshape(array.shape)
        if shift:
            array -= np.float32(shift)
        return array
