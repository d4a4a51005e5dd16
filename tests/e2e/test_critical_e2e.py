"""A critical finding end to end: a real node (``ainode serve``, its analysis and delivery
workers) receives a chest CT with a nodule over DICOM; the shipped models fire their
critical rules, the node records the CriticalFinding rows, keeps a Key Object Selection
per job, stores it in the PACS (Orthanc) and tells the reading worklist by HL7 ORU^R01
over MLLP, which a real MLLP listener acknowledges."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.critical_peers import mllp_listener
from tests.e2e.test_worker_roles import CLASSIFIER, SEGMENTATION, jobs_of, study_uid
from tests.factories import phantom_study
from tests.node_process import start_node, wait_for
from tests.orthanc import Orthanc

pytestmark = pytest.mark.e2e


def test_a_nodule_is_told_to_the_worklist_and_flagged_in_the_pacs(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    files = phantom_study(tmp_path, 7, slices=12)
    with mllp_listener("AA") as listener:
        destinations = [
            {"name": "pacs", "dicom": orthanc.destination, "kinds": ["SEG", "SR", "KO"]},
            {"name": "worklist", "type": "hl7", "mllp": f"127.0.0.1:{listener.port}",
             "receiving_application": "RIS"},
        ]  # fmt: skip
        node = start_node(tmp_path / "node", destinations=json.dumps(destinations))
        try:
            Orthanc.store_to(files, "127.0.0.1", node.dicom_port, "AINODE")
            study = study_uid(files)

            def settled() -> dict[str, dict] | None:
                jobs = jobs_of(node, study)
                states = {name: job["state"] for name, job in jobs.items()}
                done = states == {CLASSIFIER: "succeeded", SEGMENTATION: "succeeded"}
                return jobs if done else None

            try:
                jobs = wait_for(settled, 240, what="both jobs analysed and delivered")
            except AssertionError:
                print(node.log())
                raise
        finally:
            node.stop()
        with sqlite3.connect(tmp_path / "node" / "ainode.db") as db:
            rows = db.execute(
                "SELECT job_pk, output, code_value, urgency, value, threshold, unit "
                "FROM critical_finding ORDER BY job_pk"
            ).fetchall()
        held = orthanc.instances_by_modality()

    by_job = {row[0]: row for row in rows}
    classifier_row = by_job[jobs[CLASSIFIER]["id"]]
    segment_row = by_job[jobs[SEGMENTATION]["id"]]
    assert classifier_row[1:4] == ("nodule", "27925004", "STAT") and classifier_row[4] >= 0.95
    assert segment_row[1:4] == ("Lung nodule", "27925004", "HIGH") and segment_row[6] == "ml"
    assert segment_row[4] >= segment_row[5] == 1.0

    for job in jobs.values():
        [ko] = [r for r in job["results"] if r["kind"] == "KO"]
        assert {d["destination"]: d["state"] for d in ko["deliveries"]} == {
            "pacs": "delivered", "worklist": "delivered",
        }  # fmt: skip
    assert len(held.get("KO", [])) == 2  # the PACS holds both KOS

    assert len(listener.received) == 2
    priorities = {}
    for message in listener.received:
        obx = message.segments("OBX")[0]
        assert str(obx(3)).startswith("27925004^") and str(obx(8)) == "AA"
        assert str(message.segment("PID")(3)) == "PHANTOM7"
        assert str(message.segment("MSH")(3)) == "AINODE"
        priorities[str(obx(6)).split("^")[0]] = str(message.segment("TQ1")(9)).split("^")[0]
    assert priorities == {"1": "S", "mL": "A"}  # the classifier STAT, the segment HIGH
