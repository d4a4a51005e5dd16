"""The 2D images of a series before they are stacked: :class:`Slice`.

This module owns what every slice carries (its data set, geometry as read, modality
transform), making a slice of a single-frame instance, agreeing the in-plane pixel
spacing of all slices, and decoding a single-frame instance's pixels. Multi-frame
instances become slices in :mod:`workers.load.multiframe`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset

from workers.errors import SeriesNotAnalysable
from workers.load.files import transfer_syntax_name
from workers.pixels import ModalityTransform, modality_transform, to_modality_values


@dataclass
class Slice:
    """One 2D image to place: a single-frame instance, or one frame of a multi-frame one.

    ``number`` names it in a refusal: the Instance Number, or the frame number.
    Geometry values are as read (None when absent) and checked later, together.
    """

    dataset: Dataset
    frame: int | None
    number: str
    position: Sequence[float] | None
    orientation: Sequence[float] | None
    pixel_spacing: tuple[float, float] | None
    thickness: object
    transform: ModalityTransform


def instance_slice(ds: Dataset) -> Slice:
    return Slice(
        dataset=ds,
        frame=None,
        number=str(ds.get("InstanceNumber", "?")),
        position=ds.get("ImagePositionPatient"),
        orientation=ds.get("ImageOrientationPatient"),
        pixel_spacing=instance_pixel_spacing(ds),
        thickness=ds.get("SliceThickness"),
        transform=modality_transform(ds),
    )


def common_pixel_spacing(slices: Sequence[Slice], unit: str) -> tuple[float, float]:
    values = {piece.pixel_spacing for piece in slices}
    if len(values) > 1:
        listed = ", ".join(
            "none" if v is None else f"{v[0]}x{v[1]} mm" for v in sorted(values, key=str)
        )
        raise SeriesNotAnalysable(f"the {unit}s have different pixel spacings: {listed}")
    spacing = values.pop()
    if spacing is None:
        if len(slices) > 1:
            raise SeriesNotAnalysable(
                f"the {unit}s have no valid PixelSpacing, so the slices cannot be placed in mm"
            )
        return (1.0, 1.0)
    return spacing


def instance_pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """PixelSpacing, else ImagerPixelSpacing (projection images), when positive."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            row, column = (round(float(v), 6) for v in value)
        except (TypeError, ValueError):
            continue
        if row > 0 and column > 0:
            return (row, column)
    return None


def decode_instance(piece: Slice, index: int, out: np.ndarray, pivot: float | None) -> None:
    """Decode one single-frame slice into ``out`` in modality values."""
    ds = piece.dataset
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise many kinds (missing plugin, corrupt stream)
        raise SeriesNotAnalysable(
            f"cannot decode the pixel data of slice {index + 1} (instance "
            f"{ds.get('InstanceNumber', '?')}, transfer syntax "
            f"{transfer_syntax_name(ds)}): {exc}"
        ) from exc
    if stored.shape != out.shape:
        raise SeriesNotAnalysable(
            f"instance {ds.get('InstanceNumber', '?')} decodes to shape {stored.shape}, "
            f"not one greyscale frame of {out.shape[0]}x{out.shape[1]}"
        )
    to_modality_values(stored, piece.transform, out, pivot)
