"""A web app over a seeded database, for the ``test_web_*`` modules (fixtures in conftest).

Rows are inserted through the ORM; ``retry_job`` is a small real function that changes
the job row, so the API is checked against what the database then holds. Every role has
an API token and an account (``PASSWORD``); ``Node.client`` is an operator's client, and
``Node.as_role`` gives another role's or nobody's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from node.auth.accounts import AccountStore
from node.auth.actions import ActionRecord
from node.auth.principal import Principal
from node.auth.roles import Role
from node.auth.tokens import TokenStore
from node.db.models import (
    Base,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    JobStep,
    Patient,
    ResultObject,
    Series,
    SeriesState,
    StepState,
    Study,
)
from node.db.session import make_engine, make_session_factory, transaction
from node.settings import Settings
from node.web import create_app

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
BASE_URL = "http://127.0.0.1"  # an allowed Host (TestClient's default "testserver" is not)
PASSWORD = "correct horse battery staple"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _studies(s: Session) -> tuple[Series, Series]:
    """Two patients with a study each; four series; instances. Returns the two CT series."""
    jane = Patient(patient_id="PID001", patient_name="DOE^JANE")
    rick = Patient(patient_id="PID002", patient_name="ROE^RICHARD")
    chest = Study(
        study_instance_uid="1.2.826.0.1.1",
        patient=jane,
        study_date="20240105",
        accession_number="ACC1",
        study_description="CT CHEST",
        first_received_at=at(0),
        patient_conflicts="PatientName: DOE^JANE / DOE^JANET",
    )
    head = Study(
        study_instance_uid="1.2.826.0.1.2",
        patient=rick,
        study_date="20240210",
        accession_number="ACC2",
        study_description="<img src=x onerror=alert(1)>",
        first_received_at=at(60),
    )
    a1 = Series(
        series_instance_uid="1.2.826.0.1.1.1",
        study=chest,
        modality="CT",
        series_description="Lung 1mm",
        series_number=2,
        state=SeriesState.ROUTED,
        last_received_at=at(1),
        completed_at=at(2),
    )
    a2 = Series(
        series_instance_uid="1.2.826.0.1.1.2",
        study=chest,
        modality="SR",
        series_description="Dose report",
        series_number=1,
        state=SeriesState.NO_MODEL,
        state_reason="no model accepts modality SR",
        last_received_at=at(1),
        completed_at=at(2),
        completed_by="quiet period (60 s without a new instance)",
    )
    b1 = Series(
        series_instance_uid="1.2.826.0.1.2.1",
        study=head,
        modality="CT",
        series_description="Head axial",
        series_number=1,
        state=SeriesState.ROUTED,
        last_received_at=at(61),
        completed_at=at(62),
    )
    b2 = Series(
        series_instance_uid="1.2.826.0.1.2.2",
        study=head,
        modality="MR",
        series_description="T1",
        series_number=2,
        state=SeriesState.RECEIVING,
        last_received_at=at(63),
    )
    s.add_all([chest, head, a1, a2, b1, b2])
    for series, count in ((a1, 3), (a2, 1), (b1, 2)):
        for n in range(count):
            s.add(
                Instance(
                    sop_instance_uid=f"{series.series_instance_uid}.{n + 1}",
                    series=series,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    instance_number=n + 1,
                    path=f"{series.series_instance_uid}/{n + 1}.dcm",
                    size_bytes=1000,
                )
            )
    s.flush()
    return a1, b1


def _jobs(s: Session, a1: Series, b1: Series) -> dict[str, Job]:
    """A job in each interesting state, by that state's name."""
    succeeded = Job(
        series=a1,
        model_name="lung-nodules",
        model_version="1.0",
        state=JobState.SUCCEEDED,
        attempts=1,
        created_at=at(10),
        started_at=at(11),
        finished_at=at(12),
        findings={"nodules": 2},
    )
    failed = Job(
        series=b1,
        model_name="bleed",
        model_version="2.1",
        state=JobState.FAILED,
        error="CUDA out of memory",
        attempts=2,
        created_at=at(70),
        started_at=at(71),
        finished_at=at(72),
    )
    running = Job(
        series=b1,
        model_name="midline",
        model_version="0.3",
        state=JobState.RUNNING,
        attempts=1,
        created_at=at(80),
        started_at=at(81),
    )
    delivering = Job(
        series=a1,
        model_name="emphysema",
        model_version="1.2",
        state=JobState.DELIVERING,
        attempts=1,
        created_at=at(20),
        started_at=at(21),
    )
    s.add_all([succeeded, failed, running, delivering])
    s.flush()
    return {"succeeded": succeeded, "failed": failed, "running": running, "delivering": delivering}


def _steps(s: Session, jobs: dict[str, Job]) -> None:
    succeeded, failed, running = jobs["succeeded"], jobs["failed"], jobs["running"]
    steps = [
        (succeeded, 1, "load", "done", 0.5, ""),
        (succeeded, 1, "infer", "done", 2.5, ""),
        (succeeded, 1, "encode", "done", 0.25, ""),
        (succeeded, 1, "deliver", "done", 1.0, ""),
        (failed, 1, "load", "done", 1.0, ""),
        (failed, 1, "infer", "failed", 3.0, "oom"),
        (failed, 2, "load", "done", 0.5, ""),
        (failed, 2, "infer", "failed", 4.0, "CUDA out of memory"),
        (running, 1, "load", "done", 0.75, ""),
        (running, 1, "infer", "running", None, ""),
    ]
    for job, attempt, name, state, seconds, detail in steps:
        s.add(
            JobStep(
                job=job,
                attempt=attempt,
                name=name,
                state=StepState(state),
                seconds=seconds,
                detail=detail,
                started_at=job.started_at,
            )
        )


