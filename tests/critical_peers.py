"""The peers a critical finding is told to, run by the tests: an HL7 MLLP listener (the
``hl7`` package's asyncio MLLP server, answering real ACKs), a FHIR endpoint that
validates every POST with ``fhir.resources``, and a webhook receiver that checks the
HMAC; and a job whose KOS and critical findings are recorded, ready to deliver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import hl7
import numpy as np
from fastapi import FastAPI, Request, Response
from fhir.resources.R4B.bundle import Bundle
from hl7.mllp import start_hl7_server
from pydantic import ValidationError
from pydicom import Dataset

from models.manifest import ModelManifest
from node.db.models import Job, Patient, ResultKind, Series, Study
from node.db.session import SessionFactory, transaction
from node.jobs.ledger import JobLedger, NewResult
from node.settings import Settings
from tests.browser import uvicorn_thread
from tests.factories import fake_manifest, make_ct_series
from workers.critical import FiredRule, critical_summary
from workers.encode.identity import ResultUIDs
from workers.encode.kos import encode_key_objects
from workers.volume import Volume

KOS_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
NODULE = {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"}


# HL7 v2 over MLLP ----------------------------------------------------------------


@dataclass
class MllpListener:
    """An MLLP listener on a free loopback port that answers each message with
    ``ack_code`` (AA, AE, AR), or never answers when ``ack_code`` is None."""

    ack_code: str | None = "AA"
    port: int = 0
    received: list[hl7.Message] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    async def _client(self, reader, writer) -> None:  # noqa: ANN001 - hl7's streams
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                self.received.append(message)
                self.arrived.set()
                if self.ack_code is not None:
                    writer.writemessage(message.create_ack(self.ack_code))
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass  # the sender closed the connection
        finally:
            writer.close()


@contextmanager
def mllp_listener(
    ack_code: str | None = "AA", tls: ssl.SSLContext | None = None
) -> Iterator[MllpListener]:
    """A running :class:`MllpListener` in a thread of its own (MLLP inside TLS with a
    server context ``tls``), its event loop stopped after."""
    listener = MllpListener(ack_code)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    servers: list[asyncio.Server] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            server = await start_hl7_server(
                listener._client, "127.0.0.1", 0, encoding="utf-8", ssl=tls
            )
            listener.port = server.sockets[0].getsockname()[1]
            servers.append(server)
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the MLLP listener did not start")
    try:
        yield listener
    finally:

        async def stop() -> None:
            servers[0].close()
            await servers[0].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# FHIR --------------------------------------------------------------------------


@dataclass
class FhirEndpoint:
    """A FHIR server's transaction endpoint: each POST parsed with ``fhir.resources``
    (the validator), 201 when valid, 422 with an OperationOutcome when not, or when
    ``unknown_patient`` is set (a server that cannot match the patient's identifier)."""

    unknown_patient: bool = False
    url: str = ""
    bundles: list[Bundle] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)


@contextmanager
def fhir_endpoint(unknown_patient: bool = False) -> Iterator[FhirEndpoint]:
    endpoint = FhirEndpoint(unknown_patient)
    app = FastAPI()

    @app.post("/fhir")
    async def transaction(request: Request) -> Response:
        endpoint.content_types.append(request.headers.get("content-type", ""))
        try:
            bundle = Bundle.model_validate_json(await request.body())
        except ValidationError as exc:
            endpoint.refused.append(str(exc))
            return _unprocessable("invalid", str(exc))
        if endpoint.unknown_patient:
            endpoint.refused.append("unknown patient")
            return _unprocessable("not-found", "no patient has this identifier")
        endpoint.bundles.append(bundle)
        response = {"resourceType": "Bundle", "type": "transaction-response", "entry": []}
        return Response(json.dumps(response), 201, media_type="application/fhir+json")

    with uvicorn_thread(app) as base:
        endpoint.url = f"{base}/fhir"
        yield endpoint


def _unprocessable(code: str, diagnostics: str) -> Response:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return Response(json.dumps(outcome), 422, media_type="application/fhir+json")


