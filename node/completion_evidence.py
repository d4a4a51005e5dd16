"""What the receive path records for series completion, at no extra query.

From each header (already read, no pixel data) a few attributes that say how large
its series is (Number of Frames, Images in Acquisition, Number of Temporal Positions)
or where the instance lies in it (Temporal Position Identifier, its position along
the slice normal). Per instance, the position and temporal position go into the row
the index inserts anyway; per series, aggregates (instance count, lowest and highest
Instance Number, the largest sizes declared, the sender) are kept by the one UPDATE
that already touches the series for each instance (``SERIES_EVIDENCE``, the index's
``_TOUCH``). :mod:`node.completion_rules` judges them; nothing here decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from sqlalchemy import Integer, String, bindparam, case, or_
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from node.db.models import Series

_SERIES = Series.__table__


_IMAGE_POSITION = 0x00200032
_IMAGE_ORIENTATION = 0x00200037
_SLICE_LOCATION = 0x00201041


def _texts(ds: Dataset, tag: int) -> list[str]:
    """An IS or DS element's values as text. Read from the raw bytes when pydicom has
    not converted them yet: its conversion (DS validation) cost several times what the
    parsing here does, on every instance received."""
    element = ds.get_item(tag)
    value = None if element is None else element.value
    if value is None or value == b"" or value == "":
        return []
    if isinstance(element, RawDataElement):  # IS and DS are ASCII text
        return [part.strip(" \x00") for part in bytes(value).decode("ascii", "replace").split("\\")]
    if isinstance(value, MultiValue | list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def _integer(ds: Dataset, tag: int) -> int | None:
    texts = _texts(ds, tag)
    try:
        return int(texts[0]) if len(texts) == 1 else None
    except ValueError:
        return None


def _floats(ds: Dataset, tag: int) -> list[float]:
    try:
        numbers = [float(text) for text in _texts(ds, tag)]
    except ValueError:
        return []
    return numbers if all(math.isfinite(n) for n in numbers) else []


def slice_position(ds: Dataset) -> float | None:
    """The instance's position along its slice normal (mm): Image Position (Patient)
    projected on the cross product of the Image Orientation (Patient) directions, or
    else Slice Location; None when neither is usable."""
    position = _floats(ds, _IMAGE_POSITION)
    orientation = _floats(ds, _IMAGE_ORIENTATION)
    if len(position) == 3 and len(orientation) == 6:
        (rx, ry, rz), (cx, cy, cz) = orientation[:3], orientation[3:]
        normal = (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)
        if sum(n * n for n in normal) > 0.5:  # unit directions, nearly orthogonal
            along = sum(p * n for p, n in zip(position, normal, strict=True))
            if math.isfinite(along):
                return along
    location = _floats(ds, _SLICE_LOCATION)
    return location[0] if len(location) == 1 else None


@dataclass(frozen=True)
class HeaderEvidence:
    """The attributes of one header that completion judges by."""

    number_of_frames: int | None
    images_in_acquisition: int | None
    temporal_positions: int | None  # Number of Temporal Positions (0020,0105)
    temporal_position: int | None  # Temporal Position Identifier (0020,0100)
    slice_position: float | None  # mm along the slice normal (slice_position)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> HeaderEvidence:
        return cls(
            number_of_frames=_integer(ds, 0x00280008),  # Number of Frames
            images_in_acquisition=_integer(ds, 0x00201002),  # Images in Acquisition
            temporal_positions=_integer(ds, 0x00200105),  # Number of Temporal Positions
            temporal_position=_integer(ds, 0x00200100),  # Temporal Position Identifier
            slice_position=slice_position(ds),
        )

    @property
    def instance_columns(self) -> dict[str, Any]:
        """What the Instance row keeps of it."""
        return {"slice_position": self.slice_position, "temporal_position": self.temporal_position}


# Named apart from the columns: SQLAlchemy reserves a column's name for its own SET value.
_NUMBER = bindparam("evidence_number", type_=Integer)
_FRAMES = bindparam("evidence_frames", type_=Integer)
_IMAGES = bindparam("evidence_images", type_=Integer)
_TEMPORAL = bindparam("evidence_temporal", type_=Integer)
_SENDER = bindparam("evidence_sender", type_=String)


def _lowest(column: ColumnElement[Any], value: BindParameter[Any]) -> ColumnElement[Any]:
    return case(
        (value.is_(None), column), (or_(column.is_(None), value < column), value), else_=column
    )


def _highest(column: ColumnElement[Any], value: BindParameter[Any]) -> ColumnElement[Any]:
    return case(
        (value.is_(None), column), (or_(column.is_(None), value > column), value), else_=column
    )


# The SET clause the index adds to the UPDATE it runs for every new instance of a series.
SERIES_EVIDENCE: dict[str, ColumnElement[Any]] = {
    "instance_count": _SERIES.c.instance_count + 1,
    "min_instance_number": _lowest(_SERIES.c.min_instance_number, _NUMBER),
    "max_instance_number": _highest(_SERIES.c.max_instance_number, _NUMBER),
    "number_of_frames": _highest(_SERIES.c.number_of_frames, _FRAMES),
    "images_in_acquisition": _highest(_SERIES.c.images_in_acquisition, _IMAGES),
    "temporal_positions": _highest(_SERIES.c.temporal_positions, _TEMPORAL),
    "calling_ae_title": _SENDER,
}


def evidence_parameters(
    evidence: HeaderEvidence, instance_number: int | None, calling_aet: str
) -> dict[str, Any]:
    """The values ``SERIES_EVIDENCE`` takes for one new instance."""
    return {
        "evidence_number": instance_number,
        "evidence_frames": evidence.number_of_frames,
        "evidence_images": evidence.images_in_acquisition,
        "evidence_temporal": evidence.temporal_positions,
        "evidence_sender": calling_aet[:16],
    }
