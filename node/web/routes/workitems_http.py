"""How UPS-RS takes requests and answers them (PS3.18 Chapter 11): the one table from
the provider's DIMSE statuses to HTTP status codes, the ``Warning`` header, DICOM JSON
answers, and what every UPS-RS route shares (its payload read, the book called off the
event loop, the call recorded for the audit trail).

The workitem book (``node.ups.book``) speaks DIMSE: it refuses with a ``UpsError``
carrying a PS3.4 CC.2 status, and a few requests succeed with a warning status. Every
UPS-RS route turns those into HTTP here, so a status means the same on every resource:
no such workitem is 404, a payload the standard does not allow is 400, anything the
workitem's state or its Transaction UID forbids is 409 (PS3.18 11.6.3, 11.7.3, 11.8.3),
and the reason travels in a ``Warning: 299 {service}: {text}`` header (PS3.18 8.4.1)
as well as in the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request, status
from fastapi.responses import JSONResponse, Response
from pydicom import Dataset
from starlette.concurrency import run_in_threadpool

from node.auth.actions import ActionRecord
from node.auth.principal import Principal
from node.ups.book import WorkitemBook
from node.ups.states import UpsError, UpsStatus
from node.web.dicom_json import MEDIA_TYPE, DicomJsonError, read_payload
from node.web.routes.deps import client_address, get_context

T = TypeVar("T")

JSON_TYPES = (MEDIA_TYPE, "application/json")

ROOT = "/dicom-web"
"""Where the node's DICOMweb resources live (the ``{+service}`` of PS3.18)."""

_CONFLICT = status.HTTP_409_CONFLICT
_BAD = status.HTTP_400_BAD_REQUEST

HTTP_STATUS: dict[UpsStatus, int] = {
    UpsStatus.NO_SUCH_WORKITEM: status.HTTP_404_NOT_FOUND,
    # A workitem with this SOP Instance UID exists already (CreateWorkitem).
    UpsStatus.DUPLICATE_SOP_INSTANCE: _CONFLICT,
    # The workitem's state, or who holds it, forbids the request.
    UpsStatus.MAY_NO_LONGER_BE_UPDATED: _CONFLICT,
    UpsStatus.WRONG_TRANSACTION_UID: _CONFLICT,
    UpsStatus.ALREADY_IN_PROGRESS: _CONFLICT,
    UpsStatus.FINAL_STATE_NOT_MET: _CONFLICT,
    UpsStatus.NOT_IN_PROGRESS: _CONFLICT,
    UpsStatus.ALREADY_COMPLETED: _CONFLICT,
    UpsStatus.PERFORMER_CANNOT_BE_CONTACTED: _CONFLICT,
    UpsStatus.PERFORMER_CHOOSES_NOT_TO_CANCEL: _CONFLICT,
    # What the request says is not allowed, whatever the workitem's state.
    UpsStatus.ONLY_SCHEDULED_BY_CREATE: _BAD,
    UpsStatus.CREATED_NOT_SCHEDULED: _BAD,
    UpsStatus.INVALID_ATTRIBUTE_VALUE: _BAD,
    UpsStatus.MISSING_ATTRIBUTE: _BAD,
    UpsStatus.MISSING_ATTRIBUTE_VALUE: _BAD,
    UpsStatus.IDENTIFIER_DOES_NOT_MATCH: _BAD,
    UpsStatus.NO_SUCH_ACTION: _BAD,
    UpsStatus.ACTION_NOT_APPROPRIATE: _BAD,
    UpsStatus.RECEIVING_AE_UNKNOWN: _BAD,
    UpsStatus.NO_EVENT_REPORTS: _BAD,
    # The node could not do it now.
    UpsStatus.OUT_OF_RESOURCES: status.HTTP_503_SERVICE_UNAVAILABLE,
    UpsStatus.PROCESSING_FAILURE: status.HTTP_500_INTERNAL_SERVER_ERROR,
}
"""Each failure status of the book as the HTTP status every UPS-RS route answers."""

WARNING_TEXT: dict[UpsStatus, str] = {
    UpsStatus.ALREADY_CANCELED: "The Workitem is already in the requested state of CANCELED.",
    UpsStatus.ALREADY_COMPLETED_WARNING: (
        "The Workitem is already in the requested state of COMPLETED."
    ),
    UpsStatus.CREATED_WITH_MODIFICATIONS: "The Workitem was created with modifications.",
    UpsStatus.DELETION_LOCK_NOT_GRANTED: "Deletion Lock not granted.",
    UpsStatus.COERCED_INVALID_VALUES: "Coerced invalid values to valid values.",
    UpsStatus.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED: (
        "Requested optional Attributes are not supported."
    ),
}
"""The words of each warning status a request may succeed with."""