# Webhook -----------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """An endpoint that takes a POST only when its HMAC-SHA256 signature is right (204),
    refusing it otherwise (401)."""

    secret: bytes
    url: str = ""
    accepted: list[dict] = field(default_factory=list)
    deliveries: list[str] = field(default_factory=list)
    refused: int = 0


@contextmanager
def webhook_receiver(secret: str) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret.encode())
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        body = await request.body()
        expected = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
        given = request.headers.get("x-ainode-signature", "")
        if not hmac.compare_digest(expected, given):
            receiver.refused += 1
            return Response("bad signature", 401)
        receiver.accepted.append(json.loads(body))
        receiver.deliveries.append(request.headers.get("x-ainode-delivery", ""))
        return Response(status_code=204)

    with uvicorn_thread(app) as base:
        receiver.url = f"{base}/hook"
        yield receiver


# A job with a critical finding -------------------------------------------------


def classifier_manifest() -> ModelManifest:
    return fake_manifest(
        "critical-classifier",
        "classification",
        classes=[{"name": "nodule", "finding": NODULE, "threshold": 0.5,
                  "critical": {"threshold": 0.9, "urgency": "STAT"}}],
    )  # fmt: skip


def source_series(
    slices: int = 4, patient_name: str = "Doe^Jane", patient_id: str = "CRIT-1"
) -> list[Dataset]:
    """A small CT series whose slices 1 and 2 show a finding."""
    hu = np.full((slices, 16, 16), -800.0)
    return make_ct_series(hu, patient_id=patient_id, patient_name=patient_name)


def volume_of(datasets: list[Dataset]) -> Volume:
    """The series as the loader would give it (the headers are what the KOS reads)."""
    count = len(datasets)
    return Volume(
        voxels=np.zeros((count, 16, 16), dtype=np.float32),
        spacing=(2.5, 0.8, 0.8),
        origin=np.zeros(3),
        row_direction=np.array([1.0, 0, 0]),
        column_direction=np.array([0, 1.0, 0]),
        slice_direction=np.array([0, 0, 1.0]),
        datasets=datasets,
    )


def fired_nodule(value: float = 0.97, slices: tuple[int, ...] = (2, 1)) -> FiredRule:
    spec = classifier_manifest().outputs.classes[0]
    assert spec.critical is not None
    return FiredRule(
        output=spec.name, finding=spec.finding, value=value, unit="",
        threshold=spec.critical.threshold, urgency=spec.critical.urgency, slices=slices,
    )  # fmt: skip


def critical_job(
    sessions: SessionFactory, settings: Settings, datasets: list[Dataset] | None = None
) -> tuple[int, Dataset]:
    """A classifier job whose KOS is written and whose critical finding is recorded,
    planned into the outbox for ``settings``' destinations; (job id, the KOS)."""
    datasets = datasets or source_series()
    manifest = classifier_manifest()
    volume = volume_of(datasets)
    fired = [fired_nodule()]
    uids = ResultUIDs.of_volume(volume, manifest)
    kos = encode_key_objects(volume, manifest, fired, uids.ko_series, uids.ko_instance)
    first = datasets[0]
    with transaction(sessions) as session:
        study = Study(
            study_instance_uid=str(first.StudyInstanceUID),
            patient=Patient(patient_id=str(first.PatientID)),
        )
        series = Series(
            series_instance_uid=str(first.SeriesInstanceUID), study=study, modality="CT"
        )
        job = Job(series=series, model_name=manifest.name, model_version=manifest.version)
        session.add(job)
        session.flush()
        job_id = job.id
    relative = Path(f"{job_id}/ko-{kos.SOPInstanceUID}.dcm")
    (settings.results_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    kos.save_as(settings.results_dir / relative, enforce_file_format=True)
    findings = {"model": manifest.name, "critical": critical_summary(fired)}
    JobLedger(sessions).analyzed(
        job_id,
        findings,
        [NewResult(ResultKind.KO, KOS_CLASS, str(kos.SOPInstanceUID), str(relative))],
        settings.all_destinations,
    )
    return job_id, kos
