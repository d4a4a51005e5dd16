"""Critical findings told as a FHIR R4 DiagnosticReport with its Observations, in a
transaction Bundle POSTed to a FHIR endpoint that parses every request with
``fhir.resources`` (its validator): 201 delivers; 422 is a failed attempt, retried and
dead-lettered through the outbox."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from node.db.models import DeliveryState, JobState
from node.delivery.critical_facts import critical_facts, study_facts
from node.delivery.destinations import FhirDestination
from node.delivery.fhir_report import report_bundle
from node.delivery.notification import Notification
from node.settings import Settings
from tests.critical_peers import critical_job, fhir_endpoint
from tests.integration.test_critical_hl7 import deliver_until_settled, delivery_row, sessions_for


def make_settings(tmp_path: Path, url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        destinations=[
            FhirDestination(
                name="ehr", fhir_url=url, timeout_seconds=5,
                patient_identifier_system="urn:oid:1.2.3.4.5",
                http_headers={"Authorization": "Bearer not-shown"},
            )
        ],
        delivery_attempts=2,
        delivery_backoff_seconds=0.2,
        delivery_backoff_max_seconds=0.4,
    )  # fmt: skip


def test_a_diagnostic_report_that_the_validator_accepts_is_delivered(tmp_path: Path) -> None:
    with fhir_endpoint() as endpoint:
        settings = make_settings(tmp_path, endpoint.url)
        for sessions in sessions_for(settings):
            job_id, kos = critical_job(sessions, settings)
            assert deliver_until_settled(settings, sessions, job_id) is JobState.SUCCEEDED
            assert delivery_row(sessions).state is DeliveryState.DELIVERED
    assert endpoint.refused == [] and len(endpoint.bundles) == 1
    assert endpoint.content_types == ["application/fhir+json"]
    bundle = endpoint.bundles[0]
    assert bundle.type == "transaction"
    observation, report = (entry.resource for entry in bundle.entry)
    assert isinstance(observation, Observation) and isinstance(report, DiagnosticReport)
    assert [e.request.method for e in bundle.entry] == ["POST", "POST"]
    assert bundle.entry[1].request.ifNoneExist == (
        f"identifier=urn:dicom:uid|urn:oid:{kos.SOPInstanceUID}"
    )

    coding = observation.code.coding[0]
    assert (coding.system, coding.code) == ("http://snomed.info/sct", "27925004")
    assert float(observation.valueQuantity.value) == 0.97
    assert observation.valueQuantity.code == "1"
    assert observation.interpretation[0].coding[0].code == "AA"
    assert observation.status == "preliminary"
    assert observation.subject.identifier.value == "CRIT-1"
    assert observation.subject.identifier.system == "urn:oid:1.2.3.4.5"

    assert report.status == "preliminary"
    assert report.result[0].reference == bundle.entry[0].fullUrl
    study = report.imagingStudy[0].identifier
    assert (study.system, study.value) == ("urn:dicom:uid", f"urn:oid:{kos.StudyInstanceUID}")
    assert report.meta.tag[0].code == "S"  # ActPriority stat
    assert report.effectiveDateTime is not None
    assert "probability 0.970" in report.conclusion


def test_a_report_the_server_refuses_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    with fhir_endpoint(unknown_patient=True) as endpoint:
        settings = make_settings(tmp_path, endpoint.url)
        for sessions in sessions_for(settings):
            job_id, _ = critical_job(sessions, settings)
            state = deliver_until_settled(settings, sessions, job_id)
            row = delivery_row(sessions)
    assert state is JobState.FAILED
    assert row.state is DeliveryState.DEAD and row.attempts == 2
    assert "HTTP 422" in row.last_error and "no patient has this identifier" in row.last_error


def test_the_endpoint_refuses_what_the_fhir_models_do_not_allow(tmp_path: Path) -> None:
    """The validator is real: the node's own Bundle with a study time but no zone (which
    FHIR forbids) and a field R4 does not have is refused with 422."""
    with fhir_endpoint() as endpoint:
        settings = make_settings(tmp_path, endpoint.url)
        for sessions in sessions_for(settings):
            job_id, _ = critical_job(sessions, settings)
            facts = critical_facts(sessions, job_id)
        assert facts is not None
        kos = next(settings.results_dir.rglob("ko-*.dcm"))
        notice = Notification(study=study_facts(kos), critical=facts)
        bundle = json.loads(report_bundle(notice).model_dump_json(exclude_none=True))
        report = bundle["entry"][-1]["resource"]
        report["effectiveDateTime"] = "2024-01-02T08:00:00"  # no zone
        report["priority"] = "stat"  # not a DiagnosticReport element
        answer = httpx.post(endpoint.url, json=bundle, timeout=10)
    assert answer.status_code == 422
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert "effectiveDateTime" in endpoint.refused[0] and "priority" in endpoint.refused[0]
