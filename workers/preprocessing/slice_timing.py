"""The temporal step: a 4D series (``Volume.timepoints``) made into the one volume a model takes.

``slice_timing`` corrects slice-timing differences as SPM and FSL do, then reduces
time. In a multi-slice acquisition each slice of a temporal position is acquired at
its own moment (sequential or interleaved order), so the slices of one "volume" are
not simultaneous; each slice's time course is interpolated (linearly) to the
acquisition times of one reference slice, which makes every temporal position one
instant, and the corrected series is then reduced over time to one 3D array that
replaces the voxels for the steps that follow. It must be the manifest's first step:
every later step works on one volume.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import replace

import numpy as np

from models.steps import SliceTimingStep, StepRole
from workers.errors import SeriesNotAnalysable
from workers.preprocessing.base import Operation
from workers.volume import Volume


class TemporalOperation(Operation):
    """A step that reads a 4D series' temporal positions and leaves one volume.

    On a 3D volume (``timepoints`` None) it has nothing to do and passes it through.
    """

    role = StepRole.TEMPORAL

    @abstractmethod
    def collapse(self, timepoints: np.ndarray, slice_times: np.ndarray | None) -> np.ndarray:
        """One float32 (slices, rows, columns) array from (time, slices, rows, columns)."""

    def apply(self, volume: Volume) -> tuple[Volume, None]:
        if volume.timepoints is None:
            return volume, None
        voxels = self.collapse(volume.timepoints, volume.slice_times)
        return replace(volume, voxels=voxels, timepoints=None, slice_times=None), None


class SliceTiming(SliceTimingStep, TemporalOperation):
    """Slice-timing correction to one reference slice's times, then a reduction over time.

    ``reference``: the slice whose acquisition times every slice is interpolated to,
    the first acquired or the one acquired in the middle of each temporal position
    (the ``S // 2``-th, 0-based, in acquisition order; SPM's and FSL's usual choice,
    which shifts no slice by more than about half a repetition time). Slice times
    outside a slice's own acquired range take its nearest acquired value (the first or
    last temporal position), so the ends are not extrapolated.
    ``reduce``: the mean or the maximum over time of the corrected series, or its
    temporal position ``phase`` (0-based).
    """

    def collapse(self, timepoints: np.ndarray, slice_times: np.ndarray | None) -> np.ndarray:
        count = timepoints.shape[0]
        if self.reduce == "phase" and self.phase >= count:
            raise SeriesNotAnalysable(
                f"slice_timing takes temporal position {self.phase} (0-based), but the "
                f"series has {count}"
            )
        corrected = self.correct(timepoints, slice_times)
        if self.reduce == "phase":
            return np.ascontiguousarray(corrected[self.phase], dtype=np.float32)
        if self.reduce == "max":
            return corrected.max(axis=0).astype(np.float32, copy=False)
        return corrected.mean(axis=0, dtype=np.float64).astype(np.float32)

    def reference_slice(self, slice_times: np.ndarray) -> int:
        """The index (in slice order) of the slice whose times the others are moved to."""
        acquisition_order = np.argsort(slice_times[0], kind="stable")
        at = 0 if self.reference == "first" else len(acquisition_order) // 2
        return int(acquisition_order[at])

    def correct(self, timepoints: np.ndarray, slice_times: np.ndarray | None) -> np.ndarray:
        """Every slice's series, float32 (time, slices, rows, columns), at the reference
        slice's acquisition times."""
        if slice_times is None:
            raise SeriesNotAnalysable(
                "slice_timing needs each image's acquisition time, and this 4D series "
                "has none (no AcquisitionDateTime or AcquisitionTime that increases over "
                "its temporal positions, no FrameTime or TemporalResolution)"
            )
        times = np.asarray(slice_times, dtype=np.float64)
        if times.shape != timepoints.shape[:2]:
            raise ValueError(
                f"slice times of shape {times.shape} do not match timepoints of shape "
                f"{timepoints.shape}"
            )
        count = times.shape[0]
        if count < 2:
            return np.array(timepoints, dtype=np.float32)
        if not np.all(np.diff(times, axis=0) > 0):
            raise SeriesNotAnalysable(
                "slice_timing needs every slice's acquisition times to increase over the "
                "temporal positions, and this series' do not"
            )
        target = times[:, self.reference_slice(times)]
        corrected = np.empty(timepoints.shape, dtype=np.float32)
        for index in range(times.shape[1]):
            own = times[:, index]
            # Linear interpolation between the two acquired samples around each target
            # time, as np.interp does per voxel, for a whole slice at once.
            before = np.clip(np.searchsorted(own, target, side="right") - 1, 0, count - 2)
            weight = np.clip((target - own[before]) / (own[before + 1] - own[before]), 0.0, 1.0)
            weight = weight.astype(np.float32)[:, None, None]
            series = timepoints[:, index]
            corrected[:, index] = (1 - weight) * series[before] + weight * series[before + 1]
        return corrected
