"""Pixel-value semantics: from stored values to the values a model is given.

This module owns what a decoded pixel value *means*, so that every image reaches a
model in one convention whatever the scanner wrote:

- the Modality LUT stage (PS3.3 C.11.1): Rescale Slope/Intercept, a Modality LUT
  Sequence, or, in enhanced multi-frame objects, the Pixel Value Transformation
  functional group of each frame. Its output are *modality values* (HU for CT);
- MONOCHROME1 polarity: such images display their smallest value as white, so the
  loader inverts them (within the range the modality values can take) to make a
  larger value brighter for every image. Quantitative values (CT in HU, any
  rescale with physical units) are never inverted: their numbers are the finding;
- which images are greyscale at all (colour is refused, and :func:`colour_refusal`
  says why);
- the VOI LUT stage: :func:`apply_voi` maps modality values through the image's
  own window or VOI LUT to display brightness in [0, 1], for preprocessing steps
  that want to see an image as the radiologist's viewer shows it.

``workers.load`` uses the first three while reading a series; nothing here knows
about slice geometry or files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from struct import unpack_from
from typing import TYPE_CHECKING

import numpy as np
from pydicom import Dataset
from pydicom.multival import MultiValue

if TYPE_CHECKING:  # pragma: no cover - a type only; importing it at run time is circular
    from workers.volume import Volume

# Rescale Types (and Modality LUT Types) that say nothing about physical units:
# "US" is "unspecified" (PS3.3 C.11.1.1.2). Any other type names a unit, and such
# values keep their sign and scale.
_UNSPECIFIED_UNITS = frozenset({"", "US"})
# Modalities whose modality values are physical quantities even when the Rescale
# Type is missing or unspecified (HU for CT, activity for PET and NM).
_QUANTITATIVE_MODALITIES = frozenset({"CT", "PT", "NM"})
_GREYSCALE = frozenset({"MONOCHROME1", "MONOCHROME2"})
_VOI_FUNCTIONS = frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"})


@dataclass(frozen=True, eq=False)
class ModalityTransform:
    """How one frame's stored values become modality values.

    Either a rescale (``slope`` and ``intercept``) or a lookup table ``lut`` whose
    first entry maps stored value ``first_mapped`` (PS3.3 C.11.1.1.1). ``units`` is
    the Rescale Type or Modality LUT Type ("" when absent).
    """

    slope: float = 1.0
    intercept: float = 0.0
    lut: np.ndarray | None = None
    first_mapped: int = 0
    units: str = ""

    def apply(self, stored: np.ndarray, out: np.ndarray) -> None:
        """Write the modality values of ``stored`` into the float32 array ``out``."""
        if self.lut is not None:
            # Values below the first mapped one take the first entry, values past
            # the table its last (PS3.3 C.11.1.1.1).
            index = np.asarray(stored, dtype=np.int64) - self.first_mapped
            np.clip(index, 0, len(self.lut) - 1, out=index)
            np.take(self.lut, index, out=out)
            return
        out[...] = stored
        if self.slope != 1.0:
            out *= np.float32(self.slope)
        if self.intercept != 0.0:
            out += np.float32(self.intercept)

    def value_range(self, stored_range: tuple[float, float]) -> tuple[float, float]:
        """The smallest and largest modality value stored values in range can take."""
        if self.lut is not None:
            return float(self.lut.min()), float(self.lut.max())
        ends = [self.slope * v + self.intercept for v in stored_range]
        return min(ends), max(ends)


def functional_groups(ds: Dataset, frame: int | None) -> tuple[Dataset, ...]:
    """The functional group items describing ``frame`` (1-based): per-frame, then shared.

    A macro is looked up in this order, as PS3.3 C.7.6.16 places it in one or the
    other. A single-frame image (``frame`` None) has no functional groups.
    """
    if frame is None:
        return ()
    groups: list[Dataset] = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and 0 < frame <= len(per_frame):
        groups.append(per_frame[frame - 1])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    return tuple(groups)


def group_macro(groups: Sequence[Dataset], sequence_keyword: str) -> Dataset | None:
    """The first item of functional group macro ``sequence_keyword`` in ``groups``."""
    for group in groups:
        sequence = group.get(sequence_keyword)
        if sequence:
            return sequence[0]
    return None


def modality_transform(ds: Dataset, groups: Sequence[Dataset] = ()) -> ModalityTransform:
    """The Modality LUT stage of an image, or of one frame given its functional groups.

    Enhanced objects carry it in the Pixel Value Transformation functional group
    (which may also hold a Modality LUT Sequence); classic images at the top level.
    Rescale wins over a Modality LUT Sequence when both are (invalidly) present, as
    the standard allows only one and a rescale is what scanners write.
    """
    source = group_macro(groups, "PixelValueTransformationSequence") or ds
    slope, intercept = source.get("RescaleSlope"), source.get("RescaleIntercept")
    if slope not in (None, "") or intercept not in (None, ""):
        return ModalityTransform(
            slope=float(slope) if slope not in (None, "") else 1.0,
            intercept=float(intercept) if intercept not in (None, "") else 0.0,
            units=str(source.get("RescaleType", "") or "").strip().upper(),
        )
    lut_sequence = source.get("ModalityLUTSequence") or ds.get("ModalityLUTSequence")
    if lut_sequence:
        item = lut_sequence[0]
        table, first_mapped = _lut_table(item, ds)
        return ModalityTransform(
            lut=table,
            first_mapped=first_mapped,
            units=str(item.get("ModalityLUTType", "") or "").strip().upper(),
        )
    return ModalityTransform()


def stored_value_range(ds: Dataset) -> tuple[float, float]:
    """The range Bits Stored and Pixel Representation allow for stored values."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation", 0) or 0):
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def is_quantitative(ds: Dataset, transform: ModalityTransform) -> bool:
    """Whether modality values are physical quantities (HU, activity, a named unit)."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    return modality in _QUANTITATIVE_MODALITIES or transform.units not in _UNSPECIFIED_UNITS


def inversion_pivot(ds: Dataset) -> float | None:
    """The constant ``p`` the loader inverts an image's values with (``p - v``), or None.

    None unless the image is MONOCHROME1 with non-quantitative values. ``p`` is the
    sum of the smallest and largest modality value the image can hold, so inverted
    values stay in the same range; it comes from the header alone (the top-level
    rescale or frame 1's), so that every slice of a series, and :func:`apply_voi`
    later, use the same constant. Float pixel data, with no Bits Stored, is negated.
    """
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric != "MONOCHROME1":
        return None
    frame = 1 if "PerFrameFunctionalGroupsSequence" in ds else None
    transform = modality_transform(ds, functional_groups(ds, frame))
    if is_quantitative(ds, transform):
        return None
    if "BitsStored" not in ds:  # float pixel data (PS3.3 C.7.6.24) has no integer range
        return 0.0
    low, high = transform.value_range(stored_value_range(ds))
    return low + high


def to_modality_values(
    stored: np.ndarray, transform: ModalityTransform, out: np.ndarray, pivot: float | None
) -> None:
    """Write the modality values of ``stored`` into ``out``, inverted when ``pivot`` is set."""
    transform.apply(stored, out)
    if pivot is not None:
        np.subtract(np.float32(pivot), out, out=out)


def colour_refusal(ds: Dataset) -> str | None:
    """Why an image cannot be analysed for its colour, or None for a greyscale image.

    Colour is refused rather than converted: every model this node runs takes one
    greyscale channel of measured intensities, and a grey value made from RGB (or
    from YBR, which pydicom's decoders would turn into RGB, or from a palette) is a
    display rendering, not a measurement a model was trained on.
    """
    photometric = str(ds.get("PhotometricInterpretation", "") or "MONOCHROME2").strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1 and photometric in _GREYSCALE:
        return None
    return (
        f"is a colour image ({ds.get('PhotometricInterpretation', 'unknown')}, "
        f"{samples} sample(s) per pixel): only greyscale images can be analysed, as the "
        "models take measured greyscale intensities and a grey value made from colour "
        "is a rendering, not a measurement"
    )


def apply_voi(
    values: Volume | np.ndarray,
    dataset: Dataset | None = None,
    *,
    index: int = 0,
    frame: int | None = None,
) -> np.ndarray:
    """Display brightness in [0, 1] (float32) of modality values, by the image's VOI.

    ``values`` are modality values as the loader makes them (a ``Volume`` or its
    voxel array, MONOCHROME1 already inverted); ``dataset`` holds the VOI LUT module
    (Window Center/Width with VOI LUT Function, or a VOI LUT Sequence), by default
    the volume's first slice. ``index`` picks one of several windows or LUTs. An
    enhanced object keeps its window in the Frame VOI LUT functional group: that of
    ``frame`` (1-based), by default the volume's first slice's frame or frame 1.
    A VOI LUT Sequence is preferred over a window when both are present, as
    pydicom does. Without any VOI the window spans the values' own range.

    The result is what a viewer shows: 1 is brightest, for MONOCHROME1 images too.
    """
    array = values.voxels if not isinstance(values, np.ndarray) else values
    if dataset is None:
        if isinstance(values, np.ndarray):
            raise ValueError("apply_voi needs the dataset holding the VOI of an array")
        dataset = values.datasets[0]
        if frame is None and values.frame_numbers:
            frame = values.frame_numbers[0]
    if frame is None and "PerFrameFunctionalGroupsSequence" in dataset:
        frame = 1
    voi = group_macro(functional_groups(dataset, frame), "FrameVOILUTSequence") or dataset

    modality = np.array(array, dtype=np.float32, copy=True)
    pivot = inversion_pivot(dataset)
    if pivot is not None:  # back to the values the window was chosen on
        np.subtract(np.float32(pivot), modality, out=modality)

    lut_sequence = voi.get("VOILUTSequence")
    if lut_sequence:
        item = lut_sequence[min(index, len(lut_sequence) - 1)]
        table, first_mapped = _lut_table(item, dataset)
        bits = int(item.LUTDescriptor[2])
        position = np.rint(modality).astype(np.int64) - first_mapped
        np.clip(position, 0, len(table) - 1, out=position)
        brightness = np.take(table, position) / np.float32(2**bits - 1)
    elif voi.get("WindowCenter") is not None and voi.get("WindowWidth") is not None:
        center = _pick(voi.WindowCenter, index)
        width = _pick(voi.WindowWidth, index)
        function = str(voi.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        brightness = _window(modality, center, width, function)
    else:
        low, high = (float(modality.min()), float(modality.max())) if modality.size else (0, 1)
        brightness = _window(modality, (low + high) / 2, max(high - low, 1e-6), "LINEAR_EXACT")

    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric == "MONOCHROME1":  # VOI output 0 is displayed white
        brightness = np.subtract(np.float32(1.0), brightness, dtype=np.float32)
    return brightness.astype(np.float32, copy=False)


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """A window of PS3.3 C.11.2.1.2/C.11.2.1.3 with its output scaled to [0, 1]."""
    if function not in _VOI_FUNCTIONS:
        raise ValueError(f"VOI LUT Function {function!r} is not LINEAR, LINEAR_EXACT or SIGMOID")
    if function == "LINEAR":
        if width < 1:
            raise ValueError(f"Window Width {width} is below 1, invalid for a LINEAR window")
        if width == 1:  # the standard's formula degenerates to a threshold
            return (values > center - 0.5).astype(np.float32)
        scaled = (values - np.float32(center - 0.5)) / np.float32(width - 1) + np.float32(0.5)
        return np.clip(scaled, 0.0, 1.0, out=scaled)
    if width <= 0:
        raise ValueError(f"Window Width {width} must be positive for a {function} window")
    if function == "LINEAR_EXACT":
        scaled = (values - np.float32(center)) / np.float32(width) + np.float32(0.5)
        return np.clip(scaled, 0.0, 1.0, out=scaled)
    exponent = np.clip(-4.0 * (values - np.float32(center)) / np.float32(width), -80, 80)
    return (1.0 / (1.0 + np.exp(exponent))).astype(np.float32)


def _pick(value: object, index: int) -> float:
    """Value ``index`` of a multi-valued attribute (the last when fewer), or the value."""
    if isinstance(value, (list, tuple, MultiValue)):
        return float(value[min(index, len(value) - 1)])
    return float(value)  # type: ignore[arg-type]


def _lut_table(item: Dataset, ds: Dataset) -> tuple[np.ndarray, int]:
    """A LUT item's table as float32 and the first stored value it maps.

    LUT Data is US (a list) or OW (bytes in the data set's byte order); an entry
    count of 0 means 65536 (PS3.3 C.11.1.1.1).
    """
    entries, first_mapped, _bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 2**16
    element = item["LUTData"]
    if isinstance(element.value, (bytes, bytearray)):
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID") if meta is not None else None
        if syntax is not None and syntax.is_transfer_syntax:
            little = bool(syntax.is_little_endian)
        else:
            little = ds.original_encoding[1] is not False
        order = "<" if little else ">"
        data = unpack_from(f"{order}{entries}H", element.value)
    else:
        value = element.value
        data = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    table = np.asarray(data, dtype=np.float32)
    if table.size == 0:
        raise ValueError("a LUT Data element holds no entries")
    return table, first_mapped
