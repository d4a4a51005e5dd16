"""UPS-RS notifications (PS3.18 11.13, "Open Event Channel" and "Send Event Report"):
a WebSocket at ``/dicom-web/subscribers/{aetitle}`` over which the node sends each
pending event of the subscriber ``web:<aetitle>`` as a DICOM JSON object, and marks it
sent once the socket took it.

An event report object holds the Affected SOP Class UID (UPS Push), a Message ID, the
Affected SOP Instance UID (the workitem), the Event Type ID (PS3.4 CC.2.4.2: 1 state
report, 2 cancel requested, 3 progress, 4 SCP status, 5 assigned) and the Event
Information of PS3.4 Table CC.2.4-1, as the book wrote it with the change. Events go in
the order they were written, at least once: one not yet marked when a socket drops is
sent again on the next channel.

:class:`EventChannels` keeps this web process's open channels. Whatever this process
commits through the workitem book (UPS-RS, the DIMSE service, the requests runner)
wakes them at once (``wake``, chained to the book's ``on_commit``); events other
processes wrote (the workers' jobs) are found within ``AINODE_UPS_EVENT_POLL_SECONDS``.

Opening a channel needs an operator: an API token (``Authorization: Bearer``), or a
session cookie from the node's own pages (a WebSocket carries no CSRF token, so its
``Origin`` must be the node's).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from pydicom import Dataset
from starlette.concurrency import run_in_threadpool

from node.auth import csrf
from node.auth.actions import ActionRecord
from node.auth.principal import Principal
from node.auth.roles import Role
from node.auth.sessions import COOKIE
from node.ups.attributes import UPS_PUSH
from node.ups.watch import PendingEvent, WatchBook
from node.web.dicom_json import masked, write_object
from node.web.routes.deps import WebContext, session_principal
from node.web.routes.workitems_subscriptions import subscriber_of

router = APIRouter(tags=["UPS-RS"])

BATCH = 100  # events read per look


def event_report(event: PendingEvent) -> dict[str, Any]:
    """An event as the DICOM JSON object a channel sends (module docstring)."""
    report = Dataset()
    report.AffectedSOPClassUID = UPS_PUSH
    report.MessageID = event.id % 0xFFFF + 1  # US, never 0
    report.AffectedSOPInstanceUID = event.workitem_uid
    report.EventTypeID = event.event_type
    report.update(event.info)
    return write_object(report)


class EventChannels:
    """The open event channels of one web process."""

    def __init__(self, book: WatchBook, poll_seconds: float) -> None:
        self.book = book
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._open: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}
        # One sender per subscriber at a time: two channels of one AE title never send
        # the same event twice.
        self._senders: dict[str, asyncio.Lock] = {}

    def wake(self) -> None:
        """Events may have been written: every open channel looks now (any thread)."""
        with self._lock:
            waiting = list(self._open.values())
        for loop, woken in waiting:
            try:
                loop.call_soon_threadsafe(woken.set)
            except RuntimeError:  # its loop has closed: the channel is gone
                continue

    @property
    def open_channels(self) -> int:
        with self._lock:
            return len(self._open)

    async def serve(self, websocket: WebSocket, subscriber: str, mask: bool) -> None:
        """Send ``subscriber``'s events on an accepted ``websocket`` until it closes."""
        woken = asyncio.Event()
        with self._lock:
            self._open[id(woken)] = (asyncio.get_running_loop(), woken)
            sender = self._senders.setdefault(subscriber, asyncio.Lock())
        closed = asyncio.ensure_future(_until_closed(websocket))
        try:
            while not closed.done():
                woken.clear()  # a wake while sending sets it again: looked at next round
                async with sender:
                    await self._send_pending(websocket, subscriber, mask)
                waiter = asyncio.ensure_future(woken.wait())
                await asyncio.wait(
                    {waiter, closed}, timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
        except (WebSocketDisconnect, RuntimeError):  # the socket went while sending
            pass
        finally:
            closed.cancel()
            with self._lock:
                self._open.pop(id(woken), None)

    async def _send_pending(self, websocket: WebSocket, subscriber: str, mask: bool) -> None:
        while True:
            events = await run_in_threadpool(
                self.book.pending_events, subscriber, None, BATCH, subscriber
            )
            for event in events:
                report = event_report(event)
                await websocket.send_text(json.dumps(masked(report) if mask else report))
                # Marked only once the socket took it: at least once, never lost.
                await run_in_threadpool(self.book.mark_sent, [event.id])
            if len(events) < BATCH:
                return


async def _until_closed(websocket: WebSocket) -> None:
    """Read (and ignore) what the subscriber sends until it closes the channel."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


def _principal(websocket: WebSocket, context: WebContext) -> Principal | None:
    """Who opens the channel: a bearer token's principal, or a session's when the
    handshake comes from the node's own pages; None otherwise."""
    header = websocket.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return context.tokens.authenticate(token.strip())
    cookie = websocket.cookies.get(COOKIE)
    signed = context.signer.read(cookie) if cookie else None
    if signed is None:
        return None
    scheme = "https" if websocket.url.scheme == "wss" else "http"
    own_origin = f"{scheme}://{websocket.headers.get('host', '')}"
    # A page of any site may open a WebSocket here, the cookie sent along: only the
    # node's own pages may use the session.
    if "origin" not in websocket.headers or csrf.cross_site_reason(websocket.headers, own_origin):
        return None
    return session_principal(context, signed)


@router.websocket("/subscribers/{aetitle}")
async def event_channel(websocket: WebSocket, aetitle: str) -> None:
    """Open Event Channel: the subscriber's events, one DICOM JSON object a message."""
    context: WebContext = websocket.app.state.context
    subscriber = subscriber_of(aetitle)
    principal = await run_in_threadpool(_principal, websocket, context)
    refusal = ""
    if subscriber is None:
        refusal = f"{aetitle!r} is not an AE title"
    elif principal is None:
        refusal = "send an operator's API token (Authorization: Bearer) or sign in"
    elif not principal.may(Role.OPERATOR):
        refusal = f"role {principal.role.value} may not open an event channel; it needs operator"
        context.record_action(
            ActionRecord(
                action="refused",
                actor=principal.name,
                actor_role=principal.role.value,
                succeeded=False,
                target=websocket.url.path,
                reason=refusal,
                peer=websocket.client.host if websocket.client else "",
                provider=principal.provider,
            )
        )
    if refusal or subscriber is None or principal is None:
        # Closed before the handshake completes: the client sees HTTP 403.
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason=refusal[:120])
        return
    await websocket.accept()
    channels: EventChannels = websocket.app.state.ups_channels
    await channels.serve(
        websocket, subscriber, mask=not context.identifiers.may_see(principal.role)
    )
