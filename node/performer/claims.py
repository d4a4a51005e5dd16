"""The local record of a workitem claimed at another provider: the one writer of
``Workitem.provider_transaction_uid``.

The row itself is made by the workitem book's own ``create_in`` (its state, events and
attributes are the book's), in the same transaction that keeps the claim's Transaction
UID; once the provider has been told how it ended, the Transaction UID is forgotten.
"""

from __future__ import annotations

from pydicom import Dataset
from sqlalchemy import update

from node.db.session import SessionFactory, transaction
from node.db.worklist import Workitem, WorkitemOrigin
from node.ups.book import create_in


def keep_claimed(
    sessions: SessionFactory, dataset: Dataset, uid: str, provider: str, transaction_uid: str
) -> None:
    """A SCHEDULED local copy of ``uid``, claimed at ``provider`` under ``transaction_uid``."""
    with transaction(sessions) as session:
        row = create_in(session, dataset, uid, WorkitemOrigin.PULLED, provider)
        row.provider_transaction_uid = transaction_uid


def reported(sessions: SessionFactory, uid: str) -> None:
    """The provider knows how ``uid`` ended: nothing more to tell it."""
    with transaction(sessions) as session:
        session.execute(
            update(Workitem)
            .where(Workitem.sop_instance_uid == uid)
            .values(provider_transaction_uid=None)
        )
