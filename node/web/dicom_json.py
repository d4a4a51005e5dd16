"""The DICOM JSON model (PS3.18 Annex F) for the node's DICOMweb requests and answers.

Owns: a request payload read into a pydicom ``Dataset`` (one object, or an array of one
as UPS-RS clients send a workitem; anything else refused with :class:`DicomJsonError`),
a ``Dataset`` written as a DICOM JSON object with its attributes in tag order, and the
patient identifiers of such an object masked for roles that may not see them: the same
identifiers ``node.web.routes.schemas`` masks (name, ID, accession number; a birth date
is never shown to them), at any depth, since Other Patient IDs and a Referenced Request
Sequence's Accession Number sit in sequence items.
"""

from __future__ import annotations

import json
from typing import Any

from pydicom import Dataset
from pydicom.valuerep import VR

from node.web.routes.schemas import MASKED

MEDIA_TYPE = "application/dicom+json"

JsonObject = dict[str, Any]

_KNOWN_VRS = frozenset(vr.value for vr in VR)

# Patient identifiers, by tag as the JSON model writes it.
_MASKED_STRINGS = frozenset(
    {
        "00100020",  # Patient ID
        "00101000",  # Other Patient IDs
        "00080050",  # Accession Number
    }
)
_MASKED_NAMES = frozenset({"00100010", "00101001"})  # Patient's Name, Other Patient Names
_DROPPED_VALUES = frozenset({"00100030"})  # Patient's Birth Date: no masked form is a date


class DicomJsonError(ValueError):
    """A payload that is not one data set in the DICOM JSON model; the message says why."""


def read_payload(body: bytes) -> Dataset:
    """The one data set of a request payload: a DICOM JSON object, or an array of one."""
    if not body.strip():
        raise DicomJsonError("the payload is empty; it must be a DICOM JSON data set")
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DicomJsonError(f"the payload is not JSON: {exc}") from None
    if isinstance(parsed, list):
        if len(parsed) != 1:
            raise DicomJsonError(f"the payload holds {len(parsed)} data sets; send exactly one")
        parsed = parsed[0]
    return read_object(parsed)


def read_object(parsed: object) -> Dataset:
    """A DICOM JSON object as a ``Dataset``; every attribute's tag and VR checked first,
    at any depth, so that pydicom never guesses."""
    _check_object(parsed, "")
    assert isinstance(parsed, dict)
    try:
        return Dataset.from_json(parsed)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DicomJsonError(f"not a DICOM JSON data set: {exc}") from None


def _check_object(parsed: object, where: str) -> None:
    if not isinstance(parsed, dict):
        raise DicomJsonError(f"{where or 'the data set'} is not a JSON object")
    for tag, attribute in parsed.items():
        path = f"{where}{tag}"
        if len(tag) != 8 or any(c not in "0123456789abcdefABCDEF" for c in tag):
            raise DicomJsonError(f"{path}: an attribute's key is its tag, 8 hexadecimal digits")
        if not isinstance(attribute, dict):
            raise DicomJsonError(f"{path}: an attribute is a JSON object with its vr")
        vr = attribute.get("vr")
        if vr not in _KNOWN_VRS:
            raise DicomJsonError(f"{path}: unknown or missing vr {vr!r}")
        value = attribute.get("Value")
        if value is None:
            continue
        if not isinstance(value, list):
            raise DicomJsonError(f"{path}: Value must be an array")
        if vr == "SQ":
            for number, item in enumerate(value, start=1):
                _check_object(item, f"{path}[{number}].")


def write_object(dataset: Dataset) -> JsonObject:
    """A ``Dataset`` as a DICOM JSON object, its attributes in tag order (PS3.18 F.2)."""
    return _sorted(dataset.to_json_dict())


def _sorted(obj: JsonObject) -> JsonObject:
    ordered: JsonObject = {}
    for tag in sorted(obj, key=str.upper):
        attribute = obj[tag]
        if attribute.get("vr") == "SQ" and attribute.get("Value"):
            attribute = {**attribute, "Value": [_sorted(item) for item in attribute["Value"]]}
        ordered[tag] = attribute
    return ordered


def masked(obj: JsonObject) -> JsonObject:
    """``obj`` with its patient identifiers replaced by ``MASKED`` (a birth date emptied),
    at any depth; an attribute without a value stays without one."""
    out: JsonObject = {}
    for tag, attribute in obj.items():
        key = tag.upper()
        value = attribute.get("Value")
        if value and key in _MASKED_STRINGS:
            attribute = {**attribute, "Value": [MASKED for _ in value]}
        elif value and key in _MASKED_NAMES:
            attribute = {**attribute, "Value": [{"Alphabetic": MASKED} for _ in value]}
        elif value and key in _DROPPED_VALUES:
            attribute = {"vr": attribute["vr"]}
        elif value and attribute.get("vr") == "SQ":
            attribute = {**attribute, "Value": [masked(item) for item in value]}
        out[tag] = attribute
    return out


def identifier_tags() -> frozenset[str]:
    """The tags (JSON form) that ``masked`` hides: a role that may not see them may not
    match on them either."""
    return _MASKED_STRINGS | _MASKED_NAMES | _DROPPED_VALUES | {"00101002"}
