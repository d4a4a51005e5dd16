"""UPS-RS subscriptions and event channels (PS3.18 11.10 to 11.13) over a real server:
a RIS subscribes, opens its WebSocket with the ``websockets`` client and receives each
event as DICOM JSON, marked sent in the book once the socket took it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import Dataset
from sqlalchemy import select
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from node.auth.roles import Role
from node.db.worklist import UpsEvent, WorkitemOrigin
from node.ups.book import WorkitemBook
from tests.ups_rs import (
    DICOM_JSON,
    ServedRs,
    completion,
    served_rs,
    state_change,
    value,
    workitem_json,
)

GLOBAL = "1.2.840.10008.5.1.4.34.5"
FILTERED = "1.2.840.10008.5.1.4.34.5.1"
CLAIM = "2.25.9001"
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"


@pytest.fixture
def rs(database_url: str, tmp_path: Path) -> Iterator[ServedRs]:
    with served_rs(database_url, tmp_path) as served:
        yield served


def _create(ris: httpx.Client, uid: str, **fields: str) -> None:
    made = ris.post(
        "/workitems",
        params={"workitem": uid},
        content=json.dumps([workitem_json(**fields)]),
        headers={"Content-Type": DICOM_JSON},
    )
    assert made.status_code == 201, made.text


def _state(ris: httpx.Client, uid: str, state: str) -> httpx.Response:
    return ris.put(
        f"/workitems/{uid}/state",
        content=json.dumps(state_change(state, CLAIM)),
        headers={"Content-Type": DICOM_JSON},
    )


def _next(channel: ClientConnection) -> dict[str, Any]:
    message = channel.recv(timeout=15)
    assert isinstance(message, str)
    report: dict[str, Any] = json.loads(message)
    assert value(report, "00000002") == UPS_PUSH  # Affected SOP Class UID
    return report


def _event(report: dict[str, Any]) -> tuple[str, int, str | None]:
    """(workitem, Event Type ID, Procedure Step State) of an event report."""
    return value(report, "00001000"), value(report, "00001002"), value(report, "00741000")


def _pending(rs: ServedRs, subscriber: str) -> list[UpsEvent]:
    with rs.node.sessions() as s:
        return list(
            s.scalars(
                select(UpsEvent).where(
                    UpsEvent.subscriber == subscriber, UpsEvent.sent_at.is_(None)
                )
            )
        )


def _events_of(rs: ServedRs, subscriber: str) -> int:
    with rs.node.sessions() as s:
        return len(list(s.scalars(select(UpsEvent.id).where(UpsEvent.subscriber == subscriber))))


def _until_sent(rs: ServedRs, subscriber: str, deadline_s: float = 10.0) -> None:
    """Wait (bounded) until the book shows every event of ``subscriber`` sent."""
    deadline = time.monotonic() + deadline_s
    while _pending(rs, subscriber):
        assert time.monotonic() < deadline, "events still pending"
        time.sleep(0.05)


def test_global_subscription_streams_state_reports(rs: ServedRs) -> None:
    with rs.client() as ris:
        _create(ris, "2.25.1")
        subscribed = ris.post(f"/workitems/{GLOBAL}/subscribers/RIS1")
        assert subscribed.status_code == 201, subscribed.text
        channel_url = subscribed.headers["Content-Location"]
        assert channel_url == rs.url.replace("http", "ws") + "/dicom-web/subscribers/RIS1"
        # Subscribed before the channel is open: the events wait for it.
        assert len(_pending(rs, "web:RIS1")) == 1
        with rs.channel("RIS1") as channel:
            first = _next(channel)  # the state report every existing workitem gets
            assert _event(first) == ("2.25.1", 1, "SCHEDULED")
            assert value(first, "00404041") == "READY"  # Input Readiness State
            assert isinstance(value(first, "00000110"), int)  # Message ID
            assert _state(ris, "2.25.1", "IN PROGRESS").status_code == 200
            assert _event(_next(channel)) == ("2.25.1", 1, "IN PROGRESS")
            _create(ris, "2.25.2", label="Bleed")
            assert _event(_next(channel)) == ("2.25.2", 1, "SCHEDULED")
            # A progress report (event type 3) carries the progress information.
            changed = ris.post(
                "/workitems/2.25.1",
                params={"transaction": CLAIM},
                content=json.dumps(completion(progress="60")),
                headers={"Content-Type": DICOM_JSON},
            )
            assert changed.status_code == 200
            progress = _next(channel)
            assert _event(progress)[:2] == ("2.25.1", 3)
            assert value(value(progress, "00741002"), "00741004") == 60
            assert _state(ris, "2.25.1", "COMPLETED").status_code == 200
            assert _event(_next(channel)) == ("2.25.1", 1, "COMPLETED")
        _until_sent(rs, "web:RIS1")
        assert ris.delete(f"/workitems/{GLOBAL}/subscribers/RIS1").status_code == 200
        _create(ris, "2.25.3")
    assert _pending(rs, "web:RIS1") == []  # nothing more for an unsubscribed RIS


def test_workitem_subscription_hears_a_cancel_request(rs: ServedRs) -> None:
    with rs.client() as ris:
        _create(ris, "2.25.1")
        _create(ris, "2.25.2")
        lock = ris.post("/workitems/2.25.1/subscribers/RIS2", params={"deletionlock": "true"})
        assert lock.status_code == 201, lock.text
        assert ris.post("/workitems/2.25.404/subscribers/RIS2").status_code == 404
        with rs.channel("RIS2") as channel:
            assert _event(_next(channel)) == ("2.25.1", 1, "SCHEDULED")
            assert _state(ris, "2.25.1", "IN PROGRESS").status_code == 200
            assert _event(_next(channel)) == ("2.25.1", 1, "IN PROGRESS")
            # The other workitem is none of this subscriber's business.
            assert _state(ris, "2.25.2", "IN PROGRESS").status_code == 200
            asked = ris.post(
                "/workitems/2.25.1/cancelrequest",
                content=json.dumps([{"00741238": {"vr": "LT", "Value": ["patient left"]}}]),
                headers={"Content-Type": DICOM_JSON},
            )
            assert asked.status_code == 202, asked.text
            cancel = _next(channel)
            assert _event(cancel)[:2] == ("2.25.1", 2)  # Cancel Requested
            assert value(cancel, "00741238") == "patient left"
            assert value(cancel, "00741236") == "token:operator-sc"[:16]  # Requesting AE
        _until_sent(rs, "web:RIS2")
        assert ris.delete("/workitems/2.25.1/subscribers/RIS2").status_code == 200
        before = _events_of(rs, "web:RIS2")
        assert _state(ris, "2.25.1", "CANCELED").status_code == 200
    assert _events_of(rs, "web:RIS2") == before


def test_filtered_global_subscription_and_suspend(rs: ServedRs) -> None:
    with rs.client() as ris:
        made = ris.post(f"/workitems/{FILTERED}/subscribers/RIS3", params={"WorklistLabel": "HEAD"})
        assert made.status_code == 201, made.text
        with rs.channel("RIS3") as channel:
            _create(ris, "2.25.1", worklist="CHEST")
            _create(ris, "2.25.2", worklist="HEAD")
            assert _event(_next(channel)) == ("2.25.2", 1, "SCHEDULED")
            suspended = ris.post(f"/workitems/{FILTERED}/subscribers/RIS3/suspend")
            assert suspended.status_code == 200, suspended.text
            _create(ris, "2.25.3", worklist="HEAD")  # new: no longer heard of
            assert _state(ris, "2.25.2", "IN PROGRESS").status_code == 200  # still heard
            assert _event(_next(channel)) == ("2.25.2", 1, "IN PROGRESS")
        _until_sent(rs, "web:RIS3")
        with rs.node.sessions() as s:
            heard = set(
                s.scalars(select(UpsEvent.workitem_uid).where(UpsEvent.subscriber == "web:RIS3"))
            )
        assert heard == {"2.25.2"}
        assert ris.post("/workitems/2.25.1/subscribers/RIS3/suspend").status_code == 400
        unfiltered = ris.post(f"/workitems/{GLOBAL}/subscribers/RIS3", params={"Modality": "CT"})
        assert unfiltered.status_code == 400  # matching keys filter the filtered one only
        assert ris.post(f"/workitems/{GLOBAL}/subscribers/{'X' * 17}").status_code == 400


def test_events_written_by_another_process_reach_the_channel(rs: ServedRs) -> None:
    """The DIMSE service and the workers write through their own book: the channel finds
    their events on its next look (every second here), without a wake."""
    with rs.client() as ris:
        assert ris.post(f"/workitems/{GLOBAL}/subscribers/RIS4").status_code == 201
    elsewhere = WorkitemBook(rs.node.sessions)  # not the app's: nothing wakes the channel
    with rs.channel("RIS4") as channel:
        dataset = Dataset.from_json(workitem_json())
        uid = elsewhere.create(dataset, uid="2.25.77", origin=WorkitemOrigin.REQUESTED)
        assert _event(_next(channel)) == (uid, 1, "SCHEDULED")


def test_who_may_open_a_channel(rs: ServedRs) -> None:
    def refused(**kwargs: Any) -> int:
        with pytest.raises(InvalidStatus) as caught:
            rs.channel(**kwargs)
        return caught.value.response.status_code

    assert refused(aetitle="RIS5", role=Role.VIEWER) == 403
    assert refused(aetitle="R" * 17) == 403
    assert any(a.action == "refused" and "event channel" in a.reason for a in rs.node.actions)
    # A session cookie opens it only from the node's own pages.
    with httpx.Client(base_url=rs.url, timeout=30) as browser:
        form = browser.get("/signin")
        token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        browser.post(
            "/signin",
            data={"name": "operator", "password": "correct horse battery staple",
                  "csrf_token": token, "next": "/"},
        )  # fmt: skip
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    ws_url = rs.url.replace("http://", "ws://") + "/dicom-web/subscribers/RIS5"
    with pytest.raises(InvalidStatus) as nobody:
        connect(ws_url)
    assert nobody.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as foreign:
        connect(ws_url, additional_headers={"Cookie": cookie}, origin="http://evil.example")
    assert foreign.value.response.status_code == 403
    with connect(ws_url, additional_headers={"Cookie": cookie}, origin=rs.url) as channel:
        channel.ping().wait(5)
