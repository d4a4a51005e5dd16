"""The receive path's memory of held series: what the index looks up for every instance.

Filing an instance under a known series needs the series' and study's keys and the
patient attributes the study holds; reading them through the ORM (series, study,
patient) cost more than the insert itself. Only the group committer's thread uses a
cache, so it takes no lock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeriesKey:
    """What the index needs of a held series to file another instance under it."""

    series_pk: int
    study_instance_uid: str
    study_pk: int
    patient: tuple[str, ...]  # the study's patient attributes as held (_PATIENT_ATTRIBUTES)


class IdentityCache:
    """Series Instance UID -> :class:`SeriesKey`, for series whose rows have committed.

    What it trusts: a Patient, Study or Series row, once committed, keeps its identity
    (UIDs, its study, its patient and that patient's attributes): the index writes
    those columns only when it creates the row, and other processes (scheduler, workers,
    web) write only a series' state and times, which the cache does not hold; the Series
    row itself is still read in each transaction (its state is series_state's to write).
    So an entry stays right whoever else writes. It is filled only after the transaction
    that created or read the row has committed, and an entry whose row is gone (a study
    deleted by :mod:`node.retention`, or another receiving process's cache) is dropped
    when the lookup of its Series row finds nothing, or on an integrity error.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._series: dict[str, SeriesKey] = {}

    def get(self, series_instance_uid: str) -> SeriesKey | None:
        return self._series.get(series_instance_uid)

    def learn(self, keys: dict[str, SeriesKey]) -> None:
        if len(self._series) + len(keys) > self.limit:
            self._series.clear()  # many series at once: start again rather than track age
        self._series.update(keys)

    def forget(self, series_instance_uid: str | None = None) -> None:
        if series_instance_uid is None:
            self._series.clear()
        else:
            self._series.pop(series_instance_uid, None)
