"""Pull mode (IHE AIW-I, the node as Task Performer): take workitems from other UPS
providers, perform them here, and report their end back.

Each turn, for every configured provider: search its worklist for SCHEDULED
workitems (``worklist_label``), most urgent first; claim one there (IN PROGRESS under a
Transaction UID of the node's), and keep a local copy (origin PULLED, the provider's
SOP Instance UID, the claim's Transaction UID) that the node performs exactly as a
requested one (``node.retrieve.runner``: retrieve, analyse, deliver). Never more than
``ups_pull_max_claimed`` at once, so the node does not hoard a shared worklist.
Once the local copy is COMPLETED or CANCELED, its performed procedure, output
references and progress are set at the provider (N-SET / UpdateWorkitem with the
claim's Transaction UID) and its state changed there; then the local copy forgets the
Transaction UID, which is how the node knows it has reported.

A crash between the claim at the provider and the local copy's commit leaves that one
workitem IN PROGRESS at the provider with nobody performing it: the provider's
operator sees it (its Transaction UID was never written down here, by design).
"""

from __future__ import annotations

import logging
import threading

from pydicom import Dataset
from sqlalchemy import select

from node.db.session import SessionFactory
from node.db.worklist import UpsPriority, UpsState, Workitem, WorkitemOrigin
from node.delivery.destinations import DicomAddress
from node.performer.claims import keep_claimed, reported
from node.performer.dimse_provider import DimseProvider
from node.performer.provider import Claimed, ProviderError, UpsProvider
from node.performer.pull_settings import PerformerSettings, PullProvider
from node.performer.rs_provider import RsProvider
from node.ups.book import WorkitemBook, new_transaction_uid
from node.ups.states import FINAL

log = logging.getLogger(__name__)

# What the provider is told of a finished workitem: everything the node performed.
_REPORTED = (
    "ProcedureStepProgressInformationSequence",
    "UnifiedProcedureStepPerformedProcedureSequence",
    "ProcedureStepCancellationDateTime",
    "ReasonForCancellation",
    "ProcedureStepDiscontinuationReasonCodeSequence",
)


def provider_for(spec: PullProvider, calling_ae: str) -> UpsProvider:
    """The client of one configured provider."""
    if spec.dicom is not None:
        return DimseProvider(spec.name, DicomAddress.parse(spec.dicom), calling_ae)
    assert spec.url is not None  # PullProvider checks that exactly one is set
    return RsProvider(spec.name, spec.url, spec.http_headers)


def _urgency(item: Dataset) -> int:
    try:
        return UpsPriority(str(item.get("ScheduledProcedureStepPriority") or "MEDIUM")).rank
    except ValueError:
        return UpsPriority.MEDIUM.rank


class Performer:
    """The pull loop: one thread, a turn every ``ups_pull_interval_seconds``."""

    def __init__(
        self,
        settings: PerformerSettings,
        calling_ae: str,
        sessions: SessionFactory,
        book: WorkitemBook,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.book = book
        self.providers = {
            spec.name: (provider_for(spec, calling_ae), spec.worklist_label)
            for spec in settings.ups_pull_providers
        }
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # One turn -------------------------------------------------------------------------

    def run_once(self) -> None:
        """Report what finished, then claim what there is room for."""
        self.report_finished()
        for name, (provider, label) in self.providers.items():
            try:
                self._claim_from(name, provider, label)
            except ProviderError as exc:
                log.warning("pull mode: %s", exc)

    def _open(self) -> int:
        """Pulled workitems claimed and not yet reported (the node still holds them)."""
        with self.sessions() as session:
            rows = session.scalars(
                select(Workitem.id).where(
                    Workitem.origin == WorkitemOrigin.PULLED,
                    Workitem.provider_transaction_uid.is_not(None),
                )
            ).all()
        return len(rows)

    def _known(self, uid: str) -> bool:
        with self.sessions() as session:
            found = session.scalars(select(Workitem.id).where(Workitem.sop_instance_uid == uid))
            return found.first() is not None

    def _claim_from(self, name: str, provider: UpsProvider, label: str) -> None:
        room = self.settings.ups_pull_max_claimed - self._open()
        if room <= 0:
            return
        for item in sorted(provider.scheduled(label), key=_urgency):
            uid = str(item.get("SOPInstanceUID") or "")
            if not uid or self._known(uid):
                continue
            transaction_uid = new_transaction_uid()
            try:
                provider.claim(uid, transaction_uid)
            except Claimed as exc:
                log.info("pull mode: %s", exc)
                continue
            whole = provider.get(uid)
            whole.ProcedureStepState = UpsState.SCHEDULED.value  # here, it is to be done
            keep_claimed(self.sessions, whole, uid, name, transaction_uid)
            if self.book.on_commit is not None:
                self.book.on_commit()  # its events are written: the dispatcher sends them
            log.info("pull mode: claimed workitem %s from %s", uid, name)
            room -= 1
            if room <= 0:
                return

    def report_finished(self) -> None:
        """Tell each provider how its finished workitems ended, once."""
        with self.sessions() as session:
            rows = session.scalars(
                select(Workitem).where(
                    Workitem.origin == WorkitemOrigin.PULLED,
                    Workitem.provider_transaction_uid.is_not(None),
                    Workitem.state.in_(FINAL),
                )
            ).all()
            finished = [(r.sop_instance_uid, r.provider, r.provider_transaction_uid, r.state)
                        for r in rows]  # fmt: skip
        for uid, name, transaction_uid, state in finished:
            entry = self.providers.get(name)
            if entry is None or transaction_uid is None:
                log.warning("pull mode: workitem %s came from %s, not configured now", uid, name)
                continue
            try:
                self._report(entry[0], uid, transaction_uid, UpsState(state))
            except ProviderError as exc:
                log.warning("pull mode: reporting %s: %s (next turn again)", uid, exc)
                continue
            reported(self.sessions, uid)

    def _report(
        self, provider: UpsProvider, uid: str, transaction_uid: str, state: UpsState
    ) -> None:
        local = self.book.get(uid)
        changes = Dataset()
        for keyword in _REPORTED:
            if keyword in local:
                setattr(changes, keyword, local[keyword].value)
        if len(changes):
            provider.update(uid, transaction_uid, changes)
        provider.finish(uid, transaction_uid, state)
        log.info("pull mode: workitem %s %s at %s", uid, state.value, provider.name)

    # The thread -----------------------------------------------------------------------

    def wake(self) -> None:
        """A local pulled workitem finished: report it now rather than at the next turn."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the loop outlives any one turn
                log.exception("pull mode: turn failed")
            self._wake.wait(self.settings.ups_pull_interval_seconds)
            self._wake.clear()

    def start(self) -> None:
        if not self.providers:
            return
        self._thread = threading.Thread(target=self._loop, name="ups-pull", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
