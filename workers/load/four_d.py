"""4D series: single-frame images whose slice positions repeat over time.

This module owns grouping such images by temporal position (dynamic, perfusion,
fMRI-like series), refusing one whose positions have different temporal positions,
and each image's acquisition time in seconds (``Volume.slice_times``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from pydicom import Dataset
from pydicom.valuerep import DA, DT, TM

from workers.errors import SeriesNotAnalysable
from workers.load.slices import Slice
from workers.load.stack import DUPLICATE_TOLERANCE_MM

# What tells the images of one slice position apart in a 4D series, in order of
# preference: the first that every image has and that differs between the images of
# each position orders them.
_TEMPORAL_KEYWORDS = ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionTime", "ContentTime")
_EPOCH = datetime(1970, 1, 1)


def temporal_positions(slices: Sequence[Slice]) -> list[list[Slice]] | None:
    """The images of a 4D series by temporal position (each in the input's slice
    order), or None when no slice position repeats or nothing tells the images of a
    repeated position apart (left to the geometry checks, which refuse duplicates).

    Refuses a 4D series whose positions have different numbers of temporal positions.
    """
    groups: dict[tuple[int, ...], list[Slice]] = {}
    for piece in slices:
        position = piece.position
        if position is None or len(position) != 3:
            return None
        key = tuple(round(float(v) / DUPLICATE_TOLERANCE_MM) for v in position)
        groups.setdefault(key, []).append(piece)
    if all(len(group) == 1 for group in groups.values()):
        return None
    for keyword in _TEMPORAL_KEYWORDS:
        values = [[_temporal_value(p.dataset, keyword) for p in g] for g in groups.values()]
        if all(None not in v and len(set(v)) == len(v) for v in values):
            break
    else:
        return None

    counts = Counter(len(group) for group in groups.values())
    if len(counts) > 1:
        usual, _ = counts.most_common(1)[0]
        odd = next(g for g in groups.values() if len(g) != usual)
        at = ", ".join(f"{float(v):g}" for v in odd[0].position or ())
        listed = ", ".join(
            f"{n} position(s) with {count}" for count, n in sorted(counts.items(), reverse=True)
        )
        raise SeriesNotAnalysable(
            f"a 4D series (slice positions repeated, told apart by {keyword}) must have "
            f"the same number of temporal positions at every slice position: {listed} "
            f"(e.g. {len(odd)} at ({at}) mm, instance(s) "
            f"{', '.join(p.number for p in odd[:5])}); an incomplete dynamic acquisition, "
            "or a duplicated slice?"
        )
    ordered = [
        [group[i] for i in sorted(range(len(group)), key=value.__getitem__)]
        for group, value in zip(groups.values(), values, strict=True)
    ]
    if keyword == "TemporalPositionIdentifier":
        expected = sorted(values[0])
        for group, value in zip(ordered, values, strict=True):
            if sorted(value) != expected:
                raise SeriesNotAnalysable(
                    f"a 4D series must have the same temporal positions at every slice "
                    f"position: instance {group[0].number} has TemporalPositionIdentifier "
                    f"{sorted(value)} where instance {ordered[0][0].number} has {expected}"
                )
    return [[group[time] for group in ordered] for time in range(len(ordered[0]))]


def _temporal_value(ds: Dataset, keyword: str) -> float | None:
    """The value of ``keyword`` that orders ``ds`` in time (times as seconds)."""
    if keyword == "AcquisitionTime":
        return _acquired_seconds(ds)
    if keyword == "ContentTime":
        return _seconds(ds.get("ContentDate"), ds.get("ContentTime"))
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _acquired_seconds(ds: Dataset) -> float | None:
    """When ``ds`` was acquired, in seconds: AcquisitionDateTime, else AcquisitionDate
    and AcquisitionTime (AcquisitionTime alone: seconds into its day)."""
    moment = ds.get("AcquisitionDateTime")
    if moment not in (None, ""):
        try:
            parsed = DT(str(moment))
        except ValueError:
            parsed = None
        if parsed is not None:
            if parsed.tzinfo is not None:
                parsed = parsed.astimezone(UTC).replace(tzinfo=None)
            return (parsed - _EPOCH).total_seconds()
    return _seconds(ds.get("AcquisitionDate"), ds.get("AcquisitionTime"))


def _seconds(date: object, time: object) -> float | None:
    if time in (None, ""):
        return None
    try:
        clock = TM(str(time))
        day = DA(str(date)) if date not in (None, "") else None
    except ValueError:
        return None
    if clock is None:
        return None
    seconds = clock.hour * 3600 + clock.minute * 60 + clock.second + clock.microsecond / 1e6
    if day is not None:
        seconds += (datetime(day.year, day.month, day.day) - _EPOCH).total_seconds()
    return seconds


def slice_timing(phases: Sequence[Sequence[Slice]]) -> np.ndarray | None:
    """(time, slices) seconds after the series' first image, or None when unknown.

    Each image's own acquisition time (AcquisitionDateTime, or AcquisitionDate and
    AcquisitionTime) when every image has one and every slice's times increase over
    the temporal positions: that is the per-slice timing slice-timing correction
    needs. Otherwise, TemporalPositionIdentifier times FrameTime or TemporalResolution
    (ms): one time per temporal position, shared by all its slices, so slice-timing
    correction has nothing to shift.
    """
    acquired = [[_acquired_seconds(p.dataset) for p in phase] for phase in phases]
    if all(None not in row for row in acquired):
        times = np.asarray(acquired, dtype=np.float64)
        if np.all(np.diff(times, axis=0) > 0):
            return times - times.min()
    first = phases[0][0].dataset
    interval = None
    for keyword in ("FrameTime", "TemporalResolution"):
        value = _temporal_value(first, keyword)
        if value is not None and value > 0:
            interval = value / 1000.0
            break
    identifiers = [
        [_temporal_value(p.dataset, "TemporalPositionIdentifier") for p in phase]
        for phase in phases
    ]
    if interval is None or not all(None not in row for row in identifiers):
        return None
    numbers = np.asarray(identifiers, dtype=np.float64)
    if not np.all(np.diff(numbers, axis=0) > 0):
        return None
    return (numbers - numbers.min()) * interval
