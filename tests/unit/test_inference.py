"""Inference with the SHIPPED weights on fresh phantoms, device choice, and a training smoke run.

The phantoms here come from seeds the training scripts never used. The floors are
looser than the held-out figures in the model cards, so they catch a broken model or
pipeline, not a point of Dice.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.architectures import ARCHITECTURES
from models.manifest import PreprocessStep
from models.registry import ModelPackage, discover_packages
from training.phantom import LESION, LUNG, make_phantom
from training.train_classification import classification_loss
from training.train_segmentation import segmentation_loss
from training.training import batches, fit, generate_slices, phantom_volume
from workers.errors import ModelUnavailable
from workers.infer import NetworkCache, select_device
from workers.pipeline import run_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def registry():
    return discover_packages()


@pytest.fixture(scope="module")
def cache():
    return NetworkCache()


@pytest.fixture(scope="module")
def nodule_phantom():
    phantom = make_phantom(np.random.default_rng(90210), (24, 256, 256), (2.5, 1.4, 1.4), 2)
    assert phantom.has_lesion
    return phantom


@pytest.fixture(scope="module")
def healthy_phantom():
    return make_phantom(np.random.default_rng(90211), (24, 256, 256), (2.5, 1.4, 1.4), 0)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_select_device():
    assert select_device("cpu") == CPU
    assert select_device("auto") == (torch.device("cuda") if torch.cuda.is_available() else CPU)
    with pytest.raises(ValueError, match="gpu0"):
        select_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda:0")


def test_segmentation_finds_lungs_and_nodules_in_source_geometry(registry, cache, nodule_phantom):
    output = run_model(
        registry.get("ct-lung-nodule-seg"), phantom_volume(nodule_phantom), CPU, cache
    )
    assert output.labels is not None
    assert output.labels.shape == nodule_phantom.hu.shape
    assert output.labels.dtype == np.uint8
    assert set(np.unique(output.labels)) <= {0, 1, 2}
    assert output.probabilities == {}
    assert dice(output.labels == LUNG, nodule_phantom.labels == LUNG) > 0.9
    assert dice(output.labels == LESION, nodule_phantom.labels == LESION) > 0.5


def test_segmentation_of_a_512_matrix_maps_back_exactly(registry, cache):
    phantom = make_phantom(np.random.default_rng(31337), (6, 512, 384), (5.0, 0.8, 0.9), 0)
    output = run_model(registry.get("ct-lung-nodule-seg"), phantom_volume(phantom), CPU, cache)
    assert output.labels.shape == (6, 512, 384)
    assert dice(output.labels == LUNG, phantom.labels == LUNG) > 0.9


def test_classifier_separates_nodule_from_healthy(registry, cache, nodule_phantom, healthy_phantom):
    package = registry.get("ct-nodule-classifier")
    with_nodule = run_model(package, phantom_volume(nodule_phantom), CPU, cache)
    without = run_model(package, phantom_volume(healthy_phantom), CPU, cache)
    assert with_nodule.labels is None
    assert set(with_nodule.probabilities) == {"nodule"}
    assert with_nodule.probabilities["nodule"] > 0.5 > without.probabilities["nodule"]


def test_cache_keeps_networks_warm(registry):
    cache = NetworkCache()
    package = registry.get("ct-nodule-classifier")
    first = cache.get(package, CPU)
    assert cache.get(package, CPU) is first
    assert len(cache) == 1


def test_tampered_weights_make_the_model_unavailable(registry, tmp_path, healthy_phantom):
    import shutil

    shipped = registry.get("ct-nodule-classifier")
    copy = tmp_path / "tampered"
    shutil.copytree(shipped.path, copy)
    (copy / "weights.pt").write_bytes(b"not the weights")
    package = ModelPackage(copy, shipped.manifest)
    with pytest.raises(ModelUnavailable, match="sha256"):
        run_model(package, phantom_volume(healthy_phantom), CPU, NetworkCache())


def test_a_few_training_steps_give_finite_losses():
    torch.manual_seed(0)
    steps = [
        PreprocessStep(step="window", low=-1000, high=400),
        PreprocessStep(step="scale", low=-1000, high=400),
        PreprocessStep(step="resize_inplane", size=[64, 64]),
    ]
    data = generate_slices(5, 2, steps, slices_per_phantom=(4, 6), lesion_counts=(2,))
    rng = np.random.default_rng(0)
    unet = ARCHITECTURES["unet2d"](in_channels=1, out_channels=3, width=4, depth=2)
    losses = fit(unet, batches(data, rng, 4, 32, 0.5), segmentation_loss, 3, 1e-3, log_every=0)
    classifier = ARCHITECTURES["cnn2d_classifier"](in_channels=1, classes=1, width=4)
    losses += fit(classifier, batches(data, rng, 4, None, 0.5), classification_loss, 3, 1e-3, 0)
    assert len(losses) == 6
    assert all(np.isfinite(losses))
