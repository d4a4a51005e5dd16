"""UPS-RS, the DICOMweb worklist service (PS3.18 Chapter 11), under ``/dicom-web``.

The workitem resources, each a call into the node's workitem book
(``node.ups.book.WorkitemBook``, the one writer of workitems), answered in the DICOM
JSON model (``application/dicom+json``) with the statuses of
``node.web.routes.workitems_http``:

- ``POST /workitems{?workitem}``: CreateWorkitem (11.4), 201 and ``Location``;
- ``GET /workitems/{workitem}``: RetrieveWorkitem (11.5), never the Transaction UID;
- ``POST /workitems/{workitem}{?transaction}``: UpdateWorkitem (11.6);
- ``PUT /workitems/{workitem}/state``: ChangeWorkitemState (11.7), the payload's
  Procedure Step State and Transaction UID;
- ``POST /workitems/{workitem}/cancelrequest``: RequestCancellation (11.8), 202;
- ``GET /workitems?{match}...``: SearchForWorkitems (11.9), ``node.web.dicom_query``.

Subscriptions are ``workitems_subscriptions``', the event channel ``workitems_events``'.
Reading and searching needs a viewer, anything that changes a workitem an operator
(a RIS sends an operator's API token); patient identifiers are masked for roles outside
``AINODE_PHI_ROLES``, who may not match on them either. Every change is told to
``record_action`` (the audit trail) with who asked and how it went.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, status
from fastapi.responses import Response
from pydicom import Dataset
from starlette.concurrency import run_in_threadpool

from node.auth.principal import Principal
from node.db.worklist import UpsState, WorkitemOrigin
from node.settings import Settings
from node.uids import InvalidUID, validate_uid
from node.ups.attributes import TRANSACTION_UID
from node.ups.book import WorkitemBook
from node.ups.states import UpsError
from node.web.dicom_json import identifier_tags, masked, write_object
from node.web.dicom_query import QueryError, read_query
from node.web.routes import workitems_events, workitems_subscriptions
from node.web.routes.deps import ContextDep, OperatorDep, ViewerDep
from node.web.routes.workitems_http import (
    FUZZY_NOT_SUPPORTED,
    MORE_RESULTS,
    ROOT,
    book_of,
    call_book,
    dicom_json,
    empty,
    not_acceptable,
    payload,
    refusal,
    refused,
    warning,
)

router = APIRouter(tags=["UPS-RS"])
router.include_router(workitems_subscriptions.router)
router.include_router(workitems_events.router)

# What every search match shows without includefield: the Return Key Type 1 and 2
# attributes of PS3.4 Table CC.2.5-3 (PS3.18 11.9.3.2).
RESULT_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AdmissionID",
    "ScheduledProcedureStepPriority",
    "ProcedureStepLabel",
    "WorklistLabel",
    "ScheduledProcedureStepStartDateTime",
    "ExpectedCompletionDateTime",
    "InputReadinessState",
    "ProcedureStepState",
    "StudyInstanceUID",
    "ScheduledWorkitemCodeSequence",
    "ScheduledProcessingParametersSequence",
    "ScheduledStationNameCodeSequence",
    "ScheduledHumanPerformersSequence",
    "InputInformationSequence",
    "ReferencedRequestSequence",
    "ProcedureStepProgressInformationSequence",
    "UnifiedProcedureStepPerformedProcedureSequence",
)


def attach(app: FastAPI, settings: Settings, book: WorkitemBook) -> None:
    """Serve UPS-RS on ``app`` under ``/dicom-web`` over ``book``, with the event channels
    of this web process: the book's commits wake them (its ``on_commit`` is chained),
    and they look for events other processes wrote every ``AINODE_UPS_EVENT_POLL_SECONDS``."""
    channels = workitems_events.EventChannels(book, settings.ups_event_poll_seconds)
    then = book.on_commit  # the node's DIMSE event dispatcher's wake, where it has one

    def woken() -> None:
        if then is not None:
            then()
        channels.wake()

    # Whatever this process commits through the book (UPS-RS, the DIMSE service, the
    # requests runner) wakes the open channels at once.
    book.on_commit = woken
    app.state.workitem_book = book
    app.state.ups_channels = channels
    app.include_router(router, prefix=ROOT)


def shown(context: ContextDep, principal: Principal, dataset: Dataset) -> dict:
    """A workitem as the asker may see it."""
    obj = write_object(dataset)
    return obj if context.identifiers.may_see(principal.role) else masked(obj)


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


# ---- CreateWorkitem, RetrieveWorkitem, UpdateWorkitem -----------------------------


@router.post("/workitems", status_code=status.HTTP_201_CREATED)
async def create_workitem(
    request: Request,
    principal: OperatorDep,
    workitem: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    dataset = await payload(request)
    if isinstance(dataset, Response):
        return dataset
    given = _text(dataset, "SOPInstanceUID")
    if workitem and given and given != workitem:
        return refused(
            request,
            status.HTTP_400_BAD_REQUEST,
            f"the payload's SOP Instance UID {given} is not the workitem parameter {workitem}",
        )
    try:
        for uid_given in filter(None, (workitem, given)):
            validate_uid(uid_given, "the workitem's SOP Instance UID")
    except InvalidUID as exc:
        return refused(request, status.HTTP_400_BAD_REQUEST, str(exc))
    book = book_of(request)
    uid = await call_book(
        request,
        principal,
        "workitem_create",
        lambda: book.create(dataset, uid=workitem or None, origin=WorkitemOrigin.REQUESTED),
    )
    if isinstance(uid, Response):
        return uid
    location = f"{request.base_url}{ROOT.lstrip('/')}/workitems/{uid}"
    return empty(request, status.HTTP_201_CREATED, headers={"Location": location})


@router.get("/workitems/{workitem}")
async def retrieve_workitem(
    workitem: str, request: Request, context: ContextDep, principal: ViewerDep
) -> Response:
    refusal_406 = not_acceptable(request)
    if refusal_406 is not None:
        return refusal_406
    try:
        dataset = await run_in_threadpool(book_of(request).get, workitem)
    except UpsError as error:
        return refusal(request, error)
    dataset.pop(TRANSACTION_UID, None)  # only its owner knows it (PS3.18 11.5.3.3)
    return dicom_json([shown(context, principal, dataset)])


@router.post("/workitems/{workitem}")
async def update_workitem(
    workitem: str,
    request: Request,
    principal: OperatorDep,
    transaction: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    changes = await payload(request)
    if isinstance(changes, Response):
        return changes
    if TRANSACTION_UID in changes:
        return refused(
            request,
            status.HTTP_400_BAD_REQUEST,
            "the Transaction UID goes in the transaction parameter, not the payload",
        )
    if "ProcedureStepState" in changes:
        return refused(
            request,
            status.HTTP_400_BAD_REQUEST,
            "Procedure Step State is changed with ChangeWorkitemState (PUT .../state)",
        )
    book = book_of(request)
    done = await call_book(
        request,
        principal,
        "workitem_update",
        lambda: book.set(workitem, changes, transaction or None),
    )
    if isinstance(done, Response):
        return done
    return empty(request, status.HTTP_200_OK)


# ---- ChangeWorkitemState, RequestCancellation ------------------------------------


@router.put("/workitems/{workitem}/state")
async def change_workitem_state(
    workitem: str, request: Request, principal: OperatorDep
) -> Response:
    info = await payload(request)
    if isinstance(info, Response):
        return info
    state_text = _text(info, "ProcedureStepState")
    transaction_uid = _text(info, "TransactionUID")
    if not state_text or not transaction_uid:
        return refused(
            request,
            status.HTTP_400_BAD_REQUEST,
            "the payload must hold Procedure Step State (0074,1000) and Transaction UID "
            "(0008,1195)",
        )
    try:
        state = UpsState(state_text)
    except ValueError:
        return refused(
            request,
            status.HTTP_400_BAD_REQUEST,
            f"Procedure Step State {state_text!r} is not IN PROGRESS, COMPLETED or CANCELED",
        )
    book = book_of(request)
    performer = f"web:{principal.name}"
    outcome = await call_book(
        request,
        principal,
        f"workitem_{state.name.lower()}",
        lambda: book.change_state(workitem, state, transaction_uid, performer=performer),
    )
    if isinstance(outcome, Response):
        return outcome
    return empty(request, status.HTTP_200_OK, status_word=outcome)


@router.post("/workitems/{workitem}/cancelrequest", status_code=status.HTTP_202_ACCEPTED)
async def request_cancellation(workitem: str, request: Request, principal: OperatorDep) -> Response:
    info = await payload(request, required=False)
    if isinstance(info, Response):
        return info
    book = book_of(request)
    outcome = await call_book(
        request,
        principal,
        "workitem_cancel_request",
        lambda: book.request_cancel(
            workitem,
            reason=_text(info, "ReasonForCancellation"),
            requester=principal.name,
            request=info,
        ),
    )
    if isinstance(outcome, Response):
        return outcome
    return empty(request, status.HTTP_202_ACCEPTED, status_word=outcome)


# ---- SearchForWorkitems ------------------------------------------------------------


@router.get("/workitems")
async def search_for_workitems(
    request: Request, context: ContextDep, principal: ViewerDep
) -> Response:
    refusal_406 = not_acceptable(request)
    if refusal_406 is not None:
        return refusal_406
    try:
        query = read_query(request.query_params.multi_items())
    except QueryError as exc:
        return refused(request, status.HTTP_400_BAD_REQUEST, str(exc))
    may_see = context.identifiers.may_see(principal.role)
    hidden_keys = query.matching_tags & identifier_tags()
    if hidden_keys and not may_see:
        return refused(
            request,
            status.HTTP_403_FORBIDDEN,
            f"your role ({principal.role.value}) may not match on patient identifiers "
            f"({', '.join(sorted(hidden_keys))})",
        )
    identifier = query.identifier
    for keyword in RESULT_KEYWORDS:
        if keyword not in identifier:
            setattr(identifier, keyword, [] if keyword.endswith("Sequence") else None)
    book = book_of(request)
    # One more than asked: whether more could be requested (the Warning says so).
    asked = None if query.limit is None else query.limit + 1
    try:
        found = await run_in_threadpool(book.find, identifier, asked, query.offset)
        if query.include_all:
            found = [await run_in_threadpool(book.get, str(d.SOPInstanceUID)) for d in found]
    except UpsError as error:
        return refusal(request, error)
    more = query.limit is not None and len(found) > query.limit
    found = found[: query.limit] if query.limit is not None else found
    warnings = [FUZZY_NOT_SUPPORTED] if query.fuzzy else []
    if more:
        warnings.append(MORE_RESULTS)
    if not found:
        response = empty(request, status.HTTP_204_NO_CONTENT)
    else:
        for dataset in found:
            dataset.pop(TRANSACTION_UID, None)
        response = dicom_json([shown(context, principal, d) for d in found])
    for text in warnings:
        response.headers.append("Warning", warning(request, text))
    return response


__all__ = ["RESULT_KEYWORDS", "attach", "router"]
