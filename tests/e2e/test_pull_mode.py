"""Pull mode, end to end: the node performs the workitems of another UPS provider.

Two real ``ainode serve`` nodes and a real Orthanc. The provider node only keeps a
worklist (its UPS DIMSE service and UPS-RS; it retrieves nothing itself). A pynetdicom
AE plays the RIS and puts a workitem on the provider's worklist over DIMSE; a second
workitem is created over UPS-RS. The performer node is configured with the provider
twice, once over DIMSE and once over UPS-RS, each for its own worklist label: it finds
each workitem, claims it there (IN PROGRESS under its Transaction UID), retrieves the
study from Orthanc by C-MOVE, analyses it, stores the results in Orthanc, and sets the
provider's workitem COMPLETED with the outputs referenced. The RIS then reads the
outcome at the provider.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from tests.factories import phantom_study
from tests.node_process import NodeProcess, node_environment, wait_for
from tests.orthanc import Orthanc, free_port, start_orthanc
from tests.workitems import analysis_request, create_workitem, get_workitem

pytestmark = pytest.mark.e2e

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
GET_KEYS = [0x00741000, 0x00741002, 0x00741216]  # state, progress, performed procedure


@dataclass
class Sites:
    provider: NodeProcess
    provider_ups_port: int
    performer: NodeProcess
    pacs: Orthanc
    studies: list[str]

    def get(self, uid: str) -> Dataset:
        return get_workitem(self.provider_ups_port, uid, GET_KEYS)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    root = tmp_path_factory.mktemp("pull")
    provider_ups_port = free_port()
    provider_env, provider_dicom, provider_http = node_environment(root / "provider")
    provider_env["AINODE_UPS_PORT"] = str(provider_ups_port)
    provider = NodeProcess(root / "provider", provider_dicom, provider_http, provider_env)
    env, dicom_port, http_port = node_environment(root / "performer")
    pacs = start_orthanc(root / "orthanc", node_port=dicom_port, route=False)
    studies = []
    for seed in (81, 82):
        files = phantom_study(root / "studies", seed, slices=8)
        pacs.store(files)
        studies.append(str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID))
    performer: NodeProcess | None = None
    try:
        provider.start()
        pull = [
            {"name": "ris-dimse", "dicom": f"AINODE@127.0.0.1:{provider_ups_port}",
             "worklist_label": "AI"},
            {"name": "ris-web", "url": f"{provider.url}/dicom-web",
             "http_headers": provider.headers, "worklist_label": "AI-WEB"},
        ]  # fmt: skip
        sources = [
            {"name": "pacs", "method": "move", "dicom": f"ORTHANC@127.0.0.1:{pacs.dicom_port}"}
        ]
        env.update({
            "AINODE_ARCHIVE": pacs.destination,
            "AINODE_RETRIEVE_SOURCES": json.dumps(sources),
            "AINODE_REQUESTS_POLL_SECONDS": "0.5",
            "AINODE_UPS_PORT": str(free_port()),
            "AINODE_UPS_PULL_PROVIDERS": json.dumps(pull),
            "AINODE_UPS_PULL_INTERVAL_SECONDS": "1",
            "AINODE_COMPLETION_GRACE_SECONDS": "0.5",
        })  # fmt: skip
        performer = NodeProcess(root / "performer", dicom_port, http_port, env)
        performer.start()
        yield Sites(provider, provider_ups_port, performer, pacs, studies)
    finally:
        if performer is not None:
            performer.stop()
        provider.stop()
        pacs.stop()


def _completed(sites: Sites, uid: str) -> Dataset:
    def final() -> Dataset | None:
        workitem = sites.get(uid)
        return workitem if workitem.ProcedureStepState in ("COMPLETED", "CANCELED") else None

    try:
        return wait_for(final, timeout=240, interval=1.0, what=f"workitem {uid} to end")
    except AssertionError:
        print(sites.performer.log(12000))
        print(sites.provider.log(4000))
        raise


def _check_outputs(sites: Sites, workitem: Dataset, study_uid: str) -> None:
    assert workitem.ProcedureStepState == "COMPLETED", workitem
    performed = workitem.UnifiedProcedureStepPerformedProcedureSequence[0]
    outputs = performed.OutputInformationSequence
    seg = [item for item in outputs
           if item.ReferencedSOPSequence[0].ReferencedSOPClassUID == SEG_STORAGE]  # fmt: skip
    assert seg, outputs
    for item in seg:
        assert item.StudyInstanceUID == study_uid
        found = httpx.post(
            f"{sites.pacs.url}/tools/lookup",
            content=item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
            timeout=30,
        ).json()
        assert any(entry.get("Type") == "Instance" for entry in found), item


def test_a_workitem_on_a_dimse_provider_is_claimed_performed_and_completed(sites: Sites) -> None:
    request = analysis_request(sites.studies[0], retrieve_ae_title="ORTHANC")
    uid = create_workitem(sites.provider_ups_port, request)
    _check_outputs(sites, _completed(sites, uid), sites.studies[0])
    # The performer kept its own copy, reported: it no longer holds the claim.
    mine = sites.performer.get(f"/dicom-web/workitems/{uid}")
    assert mine, "the performer has no local record of the pulled workitem"


def test_a_workitem_on_a_ups_rs_provider_is_claimed_performed_and_completed(
    sites: Sites,
) -> None:
    uid = generate_uid()
    request = analysis_request(sites.studies[1], retrieve_ae_title="ORTHANC")
    request.WorklistLabel = "AI-WEB"
    made = httpx.post(
        f"{sites.provider.url}/dicom-web/workitems",
        params={"workitem": uid},
        content=f"[{request.to_json()}]",
        headers={**sites.provider.headers, "Content-Type": "application/dicom+json"},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    _check_outputs(sites, _completed(sites, uid), sites.studies[1])
