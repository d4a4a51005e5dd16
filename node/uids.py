"""DICOM UIDs: validation of received ones, and the primitive the node's own derive from.

``validate_uid`` refuses what PS3.5 does not allow before a received UID goes any
further. ``derive_uid`` makes a deterministic UID from its inputs, so that the same
inputs always give the same UID; which inputs make which result UID is decided by
``workers.encode.identity``, the one place that makes result UIDs.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class InvalidUID(ValueError):
    """A UID that violates PS3.5 §9.1 (digits and dots, no leading zeros, <= 64 chars)."""


def validate_uid(uid: object, what: str = "UID") -> str:
    """Return ``uid`` when it is a valid DICOM UID, else raise :class:`InvalidUID`.

    Received UIDs become file names in the spool, so anything else (path separators,
    dots only, padding) must never get that far.
    """
    if not isinstance(uid, str):
        raise InvalidUID(f"{what} is missing")
    text = uid.rstrip("\x00").strip()
    if not text:
        raise InvalidUID(f"{what} is empty")
    if len(text) > 64:
        raise InvalidUID(f"{what} {text[:70]!r} is longer than 64 characters")
    if not _UID_RE.match(text):
        raise InvalidUID(f"{what} {text!r} is not digits separated by dots")
    return text


def derive_uid(*parts: str | Iterable[str]) -> str:
    """A UID under the UUID root (2.25) derived from ``parts``, deterministic and unique.

    Iterables (such as the source instance UIDs) are sorted first, so the order in
    which instances arrived does not change the result.
    """
    digest = hashlib.sha256()
    for part in parts:
        items = [part] if isinstance(part, str) else sorted(part)
        for item in items:
            digest.update(item.encode())
            digest.update(b"\x00")
        digest.update(b"\x01")
    return f"2.25.{uuid.UUID(bytes=digest.digest()[:16]).int}"
