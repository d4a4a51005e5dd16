"""The gate's rules on the spatial measures a result states (part of the gate,
:mod:`workers.encode.conformance`).

A result that states a Pixel Spacing, Slice Thickness or Spacing Between Slices of
zero is invalid (dciodvfy: "Value is zero") and misleads any viewer measuring on it;
one that places frames in the patient (plane position or orientation) without
stating the Pixel Spacing cannot be measured at all. These rules check the top level
and every Pixel Measures item, shared or per frame. An encoder never writes such a
value (a source's zero spacing is dropped, ``workers.encode.identity``); the gate
makes sure of it.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom import Dataset
from pydicom.multival import MultiValue

_MEASURES = ("PixelSpacing", "SliceThickness", "SpacingBetweenSlices")
_PLACEMENT = ("PlanePositionSequence", "PlaneOrientationSequence")


def check_spatial_measures(ds: Dataset, kind: str) -> list[str]:
    """The problems with the spacings ``ds`` (a result of ``kind``, named in each) states."""
    problems = []
    for where, holder in _holders(ds):
        for keyword in _MEASURES:
            if keyword not in holder:
                continue
            value = holder.get(keyword)
            if not _positive(value, 2 if keyword == "PixelSpacing" else 1):
                problems.append(
                    f"{kind}: {keyword} {_shown(value)} in {where} is not positive "
                    "(a spacing of zero measures nothing)"
                )
    if _places_frames(ds) and not any("PixelSpacing" in h for _, h in _holders(ds)):
        problems.append(
            f"{kind}: frames are placed in the patient (plane position or orientation) "
            "without a Pixel Spacing in the Pixel Measures"
        )
    return problems


def _holders(ds: Dataset) -> Iterator[tuple[str, Dataset]]:
    """The data set and every Pixel Measures item of its functional groups, named."""
    yield "the data set", ds
    for keyword, what in (
        ("SharedFunctionalGroupsSequence", "the shared functional groups"),
        ("PerFrameFunctionalGroupsSequence", "frame"),
    ):
        for number, groups in enumerate(ds.get(keyword) or (), start=1):
            label = what if keyword.startswith("Shared") else f"{what} {number}"
            for item in groups.get("PixelMeasuresSequence") or ():
                yield f"the Pixel Measures of {label}", item


def _places_frames(ds: Dataset) -> bool:
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for groups in ds.get(keyword) or ():
            if any(groups.get(sequence) for sequence in _PLACEMENT):
                return True
    return False


def _values(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _positive(value: object, count: int) -> bool:
    values = _values(value)
    try:
        return len(values) == count and all(float(v) > 0 for v in values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _shown(value: object) -> str:
    return "'" + "\\".join(str(v) for v in _values(value)) + "'"
