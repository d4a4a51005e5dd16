"""How an association's end, as the acceptor words it, becomes an EventOutcomeIndicator."""

from __future__ import annotations

import pytest

from node.acceptor.record import AssociationRecord
from node.audit.events import EventOutcome
from node.audit.receiving import association_outcome


@pytest.mark.parametrize(
    ("calling", "outcome", "expected"),
    [
        ("PACS", "released", EventOutcome.SUCCESS),
        ("PACS", "rejected: calling ae title not recognized", EventOutcome.SERIOUS_FAILURE),
        ("PACS", "rejected: local limit exceeded", EventOutcome.SERIOUS_FAILURE),
        ("", "no association request within the ACSE timeout", EventOutcome.SERIOUS_FAILURE),
        ("", "aborted: undecodable association request: bad", EventOutcome.SERIOUS_FAILURE),
        ("PACS", "aborted by the peer", EventOutcome.MINOR_FAILURE),
        ("PACS", "aborted: unexpected PDU type 0x07", EventOutcome.MINOR_FAILURE),
        ("PACS", "silent for the network timeout; aborted", EventOutcome.MINOR_FAILURE),
        ("PACS", "connection lost: [Errno 104] reset", EventOutcome.MINOR_FAILURE),
        ("PACS", "established", EventOutcome.MINOR_FAILURE),  # ended without a release
    ],
)
def test_association_outcome(calling: str, outcome: str, expected: EventOutcome) -> None:
    record = AssociationRecord(address="127.0.0.1", port=40000, calling_ae_title=calling)
    record.outcome = outcome
    assert association_outcome(record) is expected
