"""Postprocessing decides labels on the prepared grid, yet equals the exact mapping.

``workers.postprocess.postprocess`` decides most labels on the prepared grid and
interpolates at full resolution only where the prepared voxels disagree (or nearly
tie). Its label maps (and, for a fractional SEG, its probabilities) must be IDENTICAL
to mapping every margin back, as postprocessing did before
(``tests.postprocess_reference``): on the shipped segmentation model's real outputs,
and on random logits full of ties and near ties through every kind of grid change:
in-plane resizes both ways, anisotropic resampling across slices, crop and pad (voxels
the network never saw), oblique series reoriented, and no change at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.manifest import Outputs, PreprocessStep, SegmentationType, SegmentSpec
from models.registry import ModelPackage, discover_packages
from tests.factories import make_ct_series, write_series
from tests.model_packages import CPU
from tests.postprocess_reference import reference_postprocess
from training.phantom import make_phantom
from training.training import phantom_volume
from workers.infer import NetworkCache, infer
from workers.load.series import load_series
from workers.postprocess import postprocess
from workers.postprocess_stencil import (
    UNIT_ROUNDOFF,
    _resizes_alike,
    bilinear_weights,
    source_stencil,
)
from workers.preprocessing import Prepared, preprocess
from workers.preprocessing.grid import GridChange
from workers.volume import Volume

CODE = {"value": "1", "scheme": "99TEST", "meaning": "test"}


def step(name: str, **parameters) -> PreprocessStep:
    return PreprocessStep(step=name, **parameters)


def rotation(z_degrees: float, x_degrees: float) -> np.ndarray:
    a, b = np.radians(z_degrees), np.radians(x_degrees)
    about_z = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return about_z @ about_x


def volume(shape: tuple[int, int, int], spacing=(2.0, 0.7, 0.9), axes=None) -> Volume:
    """Random voxels on a grid; ``axes`` rows are the slice, column and row directions
    (axial when not given)."""
    axes = np.eye(3)[[2, 1, 0]] if axes is None else axes
    voxels = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    return Volume(
        voxels=voxels,
        spacing=spacing,
        origin=np.array([-100.0, 20.0, 5.0]),
        slice_direction=axes[0],
        column_direction=axes[1],
        row_direction=axes[2],
        datasets=[],
    )


OBLIQUE = rotation(25, 35).T[[2, 1, 0]]
# Every kind of grid change, alone and chained: (source volume, steps).
GRIDS = {
    "resize down to the network": (volume((5, 100, 77)), [step("resize_inplane", size=[32, 40])]),
    "resize up to the network": (volume((3, 20, 24)), [step("resize_inplane", size=[64, 50])]),
    "resample across slices": (
        volume((9, 40, 33), (2.5, 0.8, 0.8)),
        [step("resample", spacing=[1.3, 1.1, 2.0])],
    ),
    "resample in plane": (
        volume((6, 41, 30), (2.5, 0.8, 0.8)),
        [step("resample", spacing=[None, 1.7, 0.5])],
    ),
    "crop and pad": (volume((7, 40, 33)), [step("crop_or_pad", size=[5, 30, 40])]),
    "oblique, reoriented, resampled, cropped, resized": (
        volume((6, 20, 22), (1.5, 1.1, 0.9), OBLIQUE),
        [
            step("canonical_orientation", code="RAS"),
            step("resample", spacing=[1.0, 1.5, 1.2]),
            step("crop_or_pad", size=[8, 16, 30]),
            step("resize_inplane", size=[20, 12]),
        ],
    ),
    "no grid change": (volume((4, 9, 11)), [step("scale", low=-1, high=1)]),
}


@pytest.fixture(scope="module")
def shipped() -> ModelPackage:
    return discover_packages().get("ct-lung-nodule-seg")


@pytest.fixture(scope="module")
def cache() -> NetworkCache:
    return NetworkCache()


def with_segments(package: ModelPackage, labels: list[int], fractional=False) -> ModelPackage:
    """``package`` with segments of these label values (and a fractional SEG)."""
    outputs = Outputs(
        segments=[
            SegmentSpec(label=label, name=f"segment {label}", category=CODE, type=CODE)
            for label in labels
        ],
        segmentation_type=SegmentationType.FRACTIONAL if fractional else SegmentationType.BINARY,
    )
    return ModelPackage(package.path, package.manifest.model_copy(update={"outputs": outputs}))


def with_steps(package: ModelPackage, steps: list[PreprocessStep]) -> ModelPackage:
    return ModelPackage(package.path, package.manifest.model_copy(update={"preprocessing": steps}))


def assert_identical(outputs: np.ndarray, prepared: Prepared, package: ModelPackage) -> None:
    expected = reference_postprocess(outputs, prepared, package)
    got = postprocess(outputs, prepared, package)
    assert got.labels.dtype == np.uint8
    assert got.labels.shape == prepared.source_shape
    assert np.array_equal(got.labels, expected.labels)
    if expected.segment_probabilities is None:
        assert got.segment_probabilities is None
    else:
        assert got.segment_probabilities.dtype == np.float32
        assert np.array_equal(got.segment_probabilities, expected.segment_probabilities)


def tied_logits(prepared: Prepared, channels: int, seed: int, ties: bool = True) -> np.ndarray:
    """Logits in smooth regions; with ``ties``, full of exact ties and near ties: values
    on a coarse grid (many exactly equal, many exactly zero margins), some one float32
    step apart from another channel or from background."""
    rng = np.random.default_rng(seed)
    shape = (channels, *prepared.array.shape)
    smooth = (np.cumsum(rng.normal(size=shape), axis=-1) / 3).astype(np.float32)
    if not ties:
        return smooth
    logits = (np.round(smooth * 2) / 2).astype(np.float32)
    near = rng.random(shape[1:]) < 0.2
    other = rng.integers(1, channels, size=shape[1:])
    rows = np.indices(shape[1:])
    target = logits[(other, *rows)]
    nudged = np.nextafter(logits[0], np.where(rng.random(shape[1:]) < 0.5, -np.inf, np.inf))
    logits[(other, *rows)] = np.where(near, nudged, target)
    if channels > 2:  # two segments one step apart
        near = rng.random(shape[1:]) < 0.2
        logits[2] = np.where(near, np.nextafter(logits[1], np.float32(np.inf)), logits[2])
    return logits


@pytest.mark.parametrize("grid", list(GRIDS))
def test_stencil_bounds_the_rounding_of_to_source(grid: str) -> None:
    """The premise: the separable stencil's exact sums lie within its bound of what
    float32 ``to_source`` gives, relative to the largest value read."""
    source, steps = GRIDS[grid]
    prepared = preprocess(source, steps)
    stencil = source_stencil(prepared)
    assert stencil is not None
    normal = np.random.default_rng(1).normal(size=(2, *prepared.array.shape))
    for scale, fill in ((10.0, -3.0), (1e-42, 0.0)):  # the second below float32's normals
        values = (normal * scale).astype(np.float32)
        assert_within_error(prepared, stencil, values, fill)
    assert stencil.rounding < 100 * UNIT_ROUNDOFF


def assert_within_error(prepared: Prepared, stencil, values: np.ndarray, fill: float) -> None:
    mapped = prepared.to_source(values, "linear", fill)
    padded = np.pad(values, ((0, 0), (1, 1), (1, 1), (1, 1)), constant_values=fill)
    padded = padded.transpose(0, *(1 + a.axis for a in stencil.axes))
    exact = np.zeros(mapped.shape)
    reach = np.zeros(mapped.shape[1:])
    z, y, x = stencil.axes
    for a in range(z.index.shape[1]):
        for b in range(y.index.shape[1]):
            for c in range(x.index.shape[1]):
                at = np.ix_(z.index[:, a], y.index[:, b], x.index[:, c])
                weight = np.multiply.outer(
                    np.multiply.outer(z.weight[:, a], y.weight[:, b]), x.weight[:, c]
                )
                corner = padded[(slice(None), *at)]
                exact += weight * corner
                reach = np.maximum(reach, np.abs(corner).max(axis=0))
    assert np.all(np.abs(exact - mapped) <= stencil.error(reach))


def test_bilinear_weights_unlike_torch_are_refused() -> None:
    """The stencil's guard: one bilinear weight a millionth off what torch computes
    for the change's own shapes, and the change gets no stencil (the exact path)."""
    source, steps = GRIDS["resize down to the network"]
    prepared = preprocess(source, steps)
    change, plane = prepared.changes[-1], prepared.array.shape[1:]
    rows = bilinear_weights(plane[0], change.source.shape[1])
    columns = bilinear_weights(plane[1], change.source.shape[2])
    assert _resizes_alike(change, plane, rows, columns)
    low, high, w_low, w_high = rows
    w_low, w_high = w_low.copy(), w_high.copy()
    w_low[40] += 1e-6
    w_high[40] -= 1e-6
    assert not _resizes_alike(change, plane, (low, high, w_low, w_high), columns)


