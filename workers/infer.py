"""Inference: run one model package on one volume and map its output to the source grid.

``run_model`` is the pipeline's infer step: preprocess as the manifest says, run the
network slice-batch by slice-batch, and return a ``ModelOutput`` in the geometry of
the volume it was given. Networks stay loaded between jobs in a ``NetworkCache``
owned by the worker process; nothing here touches CUDA until a model is run on it.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.loader import load_network
from models.manifest import ModelTask
from models.registry import ModelPackage
from workers.errors import ModelUnavailable
from workers.preprocess import preprocess
from workers.volume import ModelOutput, Volume

BATCH_SLICES = 16
# U-Nets halve the grid several times; padding to this multiple lets any size through.
_SIZE_MULTIPLE = 16

_DEVICE_SETTING = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def select_device(setting: str) -> torch.device:
    """The torch device a setting names: ``auto`` (CUDA when present), ``cpu``, ``cuda[:N]``.

    Raises ValueError for an unknown setting, or for CUDA when no such GPU is present,
    so a misconfigured worker fails at start rather than on its first job.
    """
    value = setting.strip().lower()
    if not _DEVICE_SETTING.match(value):
        raise ValueError(f"device setting {setting!r} is not auto, cpu, cuda or cuda:N")
    if value == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(value)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {setting!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {setting!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return device


class NetworkCache:
    """Loaded networks of one worker process, keyed by (name, version, device).

    Loading verifies the weights' sha256 and builds the network once; later jobs for
    the same model reuse it warm.
    """

    def __init__(self) -> None:
        self._networks: dict[tuple[str, str, str], nn.Module] = {}

    def get(self, package: ModelPackage, device: torch.device) -> nn.Module:
        key = (package.manifest.name, package.manifest.version, str(device))
        network = self._networks.get(key)
        if network is None:
            network = load_network(package, device)
            self._networks[key] = network
        return network

    def clear(self) -> None:
        self._networks.clear()

    def __len__(self) -> int:
        return len(self._networks)


def run_model(
    package: ModelPackage, volume: Volume, device: torch.device, cache: NetworkCache
) -> ModelOutput:
    """Run a package on a volume; the output is in the volume's own geometry.

    Segmentation: per-slice logits are resized to the source in-plane shape, then the
    arg-max channel c becomes the label value of the manifest's c-th segment (channel 0
    is background). Classification: a sigmoid per class and slice; a series' probability
    for a class is its maximum over the slices.
    """
    manifest = package.manifest
    network = cache.get(package, device)
    prepared = preprocess(volume, manifest.preprocessing)
    if manifest.task is ModelTask.SEGMENTATION:
        labels = _segment(network, prepared.array, prepared.source_shape, device, package)
        return ModelOutput(labels=labels)
    scores = _classify(network, prepared.array, device, package)
    classes = manifest.outputs.classes
    return ModelOutput(
        probabilities={c.name: float(scores[:, i].max()) for i, c in enumerate(classes)}
    )


def _segment(
    network: nn.Module,
    array: np.ndarray,
    source_shape: tuple[int, int],
    device: torch.device,
    package: ModelPackage,
) -> np.ndarray:
    segments = package.manifest.outputs.segments
    lookup = torch.tensor([0] + [s.label for s in segments], dtype=torch.uint8, device=device)
    labels = np.empty((array.shape[0], *source_shape), dtype=np.uint8)
    with torch.inference_mode():
        for start, batch in _batches(array, device):
            logits = _forward(network, batch, device)
            if logits.shape[1] != len(lookup):
                raise ModelUnavailable(
                    f"model {package.name}: network gives {logits.shape[1]} channels, manifest "
                    f"declares background + {len(segments)} segment(s)"
                )
            # Each segment's margin over background, resized (resizing is linear, so this
            # is the margin of the resized logits); the best positive margin wins. Same
            # result as an arg-max, but max() is several times faster than argmax() on CPU.
            margins = F.interpolate(
                logits[:, 1:] - logits[:, :1],
                size=source_shape,
                mode="bilinear",
                align_corners=False,
            )
            best = margins.max(dim=1)
            channel = torch.where(best.values > 0, best.indices + 1, 0)
            labels[start : start + len(batch)] = lookup[channel].cpu().numpy()
    return labels


def _classify(
    network: nn.Module, array: np.ndarray, device: torch.device, package: ModelPackage
) -> np.ndarray:
    """Per-slice probabilities (slices, classes)."""
    classes = len(package.manifest.outputs.classes)
    scores = []
    with torch.inference_mode():
        for _start, batch in _batches(array, device):
            logits = _forward(network, batch, device)
            if logits.ndim != 2 or logits.shape[1] != classes:
                raise ModelUnavailable(
                    f"model {package.name}: network gives scores of shape {tuple(logits.shape)}, "
                    f"manifest declares {classes} class(es)"
                )
            scores.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(scores)


def _batches(array: np.ndarray, device: torch.device):
    """(first slice index, (B, 1, H, W) float32 tensor on device) per batch of slices."""
    for start in range(0, array.shape[0], BATCH_SLICES):
        batch = torch.from_numpy(array[start : start + BATCH_SLICES]).unsqueeze(1)
        yield start, batch.to(device, non_blocking=True)


def _forward(network: nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits in float32, computed under reduced precision on CUDA only."""
    rows, cols = batch.shape[-2:]
    pad_rows = -rows % _SIZE_MULTIPLE
    pad_cols = -cols % _SIZE_MULTIPLE
    if pad_rows or pad_cols:
        batch = F.pad(batch, (0, pad_cols, 0, pad_rows), mode="replicate")
    with _autocast(device):
        logits = network(batch)
    logits = logits.float()
    if logits.ndim == 4 and (pad_rows or pad_cols):
        logits = logits[..., :rows, :cols]
    return logits


def _autocast(device: torch.device) -> AbstractContextManager[object]:
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)
