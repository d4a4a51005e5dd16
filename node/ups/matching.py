"""C-FIND matching of workitems (PS3.4 C.2.2.2, as UPS queries use it) and the
identifier each match answers with.

Supported: universal matching (an empty key), single value matching (exact; PN
case-insensitive), wildcard matching (``*`` and ``?``, on every text VR but UI,
DA, DT, TM and the numeric ones), UID list matching (values separated by ``\\``),
range matching on DA, DT and TM (``A-B``, ``-B``, ``A-``; DT and TM ranges compared
on their digits, time zone offsets ignored), and sequence matching: a query item's
keys must all match within one item of the workitem's sequence. Not supported:
combined DA+TM range matching of two separate keys, fuzzy semantic matching of
person names, and private attributes (matched as plain text).
The Transaction UID is never matched on nor returned.
"""

from __future__ import annotations

import re
from fnmatch import translate

from pydicom import Dataset
from pydicom.dataelem import DataElement

from node.ups.attributes import TRANSACTION_UID

_NO_WILDCARD_VRS = frozenset(
    {"UI", "DA", "DT", "TM", "DS", "IS", "US", "UL", "SS", "SL", "FL", "FD"}
)
_RANGE_VRS = {"DA": 8, "DT": 14, "TM": 6}
_IGNORED = frozenset({0x00080005})  # Specific Character Set: not a matching key


def values_of(element: DataElement) -> list[str]:
    value = element.value
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [str(v).strip() for v in value]
    return [str(value).strip()]


def _digits(text: str, width: int, pad: str) -> str:
    """The leading digits of a DA/DT/TM value (fraction and offset dropped), padded."""
    digits = re.match(r"[0-9]*", text.replace(":", "")).group(0)[:width]  # type: ignore[union-attr]
    return digits + pad * (width - len(digits))


def _in_range(values: list[str], key: str, vr: str) -> bool:
    width = _RANGE_VRS[vr]
    low, _, high = key.partition("-")
    lower = _digits(low, width, "0") if low else None
    upper = _digits(high, width, "9") if high else None
    for value in values:
        point = _digits(value, width, "0")
        if (lower is None or point >= lower) and (upper is None or point <= upper):
            return True
    return False


def _element_matches(stored: DataElement | None, key: DataElement) -> bool:
    if key.VR == "SQ":
        items = [item for item in key.value or [] if len(item)]
        if not items:
            return True  # universal
        stored_items = stored.value if stored is not None and stored.VR == "SQ" else []
        return all(any(matches(s, item) for s in stored_items or []) for item in items)
    wanted = values_of(key)
    if not wanted:
        return True  # universal
    have = values_of(stored) if stored is not None else []
    if not have:
        return False
    if key.VR in _RANGE_VRS and len(wanted) == 1 and "-" in wanted[0]:
        return _in_range(have, wanted[0], key.VR)
    if key.VR == "UI":
        return any(value in wanted for value in have)  # UID list matching
    fold = key.VR == "PN"
    for pattern in wanted:
        text_pattern = pattern.upper() if fold else pattern
        if key.VR not in _NO_WILDCARD_VRS and ("*" in pattern or "?" in pattern):
            regex = re.compile(translate(text_pattern.replace("[", "[[]")), re.DOTALL)
            if any(regex.match(value.upper() if fold else value) for value in have):
                return True
        elif any((value.upper() if fold else value) == text_pattern for value in have):
            return True
    return False


def matches(dataset: Dataset, query: Dataset) -> bool:
    """Whether ``dataset`` matches every key of ``query``."""
    for key in query:
        if key.tag in _IGNORED or key.tag == TRANSACTION_UID:
            continue
        if not _element_matches(dataset.get(key.tag), key):
            return False
    return True


def _answer_element(stored: DataElement | None, key: DataElement) -> DataElement:
    if stored is None:
        return DataElement(key.tag, key.VR, [] if key.VR == "SQ" else None)
    if key.VR != "SQ" or stored.VR != "SQ":
        return stored
    asked = [item for item in key.value or [] if len(item)]
    if not asked:
        return stored  # an empty sequence key asks for the whole sequence
    wanted = asked[0]
    items = [answer(item, wanted, with_uid=False) for item in stored.value or []]
    return DataElement(key.tag, "SQ", items)


def answer(dataset: Dataset, query: Dataset, with_uid: bool = True) -> Dataset:
    """The identifier a match answers with: the query's keys with the workitem's values
    (zero length where it has none), and its SOP Instance UID."""
    reply = Dataset()
    for key in query:
        if key.tag == TRANSACTION_UID:
            continue
        if key.tag in _IGNORED:
            reply.add(key)
            continue
        reply.add(_answer_element(dataset.get(key.tag), key))
    if with_uid and "SOPInstanceUID" in dataset:
        reply.SOPInstanceUID = dataset.SOPInstanceUID
    if with_uid and "SpecificCharacterSet" in dataset:  # the values' own encoding
        reply.SpecificCharacterSet = dataset.SpecificCharacterSet
    return reply