@pytest.mark.parametrize("labels", [[5], [1, 2], [9, 4, 200]])
@pytest.mark.parametrize("grid", list(GRIDS))
def test_labels_with_ties_and_near_ties_are_identical(grid: str, labels, shipped) -> None:
    source, steps = GRIDS[grid]
    prepared = preprocess(source, steps)
    package = with_segments(shipped, labels)
    for seed, ties in ((0, True), (1, True), (2, False)):
        logits = tied_logits(prepared, len(labels) + 1, seed, ties)
        assert_identical(logits, prepared, package)


@pytest.mark.parametrize("grid", list(GRIDS))
def test_fractional_labels_and_probabilities_are_identical(grid: str, shipped) -> None:
    source, steps = GRIDS[grid]
    prepared = preprocess(source, steps)
    package = with_segments(shipped, [3, 1], fractional=True)
    assert_identical(tied_logits(prepared, 3, 11), prepared, package)


def test_logits_that_are_not_finite_give_identical_labels(shipped) -> None:
    source, steps = GRIDS["resize down to the network"]
    prepared = preprocess(source, steps)
    logits = tied_logits(prepared, 3, 4)
    logits[1, 2, 5:9, 7] = np.nan
    logits[2, 0, 3, 3:6] = np.inf
    logits[0, 4, 10, 10] = -np.inf
    assert_identical(logits, prepared, with_segments(shipped, [1, 2]))


