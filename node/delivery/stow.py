"""Sending results to a DICOMweb archive by STOW-RS (PS3.18 10.5): the send of ``stow``
destinations.

This module owns the HTTP side of delivery to a DICOMweb origin server: building the
``multipart/related; type="application/dicom"`` request bodies, posting them to
``{url}/studies``, and reading the Store Instances response (DICOM JSON, PS3.18
10.5.3) to decide, instance by instance, what the archive holds. It is the DICOMweb
counterpart of ``node.delivery.cstore.store_files`` and fails the same way, with a
``DeliveryError`` whose message says what went wrong.

Requests are bounded by size: files are grouped into batches of at most
``MAX_REQUEST_BYTES`` (a file larger than that goes alone), one POST per batch, so a
large result set never has to sit in memory as a single body and no archive meets an
unbounded request. The first batch that fails stops the delivery: the caller retries
the whole delivery, and storing an instance again is harmless to an archive.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from node.delivery.destinations import StowDestination
from node.delivery.transports import DeliveryError, Outgoing, sends

MAX_REQUEST_BYTES = 32 * 1024 * 1024

# DICOM JSON keys (PS3.18 F.2) of the Store Instances Response Module attributes.
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_FAILURE_REASON = "00081197"
_WARNING_REASON = "00081196"

# Failure Reason values an archive is likely to send (PS3.18 Table 10.5.3-3, PS3.4 Annex C).
_FAILURE_TEXT = {
    0x0110: "processing failure",
    0x0122: "SOP class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP class",
    0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}

_EXCERPT_CHARS = 200


@sends(StowDestination)
def send_by_stow(destination: StowDestination, files: list[Outgoing], calling_aet: str) -> None:
    """The send of ``stow`` destinations: every file stored, or DeliveryError.

    DICOMweb has no calling AE title; the archive knows the node by ``http_headers``.
    """
    stow_files(destination.stow_url, files, headers=destination.http_headers)


def stow_files(
    url: str,
    files: list[Outgoing],
    *,
    timeout: float = 60,
    headers: dict[str, str] | None = None,
) -> dict[str, int]:
    """STOW-RS the files to ``{url}/studies``; returns {SOP Instance UID: status}.

    ``url`` is the DICOMweb root (the part before ``/studies``). ``headers`` are added
    to every request, for an ``Authorization`` (basic or bearer) the archive wants.
    The status is 0 for an instance stored, or the Warning Reason the archive gave
    for one stored with a warning (PS3.18 10.5.3 counts those as stored). Any instance
    the archive refused or did not mention raises DeliveryError, naming it; so does
    any HTTP status other than 200 or 202, and any connection error.
    """
    if not files:
        return {}
    endpoint = url.rstrip("/") + "/studies"
    statuses: dict[str, int] = {}
    with httpx.Client(timeout=timeout, headers=headers or {}) as client:
        for batch in _batches(files, MAX_REQUEST_BYTES):
            statuses.update(_post_batch(client, endpoint, batch))
    return statuses


def _batches(files: list[Outgoing], limit: int) -> Iterator[list[Outgoing]]:
    """Consecutive groups of ``files`` whose sizes add up to at most ``limit`` bytes."""
    batch: list[Outgoing] = []
    size = 0
    for item in files:
        item_size = item.path.stat().st_size
        if batch and size + item_size > limit:
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


def _post_batch(client: httpx.Client, endpoint: str, batch: list[Outgoing]) -> dict[str, int]:
    """One STOW-RS request for ``batch``; the statuses of its instances, all stored."""
    parts = [item.path.read_bytes() for item in batch]
    boundary = _boundary(parts)
    request_headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
    }
    try:
        response = client.post(
            endpoint, content=_multipart(parts, boundary), headers=request_headers
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"STOW-RS to {endpoint} failed: {type(exc).__name__}: {exc}") from exc
    return _check_response(endpoint, response, batch)


def _boundary(parts: list[bytes]) -> str:
    """A multipart boundary that occurs in none of ``parts`` (RFC 2046 5.1.1)."""
    while True:
        boundary = f"ainode-{secrets.token_hex(16)}"
        marker = boundary.encode("ascii")
        if not any(marker in part for part in parts):
            return boundary


def _multipart(parts: list[bytes], boundary: str) -> bytes:
    """The ``multipart/related`` body: each part a PS3.10 file as ``application/dicom``."""
    delimiter = b"--" + boundary.encode("ascii")
    chunks: list[bytes] = []
    for part in parts:
        chunks += [delimiter, b"\r\nContent-Type: application/dicom\r\n\r\n", part, b"\r\n"]
    chunks += [delimiter, b"--\r\n"]
    return b"".join(chunks)


def _check_response(
    endpoint: str, response: httpx.Response, batch: list[Outgoing]
) -> dict[str, int]:
    """The statuses of ``batch`` from a Store Instances response; raises unless all stored."""
    code = response.status_code
    body = _dicom_json(response)
    if body is None:
        if code in (200, 202):
            raise DeliveryError(
                f"STOW-RS to {endpoint} answered HTTP {code} without a DICOM JSON "
                f"response: {_excerpt(response)}"
            )
        raise DeliveryError(f"STOW-RS to {endpoint} answered HTTP {code}: {_excerpt(response)}")
    stored = _reasons(body, _REFERENCED_SOP_SEQUENCE, _WARNING_REASON)
    failed = _reasons(body, _FAILED_SOP_SEQUENCE, _FAILURE_REASON)
    problems = []
    for item in batch:
        uid = item.sop_instance_uid
        if uid in failed:
            problems.append(f"refused {uid} ({_failure_text(failed[uid])})")
        elif uid not in stored:
            problems.append(f"did not acknowledge {uid} ({item.path.name})")
    if problems or code not in (200, 202):
        detail = "; ".join(problems) or _excerpt(response)
        raise DeliveryError(f"STOW-RS to {endpoint} answered HTTP {code}: {detail}")
    return {item.sop_instance_uid: stored[item.sop_instance_uid] or 0 for item in batch}


def _dicom_json(response: httpx.Response) -> Mapping[str, Any] | None:
    """The response body as a DICOM JSON data set, or None when it is not one.

    The content type is not trusted either way: Orthanc's DICOMweb plugin sends its
    error answers (400, 409) as DICOM JSON without a Content-Type header.
    """
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    # A server may answer with an array of one data set, as QIDO-RS does.
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    if not isinstance(body, dict):
        return None
    if _FAILED_SOP_SEQUENCE not in body and _REFERENCED_SOP_SEQUENCE not in body:
        return None  # JSON, but not a Store Instances response (e.g. a server's error page)
    return body


def _reasons(body: Mapping[str, Any], sequence: str, reason_tag: str) -> dict[str, int | None]:
    """{Referenced SOP Instance UID: reason or None} for the items of ``sequence``."""
    reasons: dict[str, int | None] = {}
    for item in _values(body.get(sequence)):
        if not isinstance(item, dict):
            continue
        uids = _values(item.get(_REFERENCED_SOP_INSTANCE_UID))
        if uids and isinstance(uids[0], str):
            reasons[uids[0]] = _as_int(_values(item.get(reason_tag)))
    return reasons


def _values(element: object) -> list[Any]:
    """The ``Value`` array of a DICOM JSON element; empty when absent."""
    if isinstance(element, dict) and isinstance(element.get("Value"), list):
        return element["Value"]
    return []


def _as_int(values: list[Any]) -> int | None:
    """The first of ``values`` as an int (US values may come as numbers or strings)."""
    if not values:
        return None
    try:
        return int(values[0])
    except (TypeError, ValueError):
        return None


def _failure_text(reason: int | None) -> str:
    if reason is None:
        return "no failure reason given"
    text = _FAILURE_TEXT.get(reason)
    return f"failure reason 0x{reason:04X}" + (f" {text}" if text else "")


def _excerpt(response: httpx.Response) -> str:
    """The start of the response body on one line, for an error message."""
    # Only the start is decoded: an error body can be large, or not text at all.
    head = response.content[: _EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    text = " ".join(head.split())
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "..."
    return text or response.reason_phrase or "(empty body)"
