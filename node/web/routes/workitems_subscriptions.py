"""UPS-RS subscriptions (PS3.18 11.10 to 11.12): who hears of which workitems' events.

- ``POST /workitems/{workitem}/subscribers/{aetitle}{?deletionlock}``: CreateSubscription
  to one workitem, to every workitem (the global subscription instance
  1.2.840.10008.5.1.4.34.5), or to those that match the query parameters (the filtered
  global instance 1.2.840.10008.5.1.4.34.5.1, matched as a search matches); 201 and,
  in ``Content-Location``, the event channel to open (``workitems_events``);
- ``POST .../subscribers/{aetitle}/suspend``: SuspendGlobalSubscription (global ones);
- ``DELETE .../subscribers/{aetitle}``: DeleteSubscription.

A web subscriber is recorded in the book as ``web:<AE title>``: its events wait for its
WebSocket, the DIMSE event dispatcher leaves them alone. Operators only.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import Response
from pydicom import Dataset

from node.delivery.destinations import AE_TITLE
from node.ups.attributes import FILTERED_GLOBAL_SUBSCRIPTION, GLOBAL_SUBSCRIPTION
from node.web.dicom_json import identifier_tags
from node.web.dicom_query import QueryError, read_query
from node.web.routes.deps import ContextDep, OperatorDep
from node.web.routes.workitems_http import ROOT, book_of, call_book, empty, refused

router = APIRouter(tags=["UPS-RS"])

WEB_SUBSCRIBER = "web:"
"""How the book names a UPS-RS subscriber: ``web:`` and its AE title."""

DELETIONLOCK = "deletionlock"
_GLOBAL = frozenset({GLOBAL_SUBSCRIPTION, FILTERED_GLOBAL_SUBSCRIPTION})


def subscriber_of(aetitle: str) -> str | None:
    """The book's name of a web subscriber; None for a malformed AE title."""
    if not AE_TITLE.match(aetitle) or aetitle.strip() != aetitle or "\\" in aetitle:
        return None
    return f"{WEB_SUBSCRIBER}{aetitle}"


def channel_url(request: Request, aetitle: str) -> str:
    """The event channel's address as this request addressed the node."""
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.headers.get('host', '')}{ROOT}/subscribers/{aetitle}"


def _bad_ae_title(request: Request, aetitle: str) -> Response:
    return refused(
        request,
        status.HTTP_400_BAD_REQUEST,
        f"{aetitle!r} is not an AE title (1 to 16 characters, no backslash, no padding)",
    )


@router.post("/workitems/{workitem}/subscribers/{aetitle}", status_code=status.HTTP_201_CREATED)
async def create_subscription(
    workitem: str,
    aetitle: str,
    request: Request,
    context: ContextDep,
    principal: OperatorDep,
    deletionlock: Annotated[str, Query()] = "false",
) -> Response:
    subscriber = subscriber_of(aetitle)
    if subscriber is None:
        return _bad_ae_title(request, aetitle)
    if deletionlock not in ("true", "false"):
        return refused(request, status.HTTP_400_BAD_REQUEST, "deletionlock is true or false")
    params = [(k, v) for k, v in request.query_params.multi_items() if k != DELETIONLOCK]
    keys: Dataset | None = None
    if workitem == FILTERED_GLOBAL_SUBSCRIPTION:
        try:
            query = read_query(params)
        except QueryError as exc:
            return refused(request, status.HTTP_400_BAD_REQUEST, str(exc))
        hidden = query.matching_tags & identifier_tags()
        if hidden and not context.identifiers.may_see(principal.role):
            return refused(
                request,
                status.HTTP_403_FORBIDDEN,
                f"your role ({principal.role.value}) may not filter on patient identifiers",
            )
        keys = query.identifier
    elif params:
        return refused(
            request,
            status.HTTP_400_BAD_REQUEST,
            f"matching keys filter the filtered global subscription "
            f"({FILTERED_GLOBAL_SUBSCRIPTION}) only",
        )
    book = book_of(request)
    uid = "" if workitem in _GLOBAL else workitem
    lock = deletionlock == "true"
    done = await call_book(
        request,
        principal,
        "workitem_subscribe",
        lambda: book.subscribe(subscriber, uid, deletion_lock=lock, filter=keys),
    )
    if isinstance(done, Response):
        return done
    return empty(
        request,
        status.HTTP_201_CREATED,
        headers={"Content-Location": channel_url(request, aetitle)},
    )


@router.post("/workitems/{workitem}/subscribers/{aetitle}/suspend")
async def suspend_global_subscription(
    workitem: str, aetitle: str, request: Request, principal: OperatorDep
) -> Response:
    subscriber = subscriber_of(aetitle)
    if subscriber is None:
        return _bad_ae_title(request, aetitle)
    if workitem not in _GLOBAL:
        return refused(
            request,
            status.HTTP_400_BAD_REQUEST,
            f"only a global subscription is suspended ({GLOBAL_SUBSCRIPTION} or "
            f"{FILTERED_GLOBAL_SUBSCRIPTION})",
        )
    book = book_of(request)
    done = await call_book(
        request, principal, "workitem_suspend_global", lambda: book.suspend_global(subscriber)
    )
    if isinstance(done, Response):
        return done
    return empty(request, status.HTTP_200_OK)


@router.delete("/workitems/{workitem}/subscribers/{aetitle}")
async def delete_subscription(
    workitem: str, aetitle: str, request: Request, principal: OperatorDep
) -> Response:
    subscriber = subscriber_of(aetitle)
    if subscriber is None:
        return _bad_ae_title(request, aetitle)
    book = book_of(request)
    uid = "" if workitem in _GLOBAL else workitem
    done = await call_book(
        request, principal, "workitem_unsubscribe", lambda: book.unsubscribe(subscriber, uid)
    )
    if isinstance(done, Response):
        return done
    return empty(request, status.HTTP_200_OK)
