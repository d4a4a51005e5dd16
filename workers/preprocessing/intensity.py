"""Intensity steps: windows, scales, normalisation, outliers and padding artefacts.

Percentiles and masked statistics are computed on at most ``_STATISTICS_SAMPLE``
voxels taken at a regular stride, which keeps them to tens of milliseconds on a
300-slice CT and makes them deterministic.
"""

from __future__ import annotations

import numpy as np

from models.steps import (
    ClipOutliersStep,
    MaskPaddingStep,
    PercentileScaleStep,
    ScaleStep,
    WindowStep,
    ZScoreStep,
)
from workers.pixels import functional_groups, inversion_pivot, modality_transform
from workers.preprocessing.base import IntensityOperation
from workers.volume import Volume

_STATISTICS_SAMPLE = 1 << 22


def _sample(array: np.ndarray, mask_above: float | None) -> np.ndarray:
    flat = array.reshape(-1)
    values = flat[:: max(1, flat.size // _STATISTICS_SAMPLE)]
    if mask_above is not None:
        inside = values[values > mask_above]
        # No voxel above the threshold: the whole volume is the best statistic left.
        values = inside if inside.size else values
    return values


def _percentile_range(
    array: np.ndarray, p_low: float, p_high: float, mask_above: float | None
) -> tuple[float, float]:
    low, high = np.percentile(_sample(array, mask_above), [p_low, p_high])
    return float(low), float(high)


class Window(WindowStep, IntensityOperation):
    """Clip to [low, high] (HU for CT)."""

    def adjust(self, array: np.ndarray, volume: Volume) -> np.ndarray:
        return np.clip(array, self.low, self.high, out=array)


class Scale(ScaleStep, IntensityOperation):
    """Map [low, high] linearly onto [0, 1]; values outside keep going (no clipping)."""

    def adjust(self, array: np.ndarray, volume: Volume) -> np.ndarray:
        array -= np.float32(self.low)
        array *= np.float32(1.0 / (self.high - self.low))
        return array


class ZScore(ZScoreStep, IntensityOperation):
    """Subtract a mean and divide by a standard deviation.

    Fixed ``mean`` and ``std`` when given (both or neither); otherwise the volume's own,
    over the voxels above ``mask_above`` when given (the body, not the air around it).
    """

    def adjust(self, array: np.ndarray, volume: Volume) -> np.ndarray:
        if self.mean is not None and self.std is not None:
            mean, std = self.mean, self.std
        elif self.mask_above is None:
            mean = float(array.mean(dtype=np.float64))
            std = float(array.std(dtype=np.float64))
        else:
            values = _sample(array, self.mask_above)
            mean = float(values.mean(dtype=np.float64))
            std = float(values.std(dtype=np.float64))
        array -= np.float32(mean)
        # A constant volume has no spread to divide by; leave it centred at zero.
        array *= np.float32(1.0 / std) if std > 0 else np.float32(1.0)
        return array


class PercentileScale(PercentileScaleStep, IntensityOperation):
    """Map the volume's [p_low, p_high] percentiles onto [0, 1], clipping outside."""

    def adjust(self, array: np.ndarray, volume: Volume) -> np.ndarray:
        low, high = _percentile_range(array, self.p_low, self.p_high, self.mask_above)
        if self.clip:
            np.clip(array, low, high, out=array)
        array -= np.float32(low)
        # A constant volume maps to zero.
        array *= np.float32(1.0 / (high - low)) if high > low else np.float32(0.0)
        return array


class ClipOutliers(ClipOutliersStep, IntensityOperation):
    """Clip values outside the volume's [p_low, p_high] percentiles (values unchanged else)."""

    def adjust(self, array: np.ndarray, volume: Volume) -> np.ndarray:
        low, high = _percentile_range(array, self.p_low, self.p_high, self.mask_above)
        return np.clip(array, low, high, out=array)


class MaskPadding(MaskPaddingStep, IntensityOperation):
    """Set padding voxels to ``fill`` before any normalisation sees them.

    Padding is every voxel equal to the image's Pixel Padding Value (or within Pixel
    Padding Range Limit), when ``pixel_padding_value`` is true and the header has one,
    and every voxel below ``below`` when given (CT's -2000 or -3024 outside the scan
    circle). Must come before any geometric step, while slice ``i`` is still the
    image ``datasets[i]`` whose header says what its padding is.
    """

    def adjust(self, array: np.ndarray, volume: Volume) -> np.ndarray:
        if self.below is not None:
            array[array < self.below] = np.float32(self.fill)
        if self.pixel_padding_value and volume.datasets:
            for index, plane in enumerate(array):
                interval = _padding_interval(volume, index)
                if interval is not None:
                    low, high = interval
                    plane[(plane >= low) & (plane <= high)] = np.float32(self.fill)
        return array


def _padding_interval(volume: Volume, index: int) -> tuple[float, float] | None:
    """The modality values slice ``index``'s padding takes, half a stored step wide."""
    ds = volume.datasets[min(index, len(volume.datasets) - 1)]
    padding = ds.get("PixelPaddingValue")
    if padding is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit", padding)
    frame = volume.frame_numbers[index] if volume.frame_numbers else None
    transform = modality_transform(ds, functional_groups(ds, frame))
    stored = np.array([min(padding, limit), max(padding, limit)], dtype=np.float64)
    values = np.empty(2, dtype=np.float32)
    transform.apply(stored, values)
    pivot = inversion_pivot(ds)
    if pivot is not None:
        values = np.float32(pivot) - values
    half_step = 0.5 * abs(transform.slope) if transform.lut is None else 0.0
    return float(values.min()) - half_step, float(values.max()) + half_step