def _results(s: Session, jobs: dict[str, Job]) -> None:
    """Delivered results of the succeeded job; one half-delivered of the delivering job."""
    succeeded, delivering = jobs["succeeded"], jobs["delivering"]
    s.add_all(
        [
            ResultObject(
                job=succeeded,
                kind="SEG",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                sop_instance_uid="2.25.1",
                path="a/seg.dcm",
                deliveries=[
                    Delivery(
                        destination="pacs",
                        state=DeliveryState.DELIVERED,
                        attempts=1,
                        stored_at=at(12),
                        delivered_at=at(12),
                    )
                ],
            ),
            ResultObject(
                job=succeeded,
                kind="SR",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.88.33",
                sop_instance_uid="2.25.2",
                path="a/sr.dcm",
                deliveries=[
                    Delivery(
                        destination="pacs",
                        state=DeliveryState.DELIVERED,
                        attempts=1,
                        stored_at=at(12),
                        delivered_at=at(12),
                    )
                ],
            ),
            ResultObject(
                job=delivering,
                kind="SEG",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                sop_instance_uid="2.25.3",
                path="b/seg.dcm",
                deliveries=[
                    Delivery(
                        destination="archive",
                        state=DeliveryState.PENDING,
                        attempts=2,
                        next_attempt_at=at(13),
                        last_error="association rejected",
                    ),
                    Delivery(
                        destination="viewer",
                        state=DeliveryState.DELIVERED,
                        attempts=1,
                        next_attempt_at=at(11),
                        stored_at=at(12),
                        delivered_at=at(12),
                    ),
                ],
            ),
        ]
    )


def seed(sessions: sessionmaker[Session]) -> None:
    """Two patients, two studies, four series, four jobs in every interesting state."""
    with transaction(sessions) as s:
        a1, b1 = _studies(s)
        jobs = _jobs(s, a1, b1)
        _steps(s, jobs)
        _results(s, jobs)


def make_retry(sessions: sessionmaker[Session]) -> Callable[[int, Principal, str], None]:
    """A real retry: a failed job goes back to queued; anything else is refused."""

    def retry(job_id: int, _principal: Principal, _reason: str) -> None:
        with transaction(sessions) as s:
            job = s.get(Job, job_id)
            if job is None:
                raise LookupError(job_id)
            if job.state != JobState.FAILED:
                raise ValueError(f"job {job_id} is {job.state.value}; only a failed job retries")
            job.state = JobState.QUEUED
            job.error = ""
            job.finished_at = None

    return retry


@dataclass
class Node:
    client: TestClient  # an operator's (API token)
    sessions: sessionmaker[Session]
    health: dict[str, bool]
    app: FastAPI
    tokens: dict[Role, str]  # one live API token per role
    actions: list[ActionRecord]  # what the app told record_action, in order

    def as_role(self, role: Role | None) -> TestClient:
        """A client sending ``role``'s API token; ``None``: no credentials at all."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return TestClient(self.app, base_url=BASE_URL, headers=headers)

    def signed_in(self, role: Role) -> tuple[TestClient, str]:
        """A client signed in through the form as ``role``'s account; its CSRF token."""
        client = TestClient(self.app, base_url=BASE_URL)
        form = client.get("/signin")
        csrf = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        response = client.post(
            "/signin",
            data={"name": role.value, "password": PASSWORD, "csrf_token": csrf, "next": "/"},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        token = client.get("/api/session").json()["csrf_token"]
        return client, token


def add_principals(sessions: sessionmaker[Session]) -> dict[Role, str]:
    """An account named after each role (password ``PASSWORD``) and a token per role."""
    accounts, tokens = AccountStore(sessions), TokenStore(sessions)
    issued = {}
    for role in Role:
        accounts.add(role.value, role, PASSWORD)
        issued[role] = tokens.create(role, f"{role.value}-script").token
    return issued


JobActions = Callable[[sessionmaker[Session]], dict[str, object]]
"""Builds ``retry_job`` (and ``reanalyse_job``) for ``create_app`` over the node's sessions."""


@contextmanager
def served_node(
    database_url: str,
    data_dir: Path,
    job_actions: JobActions | None = None,
    **settings_values: object,
) -> Iterator[Node]:
    """The app over a freshly seeded database at ``database_url``; ``job_actions`` wires
    the node's real retry and re-analysis instead of ``make_retry``."""
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        ae_title="AINODE_T",
        destinations=[
            {"name": "viewer", "stow_url": "http://viewer/dicom-web", "kinds": ["SR", "SC"]}
        ],
        **settings_values,  # type: ignore[arg-type]
    )
    engine = make_engine(settings)
    Base.metadata.create_all(engine)
    sessions = make_session_factory(engine)
    seed(sessions)
    tokens = add_principals(sessions)
    health = {"scp": True, "database": True, "broker": True}
    actions: list[ActionRecord] = []
    wired = job_actions(sessions) if job_actions else {"retry_job": make_retry(sessions)}
    app = create_app(
        settings,
        sessions,
        health=lambda: dict(health),
        record_action=actions.append,
        **wired,  # type: ignore[arg-type]
    )
    headers = {"Authorization": f"Bearer {tokens[Role.OPERATOR]}"}
    try:
        with TestClient(app, base_url=BASE_URL, headers=headers) as client:
            yield Node(client, sessions, health, app, tokens, actions)
    finally:
        engine.dispose()


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def job_id_of(node: Node, model_name: str) -> int:
    return next(
        j["id"] for j in node.client.get("/api/jobs").json() if j["model_name"] == model_name
    )
