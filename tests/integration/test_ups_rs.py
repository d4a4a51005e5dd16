"""UPS-RS workitem resources (PS3.18 Chapter 11) over real HTTP, on SQLite and PostgreSQL:
create, retrieve, search, claim, update, complete, cancel; roles and masking.

The app is served by uvicorn on a free port; httpx is the RIS. What the answers say is
checked against the workitem book's rows where it matters (the state, the claim).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from node.auth.roles import Role
from node.db.worklist import UpsPriority, UpsState, Workitem
from tests.ups_rs import (
    DICOM_JSON,
    STUDY_UID,
    ServedRs,
    completion,
    served_rs,
    state_change,
    value,
    workitem_json,
)

UID_A = "2.25.1001"
UID_B = "2.25.1002"
CLAIM = "2.25.9001"


@pytest.fixture
def rs(database_url: str, tmp_path: Path) -> Iterator[ServedRs]:
    with served_rs(database_url, tmp_path) as served:
        yield served


def _row(rs: ServedRs, uid: str) -> Workitem:
    with rs.node.sessions() as s:
        row = s.scalars(select(Workitem).where(Workitem.sop_instance_uid == uid)).one()
        s.expunge(row)
        return row


def _post_json(client, url: str, body: object, **kwargs):  # type: ignore[no-untyped-def]
    return client.post(
        url, content=json.dumps(body), headers={"Content-Type": DICOM_JSON}, **kwargs
    )


def _create(rs: ServedRs, uid: str | None = UID_A, **fields: str) -> str:
    with rs.client() as ris:
        params = {"workitem": uid} if uid else {}
        answer = _post_json(ris, "/workitems", [workitem_json(**fields)], params=params)
    assert answer.status_code == 201, answer.text
    return answer.headers["Location"].rsplit("/", 1)[1]


def test_create_retrieve_and_search(rs: ServedRs) -> None:
    with rs.client() as ris:
        made = _post_json(ris, "/workitems", [workitem_json()], params={"workitem": UID_A})
        assert made.status_code == 201, made.text
        assert made.headers["Location"] == f"{rs.url}/dicom-web/workitems/{UID_A}"
        # Without the parameter the node makes the UID; a single object is taken too.
        other = _post_json(
            ris, "/workitems", workitem_json(label="Bleed", priority="HIGH", worklist="HEAD")
        )
        assert other.status_code == 201, other.text
        uid_b = other.headers["Location"].rsplit("/", 1)[1]
        assert uid_b.startswith("2.25.")
        again = _post_json(ris, "/workitems", [workitem_json()], params={"workitem": UID_A})
        assert again.status_code == 409
        assert again.headers["Warning"].startswith(f"299 {rs.url}/dicom-web: ")
        bad_uid = _post_json(ris, "/workitems", [workitem_json()], params={"workitem": "1.2.x"})
        assert bad_uid.status_code == 400
        claimed = {**workitem_json(), "00741000": {"vr": "CS", "Value": ["IN PROGRESS"]}}
        not_scheduled = _post_json(ris, "/workitems", [claimed])
        assert (not_scheduled.status_code, not_scheduled.json()["dimse_status"]) == (400, "C309")
        bad_vr = _post_json(ris, "/workitems", [{"00100010": {"vr": "XX"}}])
        assert bad_vr.status_code == 400
        assert "vr" in bad_vr.json()["detail"]
        two = _post_json(ris, "/workitems", [workitem_json(), workitem_json()])
        assert two.status_code == 400

        got = ris.get(f"/workitems/{UID_A}", headers={"Accept": DICOM_JSON})
        assert got.status_code == 200
        assert got.headers["content-type"] == DICOM_JSON
        (item,) = got.json()
        assert value(item, "00080018") == UID_A
        assert value(item, "00080016") == "1.2.840.10008.5.1.4.34.6.1"  # UPS Push
        assert value(item, "00741000") == "SCHEDULED"
        assert value(item, "00100010") == {"Alphabetic": "DOE^JANE"}  # operators see it
        assert value(value(item, "00404021"), "0020000D") == STUDY_UID
        assert list(item) == sorted(item)  # attributes in tag order
        assert ris.get("/workitems/2.25.404").status_code == 404

        def uids(**params: str) -> list[str]:
            answer = ris.get("/workitems", params=params)
            if answer.status_code == 204:
                return []
            assert answer.status_code == 200, answer.text
            return [value(found, "00080018") for found in answer.json()]

        assert uids(ProcedureStepState="SCHEDULED") == [UID_A, uid_b]
        assert uids(ScheduledProcedureStepPriority="HIGH") == [uid_b]
        assert uids(ProcedureStepLabel="Lung*") == [UID_A]
        assert uids(**{"00741202": "HEAD"}) == [uid_b]  # a tag works as the keyword does
        assert uids(**{"ScheduledWorkitemCodeSequence.CodeValue": "lung-nodules"}) == [
            UID_A,
            uid_b,
        ]
        assert uids(PatientID="PID001", ProcedureStepLabel="Bleed") == [uid_b]
        assert uids(ProcedureStepState="COMPLETED") == []  # 204 No Content

        # What a match shows without includefield (Return Key Type 1 and 2), and with.
        found = ris.get("/workitems", params={"SOPInstanceUID": UID_A}).json()[0]
        for tag in ("00741204", "00741200", "00741000", "00100010", "00404021", "0040A370"):
            assert tag in found, tag
        assert "00100040" in found and "00380010" in found
        everything = ris.get(
            "/workitems", params={"SOPInstanceUID": UID_A, "includefield": "all"}
        ).json()[0]
        assert value(everything, "00404041") == "READY"

        paged = ris.get("/workitems", params={"limit": "1", "fuzzymatching": "true"})
        assert [value(f, "00080018") for f in paged.json()] == [UID_A]
        warnings = paged.headers.get_list("Warning")
        assert any("additional results" in w for w in warnings), warnings
        assert any("fuzzymatching parameter is not supported" in w for w in warnings)
        second = ris.get("/workitems", params={"limit": "1", "offset": "1"})
        assert [value(f, "00080018") for f in second.json()] == [uid_b]

        assert ris.get("/workitems", params={"NoSuchKeyword": "x"}).status_code == 400
        assert ris.get("/workitems", params={"limit": "-1"}).status_code == 400
        refused_xml = ris.get("/workitems", headers={"Accept": "application/dicom+xml"})
        assert refused_xml.status_code == 406
    assert _row(rs, uid_b).priority is UpsPriority.HIGH


def test_claim_update_and_complete(rs: ServedRs) -> None:
    _create(rs)
    with rs.client() as ris:
        url = f"/workitems/{UID_A}"
        # A SCHEDULED workitem is updated without a Transaction UID.
        scheduled = _post_json(ris, url, [{"00741204": {"vr": "LO", "Value": ["Lung v2"]}}])
        assert scheduled.status_code == 200, scheduled.text

        claimed = ris.put(
            f"{url}/state",
            content=json.dumps(state_change("IN PROGRESS", CLAIM)),
            headers={"Content-Type": DICOM_JSON},
        )
        assert claimed.status_code == 200, claimed.text
        row = _row(rs, UID_A)
        assert (row.state, row.transaction_uid) == (UpsState.IN_PROGRESS, CLAIM)
        assert row.label == "Lung v2"
        second_claim = ris.put(
            f"{url}/state",
            content=json.dumps(state_change("IN PROGRESS", "2.25.9002")),
            headers={"Content-Type": DICOM_JSON},
        )
        assert second_claim.status_code == 409
        assert "IN PROGRESS" in second_claim.headers["Warning"]

        item = ris.get(url).json()[0]
        assert value(item, "00741000") == "IN PROGRESS"
        assert "00081195" not in item  # the Transaction UID is the owner's secret

        progress = completion(progress="40")
        assert _post_json(ris, url, progress).status_code == 409  # no transaction
        wrong = _post_json(ris, url, progress, params={"transaction": "2.25.666"})
        assert wrong.status_code == 409
        assert "Transaction UID" in wrong.headers["Warning"]
        assert wrong.json()["dimse_status"] == "C301"
        in_body = _post_json(
            ris, url, [{**progress[0], "00081195": state_change("", CLAIM)[0]["00081195"]}]
        )
        assert in_body.status_code == 400
        assert _post_json(ris, url, progress, params={"transaction": CLAIM}).status_code == 200
        assert _row(rs, UID_A).progress == 40

        garbled = ris.post(
            url, params={"transaction": CLAIM}, content=b"not json",
            headers={"Content-Type": DICOM_JSON},
        )  # fmt: skip
        assert garbled.status_code == 400
        plain = ris.post(url, params={"transaction": CLAIM}, content=b"<x/>",
                         headers={"Content-Type": "application/dicom+xml"})  # fmt: skip
        assert plain.status_code == 415
        no_uid = ris.put(
            f"{url}/state",
            content=json.dumps([{"00741000": {"vr": "CS", "Value": ["COMPLETED"]}}]),
            headers={"Content-Type": DICOM_JSON},
        )
        assert no_uid.status_code == 400

        def complete() -> object:
            return ris.put(
                f"{url}/state",
                content=json.dumps(state_change("COMPLETED", CLAIM)),
                headers={"Content-Type": DICOM_JSON},
            )

        done = complete()
        assert done.status_code == 200, done.text
        assert "Warning" not in done.headers
        again = complete()
        assert again.status_code == 200
        assert "already in the requested state of COMPLETED" in again.headers["Warning"]
        late = _post_json(ris, url, progress, params={"transaction": CLAIM})
        assert late.status_code == 409
    row = _row(rs, UID_A)
    assert row.state is UpsState.COMPLETED
    assert row.finished_at is not None


def test_completing_without_the_final_state_attributes_is_refused(rs: ServedRs) -> None:
    _create(rs)
    with rs.client() as ris:
        for state in ("IN PROGRESS", "COMPLETED"):
            answer = ris.put(
                f"/workitems/{UID_A}/state",
                content=json.dumps(state_change(state, CLAIM)),
                headers={"Content-Type": DICOM_JSON},
            )
        assert answer.status_code == 409
        assert answer.json()["dimse_status"] == "C304"
        scheduled = ris.put(
            f"/workitems/{UID_A}/state",
            content=json.dumps(state_change("SCHEDULED", CLAIM)),
            headers={"Content-Type": DICOM_JSON},
        )
        assert scheduled.status_code == 400
    assert _row(rs, UID_A).state is UpsState.IN_PROGRESS


def test_cancel_requests(rs: ServedRs) -> None:
    _create(rs, UID_A)
    _create(rs, UID_B)
    with rs.client() as ris:
        reason = [{"00741238": {"vr": "LT", "Value": ["ordered twice"]}}]
        # SCHEDULED: canceled at once.
        first = _post_json(ris, f"/workitems/{UID_A}/cancelrequest", reason)
        assert first.status_code == 202, first.text
        assert _row(rs, UID_A).state is UpsState.CANCELED
        again = ris.post(f"/workitems/{UID_A}/cancelrequest")  # no payload is allowed
        assert again.status_code == 202
        assert "already in the requested state of CANCELED" in again.headers["Warning"]
        item = ris.get(f"/workitems/{UID_A}").json()[0]
        assert value(item, "00741000") == "CANCELED"
        assert value(item, "00741238") == "ordered twice"

        # COMPLETED: too late.
        for state in ("IN PROGRESS",):
            ris.put(
                f"/workitems/{UID_B}/state",
                content=json.dumps(state_change(state, CLAIM)),
                headers={"Content-Type": DICOM_JSON},
            )
        _post_json(ris, f"/workitems/{UID_B}", completion(), params={"transaction": CLAIM})
        ris.put(
            f"/workitems/{UID_B}/state",
            content=json.dumps(state_change("COMPLETED", CLAIM)),
            headers={"Content-Type": DICOM_JSON},
        )
        late = ris.post(f"/workitems/{UID_B}/cancelrequest")
        assert late.status_code == 409
        assert late.json()["dimse_status"] == "C311"
        assert ris.post("/workitems/2.25.404/cancelrequest").status_code == 404


def test_roles_and_masking(rs: ServedRs) -> None:
    _create(rs)
    with rs.client(Role.VIEWER) as viewer, rs.client(None) as nobody:
        assert nobody.get("/workitems").status_code == 401
        item = viewer.get(f"/workitems/{UID_A}").json()[0]
        assert value(item, "00100010") == {"Alphabetic": "***"}
        assert value(item, "00100020") == "***"
        assert "Value" not in item["00100030"]  # the birth date is never shown to them
        assert value(value(item, "00101002"), "00100020") == "***"  # Other Patient IDs
        assert value(value(item, "0040A370"), "00080050") == "***"  # the accession
        assert value(item, "00741204") == "Lung nodules"  # the rest as it is
        found = viewer.get("/workitems", params={"ProcedureStepState": "SCHEDULED"}).json()
        assert value(found[0], "00100020") == "***"
        probe = viewer.get("/workitems", params={"PatientID": "PID001"})
        assert probe.status_code == 403  # no matching on what they may not see

        for answer in (
            _post_json(viewer, "/workitems", [workitem_json()]),
            _post_json(viewer, f"/workitems/{UID_A}", completion()),
            viewer.put(
                f"/workitems/{UID_A}/state",
                content=json.dumps(state_change("IN PROGRESS", CLAIM)),
                headers={"Content-Type": DICOM_JSON},
            ),  # fmt: skip
            viewer.post(f"/workitems/{UID_A}/cancelrequest"),
            viewer.post(f"/workitems/{UID_A}/subscribers/VIEWER1"),
            viewer.delete(f"/workitems/{UID_A}/subscribers/VIEWER1"),
        ):
            assert answer.status_code == 403, answer.request.url
        assert nobody.post(f"/workitems/{UID_A}/cancelrequest").status_code == 401
    assert _row(rs, UID_A).state is UpsState.SCHEDULED
    refused = [a for a in rs.node.actions if a.action == "refused"]
    assert len(refused) >= 6
    with rs.client(Role.ADMIN) as admin:
        shown = admin.get(f"/workitems/{UID_A}").json()[0]
        assert value(shown, "00100020") == "PID001"


def test_a_session_needs_its_csrf_token(rs: ServedRs) -> None:
    """A signed-in browser's state change needs the CSRF token; a bearer token does not."""
    import httpx

    with httpx.Client(base_url=rs.url, timeout=30) as browser:
        form = browser.get("/signin")
        token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        signed = browser.post(
            "/signin",
            data={"name": "operator", "password": "correct horse battery staple",
                  "csrf_token": token, "next": "/"},
            follow_redirects=False,
        )  # fmt: skip
        assert signed.status_code == 303
        body = json.dumps([workitem_json()])
        headers = {"Content-Type": DICOM_JSON}
        assert (
            browser.post("/dicom-web/workitems", content=body, headers=headers).status_code == 403
        )
        csrf = browser.get("/api/session").json()["csrf_token"]
        made = browser.post(
            "/dicom-web/workitems", content=body, headers={**headers, "X-CSRF-Token": csrf}
        )
        assert made.status_code == 201, made.text
