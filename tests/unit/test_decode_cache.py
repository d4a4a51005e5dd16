"""A series is decoded once for every model that takes it (``workers.load.cache``).

The cache counts the real decodes (``load_series`` calls): two models analysing one
series decode it once and give exactly what each gives uncached; a series whose files
changed is decoded again; the byte budget evicts the least recently used; a kept
volume cannot be written into by a later job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom import Dataset, dcmread

from models.registry import discover_packages
from tests.factories import make_ct_series, write_series
from training.phantom import make_phantom
from workers.infer import NetworkCache
from workers.load.cache import DecodedSeriesCache, volume_bytes
from workers.load.series import load_series
from workers.pipeline import Analysis, analyze, load

CPU = torch.device("cpu")
MODELS = ("ct-lung-nodule-seg", "ct-nodule-classifier")


def phantom_series(directory: Path, seed: int, slices: int = 8) -> list[Path]:
    phantom = make_phantom(np.random.default_rng(seed), (slices, 96, 96), (3.0, 3.5, 3.5))
    return write_series(make_ct_series(phantom.hu, phantom.spacing), directory)


@pytest.fixture
def paths(tmp_path: Path) -> list[Path]:
    return phantom_series(tmp_path / "ct", 11)


def test_a_series_loaded_twice_is_decoded_once_and_is_what_the_loader_gives(
    paths: list[Path],
) -> None:
    cache = DecodedSeriesCache(budget_bytes=2**30)
    first = cache.load(paths)
    second = cache.load(list(paths))
    assert (cache.decodes, cache.hits) == (1, 1)
    assert second is first
    uncached = load_series(paths)
    np.testing.assert_array_equal(first.voxels, uncached.voxels)
    assert first.spacing == uncached.spacing
    assert [ds.SOPInstanceUID for ds in first.datasets] == [
        ds.SOPInstanceUID for ds in uncached.datasets
    ]
    assert cache.held_bytes == volume_bytes(first) == first.voxels.nbytes


def test_a_kept_volume_is_read_only(paths: list[Path]) -> None:
    volume = DecodedSeriesCache(budget_bytes=2**30).load(paths)
    with pytest.raises(ValueError, match="read-only"):
        volume.voxels[0, 0, 0] = 1.0


def test_a_changed_series_is_decoded_again(paths: list[Path], tmp_path: Path) -> None:
    cache = DecodedSeriesCache(budget_bytes=2**30)
    before = cache.load(paths)
    # One instance replaced by other content (the spool renames a new file into place).
    replaced: Dataset = dcmread(paths[0])
    replaced.WindowCenter = 40
    replacement = tmp_path / "new.dcm"
    replaced.save_as(replacement, enforce_file_format=True)
    replacement.replace(paths[0])
    after = cache.load(paths)
    assert cache.decodes == 2 and after is not before
    # An instance fewer: other files, decoded again too; the same files again: a hit.
    assert cache.load(paths[:-1]).shape[0] == len(paths) - 1
    cache.load(paths[:-1])
    assert (cache.decodes, cache.hits) == (3, 1)


def test_the_budget_evicts_the_least_recently_used(tmp_path: Path) -> None:
    a, b, c = (
        phantom_series(tmp_path / name, seed) for name, seed in (("a", 1), ("b", 2), ("c", 3))
    )
    one = load_series(a).voxels.nbytes
    cache = DecodedSeriesCache(budget_bytes=2 * one)
    cache.load(a)
    cache.load(b)
    cache.load(a)  # a is now the most recently used
    cache.load(c)  # b goes
    assert (cache.decodes, len(cache), cache.held_bytes) == (3, 2, 2 * one)
    cache.load(a)
    cache.load(c)
    assert cache.decodes == 3
    cache.load(b)
    assert cache.decodes == 4


def test_nothing_is_kept_with_no_budget_or_beyond_it(paths: list[Path]) -> None:
    off = DecodedSeriesCache(budget_bytes=0)
    off.load(paths)
    off.load(paths)
    assert (off.decodes, len(off)) == (2, 0)
    small = DecodedSeriesCache(budget_bytes=1024)  # less than one series
    small.load(paths)
    small.load(paths)
    assert (small.decodes, len(small)) == (2, 0)
    assert load_series(paths).voxels.flags.writeable


def test_further_inputs_go_through_the_same_cache(paths: list[Path], tmp_path: Path) -> None:
    other = phantom_series(tmp_path / "pet", 21)
    cache = DecodedSeriesCache(budget_bytes=2**30)
    inputs = load(paths, [other], series=cache)
    again = load(other, [paths], series=cache)
    assert cache.decodes == 2 and cache.hits == 2
    assert again.primary is inputs.additional[0] and again.additional[0] is inputs.primary


def _comparable(analysis: Analysis) -> tuple[dict, list[tuple[str, str, bytes]]]:
    objects = []
    for kind, ds in analysis.objects:
        pixels = ds.PixelData if "PixelData" in ds else b""
        objects.append((str(kind), str(ds.SOPInstanceUID), bytes(pixels)))
    return analysis.findings, objects


def test_two_models_on_one_series_decode_it_once_with_the_uncached_results(
    paths: list[Path],
) -> None:
    registry = discover_packages()
    networks = NetworkCache()
    cache = DecodedSeriesCache(budget_bytes=2**30)
    cached = [
        analyze(paths, registry.get(name), CPU, networks, series=cache, overlay=True)
        for name in MODELS
    ]
    assert (cache.decodes, cache.hits) == (1, 1)
    uncached = [analyze(paths, registry.get(name), CPU, networks, overlay=True) for name in MODELS]
    for with_cache, without in zip(cached, uncached, strict=True):
        assert _comparable(with_cache) == _comparable(without)
    # The SR's content too (its dates aside, it is the same report).
    for with_cache, without in zip(cached, uncached, strict=True):
        sr_cached = next(ds for kind, ds in with_cache.objects if str(kind) == "SR")
        sr_plain = next(ds for kind, ds in without.objects if str(kind) == "SR")
        assert sr_cached.ContentSequence == sr_plain.ContentSequence
