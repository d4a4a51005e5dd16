"""C-GET: the study's instances arrive on the node's own association with the source.

The storage SCP role must be negotiated for each SOP class the source will send, so the
study's SOP classes are found first by C-FIND (SERIES level for its series, then IMAGE
level for each series' SOP Class UIDs). Each class is proposed once per transfer
syntax the node takes, each in a context of its own: the source then sends every
instance in the transfer syntax it holds it in, as a C-STORE to the node would, rather
than one it had to convert to.

pynetdicom writes each arriving data set to a temporary file as its fragments come
(``_config.STORE_RECV_CHUNKED_DATASET``), never whole in memory; the file goes to the
node's receive path (:mod:`node.retrieve.retrieve_intake`) before the C-STORE is answered with
the node's own status, then it is removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from node.retrieve.query_retrieve import (
    PENDING,
    SUCCESS,
    Timeouts,
    associate,
    follow,
    make_ae,
    silence,
)
from node.retrieve.retrieve_intake import StudyIntake
from node.retrieve.retrieve_outcome import (
    Progress,
    Retrieved,
    RetrieveError,
    dimse_status,
    no_progress,
)
from node.retrieve.retrieve_settings import RetrieveSource

log = logging.getLogger(__name__)

METHOD = "get"
MAX_CONTEXTS = 127  # PS3.8 allows 128 presentation contexts; one is the C-GET's own
# The transfer syntaxes a retrieved instance may come in, the uncompressed ones first
# (kept when the contexts would pass the limit).
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEG2000,
    JPEGLSNearLossless,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
)


def _find(assoc: Association, query: Dataset, source: RetrieveSource) -> list[Dataset]:
    """The identifiers a Study Root C-FIND answers; RetrieveError on a failure."""
    found = []
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if not status or "Status" not in status:
            raise RetrieveError("C-FIND", source.peer, silence(assoc))
        code = int(status.Status)
        if code in PENDING:
            if identifier is not None:
                found.append(identifier)
            continue
        if code != SUCCESS:
            comment = str(status.get("ErrorComment", "") or "")
            raise RetrieveError("C-FIND", source.peer, dimse_status(code, comment))
    return found


def study_sop_classes(
    source: RetrieveSource, study_instance_uid: str, calling_ae_title: str, timeouts: Timeouts
) -> tuple[set[str], int]:
    """The SOP Class UIDs the study's instances have, and how many instances it has."""
    ae = make_ae(calling_ae_title, timeouts)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = associate(ae, source, "C-FIND")
    classes: set[str] = set()
    instances = 0
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_instance_uid
        query.SeriesInstanceUID = ""
        for series in _find(assoc, query, source):
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = study_instance_uid
            query.SeriesInstanceUID = series.SeriesInstanceUID
            query.SOPInstanceUID = ""
            query.SOPClassUID = ""
            for instance in _find(assoc, query, source):
                instances += 1
                if instance.get("SOPClassUID"):
                    classes.add(str(instance.SOPClassUID))
    finally:
        if assoc.is_established:
            assoc.release()
    return classes, instances


def storage_contexts(sop_classes: Iterable[str]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs to propose, one context each, within the limit."""
    classes = sorted(sop_classes)[:MAX_CONTEXTS]  # more cannot be negotiated at all
    per_class = max(1, min(len(TRANSFER_SYNTAXES), MAX_CONTEXTS // max(len(classes), 1)))
    return [(c, ts) for c in classes for ts in TRANSFER_SYNTAXES[:per_class]]


def get_study(
    source: RetrieveSource,
    study_instance_uid: str,
    intake: StudyIntake,
    calling_ae_title: str,
    timeouts: Timeouts,
    progress: Progress = no_progress,
) -> Retrieved:
    """C-GET the study from ``source`` into ``intake``; RetrieveError on failure."""
    sop_classes, expected = study_sop_classes(
        source, study_instance_uid, calling_ae_title, timeouts
    )
    if not sop_classes:
        raise RetrieveError(METHOD, source.peer, "the source holds no instance of the study")
    if len(sop_classes) > MAX_CONTEXTS:
        status = f"{len(sop_classes)} SOP classes in the study; one association takes 127"
        raise RetrieveError(METHOD, source.peer, status)
    # Data sets to temporary files, not memory: a process-wide switch of pynetdicom's, and
    # only C-GET in this process receives C-STOREs through pynetdicom.
    _config.STORE_RECV_CHUNKED_DATASET = True
    ae = make_ae(calling_ae_title, timeouts)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class, syntax in storage_contexts(sop_classes):
        ae.add_requested_context(sop_class, syntax)
    roles = [build_role(sop_class, scp_role=True) for sop_class in sorted(sop_classes)]

    def on_store(event: Event) -> int | Dataset:
        path = Path(event.dataset_path)
        try:
            status, comment = intake.store_file(path)
        finally:
            request_file = getattr(event.request, "_dataset_file", None)
            if request_file is not None:
                request_file.close()
            path.unlink(missing_ok=True)  # pynetdicom leaves it on a C-GET's association
        if not comment:
            return status
        answer = Dataset()
        answer.Status = status
        answer.ErrorComment = comment.replace("\\", "/")[:64]
        return answer

    assoc = associate(ae, source, METHOD, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_instance_uid

    def counted(done: int, total: int | None) -> None:
        progress(done, total if total is not None else expected)

    try:
        responses = assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)
        counts, warning = follow(responses, assoc, METHOD, source, timeouts, counted)
    finally:
        if assoc.is_established:
            assoc.release()
    log.info(
        "C-GET of %s from %s: %d stored, %d refused", study_instance_uid, source.name,
        intake.stored, counts.failed,
    )  # fmt: skip
    return Retrieved(METHOD, source.name, counts.completed + counts.warning, counts.failed, warning)
