"""A small PNG of a job's overlay: what the worklist shows beside a study.

The overlay is the job's Secondary Capture result (``ResultKind.SC``, written by
``workers.encode.sc``): one picture per slice that shows a segment (or the middle
slice), the segmentation and the findings burned in, nothing identifying the patient.
The thumbnail is the middle one of those pictures, in slice order, so it shows the
finding, scaled down to at most :data:`THUMBNAIL_PIXELS` on its longer side. Its
pixels are decoded only once its header shows they fit :data:`MAX_DECODED_BYTES`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

THUMBNAIL_PIXELS = 256
"""The longer side of a thumbnail, in pixels (a smaller image is not enlarged)."""

MAX_DECODED_BYTES = 64 * 1024 * 1024
"""The most a thumbnail's source picture may decode to."""


class ThumbnailError(Exception):
    """The overlay picture cannot be shown; the message says why."""


def middle(paths: Sequence[str]) -> str:
    """The middle of a job's overlay pictures, in slice order (the order they were kept)."""
    if not paths:
        raise ThumbnailError("the job has no overlay picture")
    return paths[len(paths) // 2]


def overlay_thumbnail(path: Path, pixels: int = THUMBNAIL_PIXELS) -> bytes:
    """The PNG of the overlay picture in ``path`` (its middle frame), at most ``pixels``
    wide and high, its aspect kept.

    Raises
    ------
    ThumbnailError
        When the file is gone, is not DICOM, holds no picture, or would decode too big.
    """
    try:
        dataset = dcmread(path, defer_size="1 MB")  # the pixels read once they are wanted
    except (OSError, InvalidDicomError) as exc:
        raise ThumbnailError(f"cannot read {path.name}: {exc}") from exc
    if "PixelData" not in dataset:
        raise ThumbnailError(f"{path.name} holds no picture")
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    samples = int(dataset.get("SamplesPerPixel", 1))
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    size = rows * columns * samples * frames * max(1, int(dataset.get("BitsAllocated", 8)) // 8)
    if size > MAX_DECODED_BYTES:
        raise ThumbnailError(f"{path.name} would decode to {size} bytes")
    try:
        array = dataset.pixel_array
    except (ValueError, TypeError, AttributeError, NotImplementedError, RuntimeError) as exc:
        raise ThumbnailError(f"cannot decode {path.name}: {exc}") from exc
    if frames > 1:
        array = array[frames // 2]
    image = _as_image(np.asarray(array), samples)
    image.thumbnail((pixels, pixels), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _as_image(array: np.ndarray, samples: int) -> Image.Image:
    """An RGB picture as it is (the overlay's own), a grey one spread over 0..255."""
    if samples == 3 and array.ndim == 3:
        return Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB")
    grey = array.astype(np.float32)
    low, high = (float(grey.min()), float(grey.max())) if grey.size else (0.0, 0.0)
    scaled = (grey - low) * (255.0 / (high - low)) if high > low else grey * 0
    return Image.fromarray(np.rint(scaled).astype(np.uint8), "L")
