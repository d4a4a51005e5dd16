"""4D series: loaded as their first temporal position plus every time point, made one
volume by slice_timing, refused by a model that takes one volume without it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from pydicom import Dataset

from models.manifest import PreprocessStep
from node.uids import derive_uid
from tests.factories import make_ct_series, write_series
from workers.errors import AnalysisError, SeriesNotAnalysable
from workers.load.series import load_series
from workers.preprocessing import preprocess, preprocess_array
from workers.preprocessing.slice_timing import SliceTiming

SLICES, ROWS, COLUMNS, TIMES = 6, 4, 5, 5
REPETITION_S = 3.0
# Interleaved acquisition: odd slices (1-based) first, then even ones.
ACQUISITION_ORDER = (0, 2, 4, 1, 3, 5)
SERIES_UID = derive_uid("tests.temporal", "series")


def slice_offsets() -> np.ndarray:
    """Seconds after the start of a temporal position at which each slice is acquired."""
    offsets = np.empty(SLICES)
    for rank, index in enumerate(ACQUISITION_ORDER):
        offsets[index] = rank * REPETITION_S / SLICES
    return offsets


def acquisition_times() -> np.ndarray:
    """(time, slices) seconds after the first image."""
    return np.arange(TIMES)[:, None] * REPETITION_S + slice_offsets()[None, :]


def signal(times: np.ndarray) -> np.ndarray:
    """Every voxel linear in absolute time: HU = base + rate * t, integers at these times."""
    grid = np.arange(ROWS * COLUMNS, dtype=np.float64).reshape(ROWS, COLUMNS)
    base, rate = 10.0 * grid, 2.0 * (grid % 7 + 1)
    return base + rate * np.asarray(times)[..., None, None]


def clock(seconds: float) -> str:
    """A TM value ``seconds`` after 08:00:00."""
    whole = int(seconds)
    fraction = round((seconds - whole) * 1e6)
    hours, rest = divmod(8 * 3600 + whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}{minutes:02d}{secs:02d}.{fraction:06d}"


def four_d_series(*, per_slice_times: bool = True) -> list[list[Dataset]]:
    """The datasets of every temporal position, each a CT series at the same positions."""
    times = acquisition_times()
    values = signal(times)
    phases = []
    for time in range(TIMES):
        datasets = make_ct_series(values[time], (2.5, 0.8, 0.8), series_uid=SERIES_UID)
        for index, ds in enumerate(datasets):
            ds.SOPInstanceUID = derive_uid("tests.temporal", "instance", str(time), str(index))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = time * SLICES + index + 1
            ds.TemporalPositionIdentifier = time + 1
            ds.NumberOfTemporalPositions = TIMES
            if per_slice_times:
                ds.AcquisitionTime = clock(float(times[time, index]))
            else:
                ds.FrameTime = REPETITION_S * 1000
        phases.append(datasets)
    return phases


def flat(phases: list[list[Dataset]]) -> list[Dataset]:
    return [ds for phase in phases for ds in phase]


def steps(*items: dict[str, object]) -> list[PreprocessStep]:
    return [PreprocessStep.model_validate(item) for item in items]


def test_a_4d_series_loads_as_its_first_phase_with_every_time_point(tmp_path: Path) -> None:
    phases = four_d_series()
    paths = write_series(flat(phases), tmp_path)
    random.Random(5).shuffle(paths)

    volume = load_series(paths)

    expected = signal(acquisition_times()).astype(np.float32)
    np.testing.assert_array_equal(volume.voxels, expected[0])
    assert [ds.SOPInstanceUID for ds in volume.datasets] == [ds.SOPInstanceUID for ds in phases[0]]
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.8))
    assert volume.timepoints is not None and volume.timepoints.dtype == np.float32
    np.testing.assert_array_equal(volume.timepoints, expected)
    assert volume.slice_times is not None
    np.testing.assert_allclose(volume.slice_times, acquisition_times(), atol=1e-6)


def test_without_per_slice_times_the_temporal_position_times_frame_time_is_used(
    tmp_path: Path,
) -> None:
    volume = load_series(write_series(flat(four_d_series(per_slice_times=False)), tmp_path))

    assert volume.slice_times is not None
    expected = np.repeat(np.arange(TIMES)[:, None] * REPETITION_S, SLICES, axis=1)
    np.testing.assert_allclose(volume.slice_times, expected)


def test_slice_timing_moves_every_slice_to_the_middle_slices_times() -> None:
    times = acquisition_times()
    timepoints = signal(times).astype(np.float32)

    corrected = SliceTiming().correct(timepoints, times)

    reference = ACQUISITION_ORDER[SLICES // 2]  # acquired 4th of 6
    target = signal(times[:, reference])
    # Exact for a linear signal wherever the target lies within the slice's own
    # samples; the ends hold the nearest sample instead of extrapolating.
    for index in range(SLICES):
        np.testing.assert_allclose(corrected[1:-1, index], target[1:-1], atol=1e-3)
    np.testing.assert_array_equal(corrected[:, reference], timepoints[:, reference])


def test_slice_timing_to_the_first_acquired_slice() -> None:
    times = acquisition_times()
    corrected = SliceTiming(reference="first").correct(signal(times).astype(np.float32), times)

    target = signal(times[:, ACQUISITION_ORDER[0]])
    np.testing.assert_allclose(corrected[1:], target[1:, None].repeat(SLICES, 1), atol=1e-3)


def test_preprocess_reduces_the_corrected_series_to_one_volume(tmp_path: Path) -> None:
    volume = load_series(write_series(flat(four_d_series()), tmp_path))
    times = acquisition_times()
    corrected = SliceTiming().correct(signal(times).astype(np.float32), times)

    phase = preprocess(volume, steps({"step": "slice_timing", "reduce": "phase", "phase": 2}))
    mean = preprocess(volume, steps({"step": "slice_timing", "reduce": "mean"}))
    peak = preprocess(
        volume,
        steps({"step": "slice_timing", "reduce": "max"}, {"step": "scale", "low": 0, "high": 2}),
    )

    reference_times = times[2, ACQUISITION_ORDER[SLICES // 2]]
    np.testing.assert_allclose(
        phase.array, np.broadcast_to(signal(reference_times), phase.array.shape), atol=1e-3
    )
    np.testing.assert_allclose(mean.array, corrected.mean(axis=0), atol=1e-3)
    np.testing.assert_allclose(peak.array, corrected.max(axis=0) / 2, atol=1e-3)
    assert phase.source_shape == (SLICES, ROWS, COLUMNS) and not phase.changes


def test_a_4d_series_is_refused_by_a_model_without_slice_timing(tmp_path: Path) -> None:
    volume = load_series(write_series(flat(four_d_series()), tmp_path))

    with pytest.raises(SeriesNotAnalysable) as info:
        preprocess(volume, steps({"step": "window", "low": -100, "high": 100}))

    assert str(info.value) == (
        f"4D series of {TIMES} temporal positions; this model takes one volume: "
        "its manifest needs a slice_timing step"
    )


def test_slice_timing_must_be_first_and_phase_within_the_series(tmp_path: Path) -> None:
    with pytest.raises(AnalysisError, match="must be the first step"):
        preprocess_array(
            np.zeros((2, 3, 3), np.float32),
            steps({"step": "window", "low": 0, "high": 1}, {"step": "slice_timing"}),
        )
    with pytest.raises(AnalysisError, match="phase applies to reduce: phase"):
        preprocess_array(
            np.zeros((2, 3, 3), np.float32), steps({"step": "slice_timing", "phase": 1})
        )

    volume = load_series(write_series(flat(four_d_series()), tmp_path))
    with pytest.raises(SeriesNotAnalysable, match=f"the series has {TIMES}"):
        preprocess(volume, steps({"step": "slice_timing", "reduce": "phase", "phase": TIMES}))


def test_a_position_with_fewer_time_points_is_refused(tmp_path: Path) -> None:
    datasets = flat(four_d_series())
    dropped = next(
        ds
        for ds in datasets
        if ds.TemporalPositionIdentifier == 3 and ds.InstanceNumber % SLICES == 4
    )
    datasets.remove(dropped)

    with pytest.raises(SeriesNotAnalysable) as info:
        load_series(write_series(datasets, tmp_path))

    reason = str(info.value)
    assert "same number of temporal positions at every slice position" in reason
    assert "told apart by TemporalPositionIdentifier" in reason
    assert "5 position(s) with 5, 1 position(s) with 4" in reason


def test_a_3d_series_loads_as_before_and_passes_slice_timing_unchanged(tmp_path: Path) -> None:
    hu = np.random.default_rng(3).integers(-1000, 1000, size=(SLICES, ROWS, COLUMNS))
    volume = load_series(write_series(make_ct_series(hu), tmp_path))

    np.testing.assert_array_equal(volume.voxels, hu)
    assert volume.timepoints is None and volume.slice_times is None
    prepared = preprocess(volume, steps({"step": "slice_timing"}))
    np.testing.assert_array_equal(prepared.array, hu)


def test_repeated_positions_nothing_tells_apart_are_still_duplicates(tmp_path: Path) -> None:
    datasets = flat(four_d_series(per_slice_times=False))
    for ds in datasets:
        del ds.TemporalPositionIdentifier

    with pytest.raises(SeriesNotAnalysable, match="duplicate slice positions"):
        load_series(write_series(datasets, tmp_path))
