"""Telling any HTTP endpoint of critical findings: the send of ``webhook`` destinations.

Each notification is one JSON document POSTed to the destination's ``url``: the
findings (code, value, unit, threshold, urgency, words), the study (patient identifier
and name, Study Instance UID, accession number), the job and model, and the KOS's SOP
Instance UID. The body is signed with HMAC-SHA256 under the destination's secret, in
the header ``X-Ainode-Signature: sha256=<hex>``, so the receiver can tell it came from
the node and was not changed; ``X-Ainode-Delivery`` names the notification, the same
on every retry, so a receiver can drop a repeat. A 2xx answer is delivered; anything
else, a connection error or a timeout is a ``DeliveryError``, retried by the outbox.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from node.delivery.destinations import WebhookDestination
from node.delivery.notification import Notification, notifications
from node.delivery.transports import DeliveryError, Outgoing, sends

SIGNATURE_HEADER = "X-Ainode-Signature"
DELIVERY_HEADER = "X-Ainode-Delivery"
EVENT = "critical-finding"
_EXCERPT_CHARS = 300


def signature(key: bytes, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=`` and the HMAC in hex."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def payload(notice: Notification, node_ae_title: str) -> dict[str, Any]:
    """The JSON document of one notification."""
    study, critical = notice.study, notice.critical
    return {
        "event": EVENT,
        "node": node_ae_title,
        "urgency": critical.urgency.value,
        "findings": [
            {
                "id": f.id,
                "output": f.output,
                "code": {"value": f.code_value, "scheme": f.code_scheme, "meaning": f.code_meaning},
                "value": f.value,
                "unit": f.unit,
                "threshold": f.threshold,
                "urgency": f.urgency.value,
                "text": f.text,
            }
            for f in critical.findings
        ],
        "study": {
            "study_instance_uid": study.study_instance_uid,
            "accession_number": study.accession_number,
            "study_date": study.study_date,
            "description": study.study_description,
            "patient_id": study.patient_id,
            "issuer_of_patient_id": study.issuer_of_patient_id,
            "patient_name": study.patient_name,
        },
        "job": {
            "id": critical.job_id,
            "model": critical.model_name,
            "model_version": critical.model_version,
            "detected_at": critical.detected_at.isoformat(),
        },
        "key_objects": {
            "sop_instance_uid": notice.key_objects_uid,
            "series_instance_uid": study.series_instance_uid,
        },
    }


@sends(WebhookDestination)
def send_webhook(destination: WebhookDestination, files: list[Outgoing], calling_aet: str) -> None:
    """The send of ``webhook`` destinations: each POST answered 2xx, or DeliveryError."""
    try:
        key = destination.signing_key()
    except OSError as exc:
        raise DeliveryError(f"cannot read the secret of {destination.name}: {exc}") from exc
    with httpx.Client(timeout=destination.timeout_seconds) as client:
        for notice in notifications(files):
            body = json.dumps(payload(notice, calling_aet), sort_keys=True).encode()
            headers = {
                **destination.http_headers,
                "Content-Type": "application/json",
                SIGNATURE_HEADER: signature(key, body),
                DELIVERY_HEADER: notice.identity,
            }
            try:
                response = client.post(destination.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise DeliveryError(f"webhook POST to {destination} failed: {exc!r}") from exc
            if not response.is_success:
                raise DeliveryError(
                    f"{destination} answered HTTP {response.status_code}: "
                    f"{response.text[:_EXCERPT_CHARS]}"
                )
