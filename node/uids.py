"""DICOM UIDs: validation of received ones, derivation of the node's own.

The one place that builds result UIDs. Every UID the node creates is derived from
its inputs (source instance UIDs, model name and version, object kind), so that a
re-run of the same job yields the same UIDs and never duplicates objects in the
archive.
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


def result_uids(
    source_sop_uids: Iterable[str], model_name: str, model_version: str
) -> dict[str, str]:
    """UIDs for one job's results: the SEG, SR and SC overlay series and instances
    (each overlay image derives its own from ``overlay_instance``)."""
    sources = sorted(source_sop_uids)
    base = ("ainode-result", model_name, model_version, sources)

    def uid(kind: str) -> str:
        return derive_uid(*base, kind)

    return {
        "seg_series": uid("seg-series"),
        "seg_instance": uid("seg-instance"),
        "sr_series": uid("sr-series"),
        "sr_instance": uid("sr-instance"),
        "overlay_series": uid("overlay-series"),
        "overlay_instance": uid("overlay-instance"),
    }
