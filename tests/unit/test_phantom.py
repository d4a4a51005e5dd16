"""The synthetic chest phantom: shapes, HU ranges, ground truth, reproducibility, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from training.phantom import BACKGROUND, LESION, LUNG, make_phantom, random_geometry


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(np.random.default_rng(11), (24, 256, 256), (2.5, 1.4, 1.4), lesions=2)


def test_arrays_have_the_requested_shape_and_types(phantom):
    assert phantom.hu.shape == phantom.labels.shape == (24, 256, 256)
    assert phantom.hu.dtype == np.float32
    assert phantom.labels.dtype == np.uint8
    assert set(np.unique(phantom.labels)) <= {BACKGROUND, LUNG, LESION}
    assert phantom.spacing == (2.5, 1.4, 1.4)


def test_tissues_have_realistic_hounsfield_units(phantom):
    corner = phantom.hu[:, :8, :8]
    assert abs(float(corner.mean()) + 1000.0) < 15.0  # air outside the body
    lung = phantom.hu[phantom.labels == LUNG]
    assert -900.0 < float(np.median(lung)) < -700.0
    lesion = phantom.hu[phantom.labels == LESION]
    assert -20.0 < float(np.median(lesion)) < 90.0
    assert float(phantom.hu.max()) > 350.0  # bone is there


def test_lesions_lie_inside_the_lungs_and_are_reported(phantom):
    assert phantom.has_lesion
    lesion = phantom.labels == LESION
    # Every lesion voxel has lung or lesion next to it in-plane: nodules sit in lung.
    neighbours = np.zeros_like(lesion)
    for shift in (-1, 1):
        for axis in (1, 2):
            neighbours |= np.isin(np.roll(phantom.labels, shift, axis=axis), (LUNG, LESION))
    assert (neighbours[lesion]).all()


def test_no_lesion_requested_means_none_drawn():
    healthy = make_phantom(np.random.default_rng(3), (16, 128, 128), (2.5, 2.5, 2.5), lesions=0)
    assert not healthy.has_lesion
    assert not (healthy.labels == LESION).any()
    assert (healthy.labels == LUNG).any()


def test_same_seed_same_phantom_other_seed_other_phantom():
    a = make_phantom(np.random.default_rng(5), (8, 128, 128), (2.5, 2.5, 2.5), lesions=1)
    b = make_phantom(np.random.default_rng(5), (8, 128, 128), (2.5, 2.5, 2.5), lesions=1)
    c = make_phantom(np.random.default_rng(6), (8, 128, 128), (2.5, 2.5, 2.5), lesions=1)
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_random_geometry_spans_scanner_like_ranges():
    rng = np.random.default_rng(0)
    geometries = [random_geometry(rng, 30) for _ in range(200)]
    sizes = {shape[1] for shape, _ in geometries}
    slice_spacings = [spacing[0] for _, spacing in geometries]
    pixels = [spacing[1] for _, spacing in geometries]
    assert sizes == {256, 512}
    assert min(slice_spacings) == 1.0 and max(slice_spacings) == 5.0
    assert 0.25 < min(pixels) < 0.6 and 1.2 < max(pixels) < 1.8


def test_a_full_size_phantom_is_fast():
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    make_phantom(rng, (40, 512, 512), (2.5, 0.7, 0.7), lesions=3)
    assert time.perf_counter() - start < 2.0


def test_an_abdomen_volume_has_air_in_the_body_but_no_lung():
    rng = np.random.default_rng(8)
    phantom = make_phantom(rng, (12, 128, 128), (5.0, 2.8, 2.8), lesions=1, abdomen_chance=1.0)
    assert not (phantom.labels == LUNG).any()
    assert not phantom.has_lesion
    centre = phantom.hu[:, 32:96, 32:96]
    assert (centre < -900).any()  # bowel gas inside the body
