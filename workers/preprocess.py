"""The preprocessing entry points, kept where callers import them from.

The steps, ``Prepared`` and its inverse mapping live in ``workers.preprocessing``.
"""

from workers.preprocessing import (
    STEPS,
    GeometricOperation,
    IntensityOperation,
    Operation,
    Prepared,
    build_steps,
    preprocess,
    preprocess_array,
)
from workers.preprocessing.geometry import CanonicalOrientation, CropOrPad, Resample, ResizeInplane

__all__ = [
    "STEPS",
    "CanonicalOrientation",
    "CropOrPad",
    "GeometricOperation",
    "IntensityOperation",
    "Operation",
    "Prepared",
    "Resample",
    "ResizeInplane",
    "build_steps",
    "preprocess",
    "preprocess_array",
]
