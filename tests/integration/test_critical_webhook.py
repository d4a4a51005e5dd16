"""Critical findings told by a signed JSON POST (webhook) to a receiver that checks the
HMAC-SHA256 signature: signed right, delivered; signed with another key, refused (401)
and dead-lettered after the outbox's attempts. The secret is never shown; notification
destinations take KO results only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from node.db.models import DeliveryState, JobState
from node.delivery.destinations import WebhookDestination
from node.settings import Settings
from node.web.routes.schemas import DestinationOut
from tests.critical_peers import critical_job, webhook_receiver
from tests.integration.test_critical_hl7 import deliver_until_settled, delivery_row, sessions_for

SECRET = "s3cret-for-the-webhook-test"


def make_settings(tmp_path: Path, **destination: object) -> Settings:
    return Settings(
        data_dir=tmp_path,
        ae_title="AINODE_HOOK",
        destinations=[{"name": "pager", **destination}],
        delivery_attempts=2,
        delivery_backoff_seconds=0.2,
        delivery_backoff_max_seconds=0.4,
    )


def test_a_signed_notification_is_delivered(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook.secret"
    secret_file.write_text(SECRET + "\n")
    with webhook_receiver(SECRET) as receiver:
        # No ``type``: the ``url`` field names the kind; the key comes from a file.
        settings = make_settings(tmp_path, url=receiver.url, secret_file=str(secret_file))
        assert isinstance(settings.destination("pager"), WebhookDestination)
        for sessions in sessions_for(settings):
            job_id, kos = critical_job(sessions, settings)
            assert deliver_until_settled(settings, sessions, job_id) is JobState.SUCCEEDED
            assert delivery_row(sessions).state is DeliveryState.DELIVERED
    assert receiver.refused == 0 and len(receiver.accepted) == 1
    sent = receiver.accepted[0]
    assert sent["event"] == "critical-finding" and sent["node"] == "AINODE_HOOK"
    assert sent["urgency"] == "STAT"
    [finding] = sent["findings"]
    assert finding["code"] == {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"}
    assert (finding["value"], finding["threshold"], finding["unit"]) == (0.97, 0.9, "")
    assert sent["study"]["study_instance_uid"] == str(kos.StudyInstanceUID)
    assert sent["study"]["accession_number"] == "ACC0001"
    assert sent["study"]["patient_id"] == "CRIT-1"
    assert sent["job"]["id"] == job_id and sent["job"]["model"] == "critical-classifier"
    assert sent["key_objects"]["sop_instance_uid"] == str(kos.SOPInstanceUID)
    assert len(receiver.deliveries[0]) == 64


def test_a_notification_signed_with_another_key_is_refused_and_dead_lettered(
    tmp_path: Path,
) -> None:
    with webhook_receiver("the-receivers-own-other-key") as receiver:
        settings = make_settings(tmp_path, type="webhook", url=receiver.url, secret=SECRET)
        for sessions in sessions_for(settings):
            job_id, _ = critical_job(sessions, settings)
            state = deliver_until_settled(settings, sessions, job_id)
            row = delivery_row(sessions)
    assert state is JobState.FAILED
    assert row.state is DeliveryState.DEAD and row.attempts == 2
    assert "HTTP 401" in row.last_error
    assert receiver.refused == 2 and receiver.accepted == []


def test_the_secret_is_never_shown(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, url="http://127.0.0.1:9/hook", secret=SECRET)
    destination = settings.destination("pager")
    assert destination is not None
    shown = json.dumps(DestinationOut.model_validate(destination).model_dump(mode="json"))
    assert SECRET not in shown and SECRET not in repr(destination)
    assert json.loads(shown)["transport"] == "webhook"
    assert json.loads(shown)["kinds"] == ["KO"]


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"url": "http://127.0.0.1:9/h", "secret": SECRET, "kinds": ["SR"]}, "KO results only"),
        ({"url": "http://127.0.0.1:9/h", "secret": "short"}, "16 characters"),
        ({"url": "http://127.0.0.1:9/h"}, "one of secret and secret_file"),
        ({"url": "ftp://host/h", "secret": SECRET}, "http(s) URL"),
        ({"type": "hl7", "mllp": "no-port"}, "not host:port"),
        ({"type": "fhir", "fhir_url": "http://h/fhir", "kinds": ["KO", "SEG"]}, "KO results"),
    ],
)
def test_notification_destinations_are_checked_at_start(
    tmp_path: Path, fields: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        make_settings(tmp_path, **fields)
