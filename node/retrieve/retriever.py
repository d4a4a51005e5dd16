"""One entry for a retrieval: a study from a configured source, by the source's method.

C-MOVE ends in the node's Storage SCP (the source sends there); C-GET and WADO-RS end in
the same store path in this process (:mod:`node.retrieve.retrieve_intake`), as one association
from the source. Either way a retrieval that returns has every instance it brought
durable and indexed; one that fails raises :class:`RetrieveError` naming the method,
the peer and the status, and what it brought before the failure stays kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from node.acceptor.record import AssociationRecord
from node.audit.receiving import RELEASED
from node.retrieve.c_get import get_study
from node.retrieve.c_move import move_study
from node.retrieve.query_retrieve import Timeouts
from node.retrieve.retrieve_intake import StudyIntake
from node.retrieve.retrieve_outcome import Progress, Retrieved, RetrieveError, no_progress
from node.retrieve.retrieve_settings import RetrieveSource
from node.retrieve.wado_rs import wado_study
from node.settings import Settings
from node.store import StorePath

log = logging.getLogger(__name__)


class StudyRetriever:
    """Retrieves studies into the node: the settings' sources, the Storage SCP's store
    path and association callback (``StorageSCP.store``, ``StorageSCP.on_association``)."""

    def __init__(
        self,
        settings: Settings,
        store: StorePath,
        on_association: Callable[[AssociationRecord], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.on_association = on_association

    def source(self, name: str = "") -> RetrieveSource:
        """The source called ``name`` (the default one for ""); LookupError if none."""
        found = self.settings.retrieve_source(name)
        if found is None:
            raise LookupError(
                f"no retrieve source {name!r}" if name else "no retrieve source is configured"
            )
        return found

    def retrieve(
        self, study_instance_uid: str, source: RetrieveSource, progress: Progress = no_progress
    ) -> Retrieved:
        settings = self.settings
        timeouts = Timeouts.starting_now(
            settings.retrieve_network_timeout_seconds, settings.retrieve_timeout_seconds
        )
        log.info("retrieving study %s from %s (%s)", study_instance_uid, source.name, source.method)
        if source.method == "move":
            retrieved = move_study(
                source, study_instance_uid, settings.ae_title, timeouts, progress
            )
        else:
            retrieved = self._into_intake(study_instance_uid, source, timeouts, progress)
        if retrieved.stored == 0:
            raise RetrieveError(
                source.method,
                source.peer,
                f"no instance of the study arrived ({retrieved.warning or 'none sent'})",
            )
        log.info(
            "retrieved study %s from %s: %d instances%s", study_instance_uid, source.name,
            retrieved.stored, f"; {retrieved.warning}" if retrieved.warning else "",
        )  # fmt: skip
        return retrieved

    def _into_intake(
        self, study_instance_uid: str, source: RetrieveSource, timeouts: Timeouts,
        progress: Progress,
    ) -> Retrieved:  # fmt: skip
        intake = StudyIntake(self.store, source, self.settings.ae_title, self.on_association)
        try:
            if source.method == "get":
                retrieved = get_study(
                    source, study_instance_uid, intake, self.settings.ae_title, timeouts, progress
                )
            else:
                retrieved = wado_study(source, study_instance_uid, intake, timeouts, progress)
        except RetrieveError as exc:
            intake.close(f"aborted: {exc}")
            raise
        except Exception as exc:
            intake.close(f"aborted: {type(exc).__name__}: {exc}")
            raise
        intake.close(RELEASED)
        return retrieved