def test_a_grid_change_without_a_stencil_takes_the_exact_path(shipped) -> None:
    class Shift(GridChange):
        """An unknown change: its inverse is the identity."""

        @property
        def slicewise(self) -> bool:
            return True

        def forward(self, values, interpolation, fill):
            return values

        def inverse(self, values, interpolation, fill):
            return values

    source, steps = GRIDS["resize down to the network"]
    prepared = preprocess(source, steps)
    prepared.changes = (*prepared.changes, Shift())
    assert source_stencil(prepared) is None
    assert_identical(tied_logits(prepared, 3, 2), prepared, with_segments(shipped, [1, 2]))


# ----------------------------------------------------- the shipped model's real outputs


def shipped_run(package: ModelPackage, source: Volume, cache: NetworkCache):
    prepared = preprocess(source, package.manifest.preprocessing)
    assert source_stencil(prepared) is not None
    return infer(prepared, package, CPU, cache), prepared


def test_shipped_model_on_the_inference_test_phantoms(shipped, cache) -> None:
    """The phantoms of tests/unit/test_inference.py: a nodule chest at 256 and a
    512 x 384 matrix."""
    for phantom in (
        make_phantom(np.random.default_rng(90210), (24, 256, 256), (2.5, 1.4, 1.4), 2),
        make_phantom(np.random.default_rng(31337), (6, 512, 384), (5.0, 0.8, 0.9), 0),
    ):
        outputs, prepared = shipped_run(shipped, phantom_volume(phantom), cache)
        assert_identical(outputs, prepared, shipped)
        expected = reference_postprocess(outputs, prepared, shipped).labels
        assert {1, 2} & set(np.unique(expected))  # the model found something to map


def test_shipped_model_on_a_dicom_series(shipped, cache, tmp_path: Path) -> None:
    phantom = make_phantom(np.random.default_rng(4242), (20, 512, 512), (1.25, 0.7, 0.7), 3)
    paths = write_series(make_ct_series(phantom.hu, phantom.spacing), tmp_path)
    outputs, prepared = shipped_run(shipped, load_series(paths), cache)
    assert_identical(outputs, prepared, shipped)
    assert_identical(outputs, prepared, with_segments(shipped, [1, 2], fractional=True))


def test_shipped_network_through_oblique_anisotropic_cropped_grids(shipped, cache) -> None:
    """The shipped network behind grid changes of every kind: an oblique series
    reoriented, resampled across slices, cropped (its edges never seen) and resized."""
    phantom = make_phantom(np.random.default_rng(777), (14, 256, 256), (2.5, 1.4, 1.4), 2)
    oblique = rotation(8, 4).T[[2, 1, 0]]
    source = phantom_volume(phantom)
    source = Volume(
        voxels=source.voxels,
        spacing=source.spacing,
        origin=source.origin,
        slice_direction=oblique[0],
        column_direction=oblique[1],
        row_direction=oblique[2],
        datasets=[],
    )
    steps = [
        *shipped.manifest.preprocessing[:2],
        step("canonical_orientation", code="RAS"),
        step("resample", spacing=[2.0, 1.1, 1.4]),
        step("crop_or_pad", size=[None, 200, 180]),
        step("resize_inplane", size=[128, 128]),
    ]
    package = with_steps(shipped, steps)
    outputs, prepared = shipped_run(package, source, cache)
    assert not prepared.slicewise
    assert_identical(outputs, prepared, package)
    assert_identical(outputs, prepared, with_segments(package, [1, 2], fractional=True))
