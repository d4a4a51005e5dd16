"""C-MOVE: the source sends the study to the node's own Storage SCP.

A Study Root Q/R MOVE request at STUDY level names the node's AE title as the move
destination; the source must know that AE title's address (the node's Storage SCP),
which is where every instance arrives and is kept as if pushed. The final response
comes once the source has sent everything and the node has answered each C-STORE,
which it does only once the instance is durable and indexed.
"""

from __future__ import annotations

from pydicom import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from node.retrieve.query_retrieve import Timeouts, associate, follow, make_ae
from node.retrieve.retrieve_outcome import Progress, Retrieved, no_progress
from node.retrieve.retrieve_settings import RetrieveSource

METHOD = "move"


def move_study(
    source: RetrieveSource,
    study_instance_uid: str,
    node_ae_title: str,
    timeouts: Timeouts,
    progress: Progress = no_progress,
) -> Retrieved:
    """Have ``source`` send the study to ``node_ae_title``; RetrieveError on failure."""
    ae = make_ae(node_ae_title, timeouts)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = associate(ae, source, METHOD)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study_instance_uid
    try:
        responses = assoc.send_c_move(
            identifier, node_ae_title, StudyRootQueryRetrieveInformationModelMove
        )
        counts, warning = follow(responses, assoc, METHOD, source, timeouts, progress)
    finally:
        if assoc.is_established:
            assoc.release()
    return Retrieved(METHOD, source.name, counts.completed + counts.warning, counts.failed, warning)