FUZZY_NOT_SUPPORTED = (
    "The fuzzymatching parameter is not supported. Only literal matching has been performed."
)
MORE_RESULTS = "There are additional results that can be requested."


def service(request: Request) -> str:
    """The node's DICOMweb root as this request addressed it (the Warning's agent)."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}{ROOT}"


def warning(request: Request, text: str) -> str:
    """A ``Warning`` header value (PS3.18 8.4.1), kept to what a header may carry."""
    clean = " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")
    return f"299 {service(request)}: {clean}"


def http_status(error: UpsError) -> int:
    """The HTTP status of a refusal; a status the table does not name is the asker's (400)."""
    try:
        return HTTP_STATUS[UpsStatus(error.status)]
    except (ValueError, KeyError):
        return _BAD


def refusal(request: Request, error: UpsError) -> JSONResponse:
    """The answer to a request the book refused: its HTTP status, the reason in the
    ``Warning`` header and the body, and the DIMSE status for whoever knows it."""
    return refused(
        request,
        http_status(error),
        error.message,
        dimse_status=f"{error.status:04X}",
    )


def refused(request: Request, code: int, reason: str, **extra: str) -> JSONResponse:
    """A failure answer: ``{"detail": reason}`` with the reason also as a ``Warning``."""
    return JSONResponse(
        {"detail": reason, **extra},
        status_code=code,
        headers={"Warning": warning(request, reason), "Cache-Control": "no-store"},
    )


def dicom_json(
    content: Any, code: int = status.HTTP_200_OK, headers: dict[str, str] | None = None
) -> Response:
    """A DICOM JSON answer; never cached (workitems name patients)."""
    return Response(
        json.dumps(content, ensure_ascii=False).encode("utf-8"),
        status_code=code,
        media_type=MEDIA_TYPE,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def empty(
    request: Request,
    code: int,
    status_word: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An answer without a payload; a warning status becomes its ``Warning`` header."""
    all_headers = {"Cache-Control": "no-store", **(headers or {})}
    text = _warning_text(status_word)
    if text:
        all_headers["Warning"] = warning(request, text)
    return Response(status_code=code, headers=all_headers)


def _warning_text(status_word: int | None) -> str:
    if not status_word:
        return ""
    try:
        return WARNING_TEXT.get(UpsStatus(status_word), "")
    except ValueError:
        return ""


# ---- what every route shares -------------------------------------------------------


def book_of(request: Request) -> WorkitemBook:
    book: WorkitemBook = request.app.state.workitem_book
    return book


def record(
    request: Request, principal: Principal, action: str, outcome: str = "", ok: bool = True
) -> None:
    get_context(request).record_action(
        ActionRecord(
            action=action,
            actor=principal.name,
            actor_role=principal.role.value,
            succeeded=ok,
            target=request.url.path,
            reason=outcome,
            peer=client_address(request),
            provider=principal.provider,
        )
    )


async def call_book(
    request: Request, principal: Principal, action: str, call: Callable[[], T]
) -> T | Response:
    """Run a book request off the event loop; a refusal answered (and recorded) as the
    one table says, a success recorded (the book's commit woke the event channels)."""
    try:
        result = await run_in_threadpool(call)
    except UpsError as error:
        record(request, principal, action, f"refused: {error.message}", ok=False)
        return refusal(request, error)
    except Exception as exc:  # recorded, then raised as it came (a 500)
        record(request, principal, action, f"failed: {exc}", ok=False)
        raise
    record(request, principal, action)
    return result


async def payload(request: Request, required: bool = True) -> Dataset | Response:
    """The request's data set, or the answer refusing it (415 or 400)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if not body.strip() and not required:
        return Dataset()
    if content_type not in JSON_TYPES:
        return refused(
            request,
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send the data set as {MEDIA_TYPE}, not {content_type or 'nothing'}",
        )
    try:
        return read_payload(body)
    except DicomJsonError as exc:
        return refused(request, status.HTTP_400_BAD_REQUEST, str(exc))


def not_acceptable(request: Request) -> Response | None:
    """406 when the asker accepts no JSON form of the answer."""
    accept = request.headers.get("accept", "")
    wanted = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    if not wanted or any(w in (*JSON_TYPES, "*/*", "application/*") for w in wanted):
        return None
    return refused(request, status.HTTP_406_NOT_ACCEPTABLE, f"the node answers {MEDIA_TYPE} only")
