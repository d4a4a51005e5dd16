"""A DICOMweb search's query parameters (PS3.18 8.3.4, as SearchForWorkitems takes them)
read into a C-FIND identifier.

Owns the translation only: ``{attributeID}={value}`` pairs become matching keys (an
attribute ID is a keyword, a tag of 8 hexadecimal digits, or a dotted path into a
sequence's item, ``ScheduledWorkitemCodeSequence.CodeValue``), ``includefield`` adds
empty return keys (``all`` asks for every attribute), and ``offset``, ``limit`` and
``fuzzymatching`` are read and checked. Matching itself is the book's
(``node.ups.book.WorkitemBook.find``). Anything unknown or malformed is refused with
:class:`QueryError`, the message naming the parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.tag import BaseTag, Tag

INCLUDEFIELD = "includefield"
FUZZYMATCHING = "fuzzymatching"
OFFSET = "offset"
LIMIT = "limit"

_NUMBERS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})


class QueryError(ValueError):
    """A query parameter the search cannot take; the message names it."""


@dataclass(frozen=True)
class SearchQuery:
    identifier: Dataset  # matching keys with values, return keys empty
    matching_tags: frozenset[str]  # the top-level tags matched on, JSON form ("00100020")
    include_all: bool  # includefield=all
    offset: int
    limit: int | None
    fuzzy: bool  # fuzzymatching=true was asked for


def read_query(params: Iterable[tuple[str, str]]) -> SearchQuery:
    """The identifier and paging of a search's query parameters, in the order given."""
    identifier = Dataset()
    matching: set[str] = set()
    include_all, fuzzy = False, False
    offset, limit = 0, None
    for name, value in params:
        if name == INCLUDEFIELD:
            for field in (part.strip() for part in value.split(",")):
                if field == "all":
                    include_all = True
                elif field:
                    _place(identifier, _path(field, INCLUDEFIELD), None)
        elif name == FUZZYMATCHING:
            fuzzy = _boolean(name, value)
        elif name == OFFSET:
            offset = _count(name, value, least=0)
        elif name == LIMIT:
            limit = _count(name, value, least=1)
        else:
            path = _path(name, name)
            _place(identifier, path, value or None)
            if value:
                matching.add(f"{path[0]:08X}")
    return SearchQuery(identifier, frozenset(matching), include_all, offset, limit, fuzzy)


def _boolean(name: str, value: str) -> bool:
    if value not in ("true", "false"):
        raise QueryError(f"{name} is true or false, not {value!r}")
    return value == "true"


def _count(name: str, value: str, least: int) -> int:
    if not value.isdigit() or int(value) < least:
        raise QueryError(f"{name} is a whole number from {least}, not {value!r}")
    return int(value)


def _path(attribute_id: str, parameter: str) -> list[BaseTag]:
    """``PatientID``, ``00100020`` or ``Sequence.Attribute`` as the tags along the path."""
    tags = [_tag(part, parameter) for part in attribute_id.split(".")]
    for tag in tags[:-1]:
        if _vr(tag) != "SQ":
            raise QueryError(f"{parameter}: {_name(tag)} is not a sequence")
    return tags


def _tag(part: str, parameter: str) -> BaseTag:
    if len(part) == 8 and all(c in "0123456789abcdefABCDEF" for c in part):
        tag = Tag(int(part, 16))
        if keyword_for_tag(tag):
            return tag
    else:
        number = tag_for_keyword(part)
        if number is not None:
            return Tag(number)
    raise QueryError(f"{parameter}: unknown attribute {part!r} (a keyword or 8 hex digits)")


def _vr(tag: BaseTag) -> str:
    return dictionary_VR(tag).split(" or ")[0]  # e.g. "US or SS": either matches as text


def _name(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"


def _place(identifier: Dataset, path: list[BaseTag], text: str | None) -> None:
    """Put a matching key (``text``) or a return key (None) at ``path``: a sequence on
    the way gets one item, shared by every key under it (sequence matching, PS3.4
    C.2.2.2.6)."""
    dataset = identifier
    for tag in path[:-1]:
        if tag not in dataset or not dataset[tag].value:
            dataset.add_new(tag, "SQ", [Dataset()])
        dataset = dataset[tag].value[0]
    leaf = path[-1]
    vr = _vr(leaf)
    if text is None:
        if leaf not in dataset:
            dataset.add_new(leaf, vr, [] if vr == "SQ" else None)
        return
    if vr == "SQ":
        raise QueryError(
            f"{_name(leaf)}: a sequence is matched by its items' attributes "
            f"({_name(leaf)}.Keyword=value)"
        )
    dataset.add_new(leaf, vr, _value(leaf, vr, text))


def _value(tag: BaseTag, vr: str, text: str) -> object:
    if vr == "UI":
        return text.replace(",", "\\")  # a list of UIDs: any of them matches
    if vr in _NUMBERS:
        try:
            return float(text) if vr in ("FL", "FD") else int(text)
        except ValueError:
            raise QueryError(f"{_name(tag)} is a number, not {text!r}") from None
    return text
