"""Analysis on request, end to end: a RIS asks the node over DIMSE for a study's analysis.

A real Orthanc is the PACS: it holds the studies (nothing routes them to the node), knows
the node's AE title (for C-MOVE), answers C-FIND and C-GET under any called AE title and
serves WADO-RS; it is also the archive the results go to. ``ainode serve`` runs with its
analysis and delivery workers. A pynetdicom AE plays the RIS: N-CREATE of each workitem,
N-GET of its outcome, N-ACTION to cancel one. Each workitem names where its study is
(Input Information Sequence: a Retrieve AE Title or a WADO-RS URL), which picks the
source, and so the method: C-MOVE, C-GET or WADO-RS. Each ends COMPLETED with an Output
Information Sequence referencing its SEG and SRs, which Orthanc holds. A workitem
canceled while the node waits for its study to be complete ends CANCELED with the
RIS's reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import httpx
import pytest
from pydicom import Dataset, dcmread
from pynetdicom.association import Association

from tests.factories import phantom_study
from tests.node_process import NodeProcess, node_environment, wait_for
from tests.orthanc import Orthanc, free_port, start_orthanc
from tests.workitems import (
    UPS_PUSH,
    analysis_request,
    create_workitem,
    get_workitem,
    ris_association,
)

pytestmark = pytest.mark.e2e

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",
              "1.2.840.10008.5.1.4.1.1.88.34"}  # fmt: skip
# What the RIS asks back: state, reason, progress, and the performed procedure.
GET_KEYS = [0x00741000, 0x00741238, 0x00741002, 0x00741216]


@dataclass
class Site:
    node: NodeProcess
    pacs: Orthanc
    ups_port: int
    studies: dict[str, str]  # what each study is for -> its Study Instance UID

    def ris(self) -> AbstractContextManager[Association]:
        return ris_association(self.ups_port)

    def create(self, request: Dataset) -> str:
        return create_workitem(self.ups_port, request)

    def get(self, uid: str) -> Dataset:
        return get_workitem(self.ups_port, uid, GET_KEYS)

    def ended(self, uid: str, timeout: float = 300) -> Dataset:
        def final() -> Dataset | None:
            workitem = self.get(uid)
            return workitem if workitem.ProcedureStepState in ("COMPLETED", "CANCELED") else None

        try:
            return wait_for(final, timeout=timeout, interval=1.0, what=f"workitem {uid} to end")
        except AssertionError:
            print(self.node.log(12000))
            print(self.get(uid))
            raise


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("on-request")
    ups_port = free_port()
    env, dicom_port, http_port = node_environment(root / "node")
    pacs = start_orthanc(root / "orthanc", node_port=dicom_port, route=False)
    studies = {}
    for seed, purpose in enumerate(("move", "get", "wado", "cancel"), start=71):
        files = phantom_study(root / "studies", seed, slices=8)
        pacs.store(files)
        studies[purpose] = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    port = pacs.dicom_port
    sources = [
        {"name": "pacs-move", "method": "move", "dicom": f"ORTHANC@127.0.0.1:{port}"},
        # Orthanc answers under any called AE title: the same PACS, its C-GET door.
        {"name": "pacs-get", "method": "get", "dicom": f"PACSGET@127.0.0.1:{port}"},
        {"name": "pacs-wado", "method": "wado", "wado_url": f"{pacs.url}/dicom-web"},
        # Its series wait for the quiet period (the completion rule below): a workitem
        # retrieved from here stays IN PROGRESS long enough to be canceled.
        {"name": "pacs-hold", "method": "get", "dicom": f"PACSHOLD@127.0.0.1:{port}"},
    ]
    env.update({
        "AINODE_ARCHIVE": pacs.destination,
        "AINODE_RETRIEVE_SOURCES": json.dumps(sources),
        "AINODE_RETRIEVE_TIMEOUT_SECONDS": "120",
        "AINODE_REQUESTS_POLL_SECONDS": "0.5",
        "AINODE_UPS_PORT": str(ups_port),
        "AINODE_STABLE_SECONDS": "60",
        "AINODE_COMPLETION_GRACE_SECONDS": "0.5",
        "AINODE_COMPLETION_RULES": "PACSHOLD=quiet",
    })  # fmt: skip
    node = NodeProcess(root / "node", dicom_port, http_port, env)
    try:
        node.start()
        yield Site(node, pacs, ups_port, studies)
    finally:
        node.stop()
        pacs.stop()


def _in_orthanc(pacs: Orthanc, sop_instance_uid: str) -> bool:
    found = httpx.post(f"{pacs.url}/tools/lookup", content=sop_instance_uid, timeout=30)
    found.raise_for_status()
    return any(entry.get("Type") == "Instance" for entry in found.json())


def test_each_method_retrieves_analyses_and_completes(site: Site) -> None:
    pacs_web = f"{site.pacs.url}/dicom-web"
    uids = {
        "move": site.create(analysis_request(site.studies["move"], retrieve_ae_title="ORTHANC")),
        "get": site.create(analysis_request(site.studies["get"], retrieve_ae_title="PACSGET",
                                            priority="HIGH")),
        "wado": site.create(analysis_request(site.studies["wado"], wado_url=pacs_web)),
    }  # fmt: skip
    for method, uid in uids.items():
        workitem = site.ended(uid)
        assert workitem.ProcedureStepState == "COMPLETED", (method, workitem)
        progress = workitem.ProcedureStepProgressInformationSequence[0]
        assert int(progress.ProcedureStepProgress) == 100
        performed = workitem.UnifiedProcedureStepPerformedProcedureSequence[0]
        outputs = performed.OutputInformationSequence
        classes = {item.ReferencedSOPSequence[0].ReferencedSOPClassUID for item in outputs}
        assert SEG_STORAGE in classes and classes & SR_CLASSES, (method, classes)
        for item in outputs:
            assert item.StudyInstanceUID == site.studies[method]
            sop = item.ReferencedSOPSequence[0]
            titles = item.DICOMRetrievalSequence[0].RetrieveAETitle
            titles = [titles] if isinstance(titles, str) else list(titles)
            if sop.ReferencedSOPClassUID == SEG_STORAGE or sop.ReferencedSOPClassUID in SR_CLASSES:
                # Delivered to the archive, and referenced as retrievable there.
                assert titles == ["ORTHANC"], item
                assert _in_orthanc(site.pacs, sop.ReferencedSOPInstanceUID), item
        print(method, progress.ProcedureStepProgressDescription)


def test_a_cancel_request_ends_a_workitem_in_progress(site: Site) -> None:
    uid = site.create(
        analysis_request(site.studies["cancel"], retrieve_ae_title="PACSHOLD", label="to cancel")
    )

    def waiting() -> bool:
        workitem = site.get(uid)
        progress = workitem.get("ProcedureStepProgressInformationSequence") or [Dataset()]
        words = str(progress[0].get("ProcedureStepProgressDescription", ""))
        return workitem.ProcedureStepState == "IN PROGRESS" and words.startswith("waiting")

    wait_for(waiting, timeout=60, interval=0.5, what="the workitem waiting for its study")
    reason = Dataset()
    reason.ReasonForCancellation = "the patient was transferred"
    with site.ris() as assoc:
        status, _ = assoc.send_n_action(reason, 2, UPS_PUSH, uid)
    assert status.Status == 0x0000, status
    workitem = site.ended(uid, timeout=30)
    assert workitem.ProcedureStepState == "CANCELED"
    assert "the patient was transferred" in str(workitem.ReasonForCancellation)
