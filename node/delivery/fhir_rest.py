"""Telling a FHIR server of critical findings: the send of ``fhir`` destinations.

Each notification is a transaction Bundle (``node.delivery.fhir_report``: the
DiagnosticReport and its Observations) POSTed to the server's base URL as
``application/fhir+json``. A 2xx answer is delivered; any other status (the server's
OperationOutcome quoted), a connection error or no answer within the destination's
``timeout_seconds`` is a ``DeliveryError``, retried by the outbox.
"""

from __future__ import annotations

import httpx

from node.delivery.destinations import FhirDestination
from node.delivery.fhir_report import report_bundle
from node.delivery.notification import notifications
from node.delivery.transports import DeliveryError, Outgoing, sends

FHIR_JSON = "application/fhir+json"
_EXCERPT_CHARS = 300


@sends(FhirDestination)
def send_to_fhir(destination: FhirDestination, files: list[Outgoing], calling_aet: str) -> None:
    """The send of ``fhir`` destinations: each Bundle answered 2xx, or DeliveryError.

    FHIR has no calling AE title; the server knows the node by ``http_headers``."""
    bundles = [
        report_bundle(notice, destination.patient_identifier_system)
        for notice in notifications(files)
    ]
    headers = {**destination.http_headers, "Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    with httpx.Client(timeout=destination.timeout_seconds, headers=headers) as client:
        for bundle in bundles:
            try:
                response = client.post(
                    destination.fhir_url, content=bundle.model_dump_json(exclude_none=True)
                )
            except httpx.HTTPError as exc:
                raise DeliveryError(f"FHIR POST to {destination} failed: {exc!r}") from exc
            if not response.is_success:
                raise DeliveryError(
                    f"{destination} answered HTTP {response.status_code}: "
                    f"{response.text[:_EXCERPT_CHARS]}"
                )
