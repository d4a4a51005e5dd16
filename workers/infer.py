"""Inference: run one model package on one volume and map its output to the source grid.

``run_model`` is the pipeline's entry point, in three stages a caller can time:
``preprocess`` (the manifest's steps, ``workers.preprocessing``), ``predict`` (network
forward passes only, slice-batch by slice-batch, output on the prepared grid) and
``postprocess`` (outputs mapped back through ``Prepared.to_source``, labels and
probabilities in the geometry of the volume given). Networks stay loaded between jobs
in a ``NetworkCache`` owned by the worker process; nothing here touches CUDA until a
model is run on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.loader import load_network
from models.manifest import ModelTask
from models.registry import ModelPackage
from workers.errors import ModelUnavailable
from workers.preprocess import Prepared, preprocess
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


StepRecorder = Callable[[str], AbstractContextManager[object]]


def _no_recording(_name: str) -> AbstractContextManager[object]:
    return nullcontext()


def run_model(
    package: ModelPackage,
    volume: Volume,
    device: torch.device,
    cache: NetworkCache,
    step: StepRecorder = _no_recording,
) -> ModelOutput:
    """Run a package on a volume; the output is in the volume's own geometry.

    ``step`` (a name -> context manager callable, as ``workers.pipeline`` passes)
    records the stages "preprocess", "infer" and "postprocess".
    """
    with step("preprocess"):
        prepared = preprocess(volume, package.manifest.preprocessing)
    with step("infer"):
        outputs = predict(cache.get(package, device), prepared, device, package)
    with step("postprocess"):
        return postprocess(outputs, prepared, package)


def predict(
    network: nn.Module, prepared: Prepared, device: torch.device, package: ModelPackage
) -> np.ndarray:
    """The network's outputs on the prepared grid, float32 on the CPU.

    Segmentation: logits (channels, slices, rows, columns), channel 0 background.
    Classification: per-slice sigmoid probabilities (slices, classes).
    """
    if package.manifest.task is ModelTask.SEGMENTATION:
        return _segment_logits(network, prepared.array, device, package)
    return _classify(network, prepared.array, device, package)


def postprocess(outputs: np.ndarray, prepared: Prepared, package: ModelPackage) -> ModelOutput:
    """Outputs of ``predict`` as a ``ModelOutput`` on the source grid.

    Segmentation: each segment's logit margin over background is mapped back linearly
    (interpolation is linear, so this is the margin of the mapped logits); the best
    positive margin's segment wins, which is an arg-max, but max() is several times
    faster than argmax() on CPU. Its channel c becomes the label value of the
    manifest's c-th segment. Classification: a series' probability for a class is its
    maximum over the slices.
    """
    manifest = package.manifest
    if manifest.task is not ModelTask.SEGMENTATION:
        return ModelOutput(
            probabilities={
                c.name: float(outputs[:, i].max()) for i, c in enumerate(manifest.outputs.classes)
            }
        )
    lookup = torch.tensor([0] + [s.label for s in manifest.outputs.segments], dtype=torch.uint8)
    labels = np.empty(prepared.source_shape, dtype=np.uint8)
    # Slice by slice when the grid changes allow it: bounded memory on 512 matrices.
    chunk = BATCH_SLICES if prepared.slicewise else outputs.shape[1]
    with torch.inference_mode():
        for start in range(0, outputs.shape[1], chunk):
            logits = outputs[:, start : start + chunk]
            margins = prepared.to_source(logits[1:] - logits[:1], "linear")
            best = torch.from_numpy(margins).max(dim=0)
            channel = torch.where(best.values > 0, best.indices + 1, 0)
            labels[start : start + margins.shape[1]] = lookup[channel].numpy()
    return ModelOutput(labels=labels)


def _segment_logits(
    network: nn.Module, array: np.ndarray, device: torch.device, package: ModelPackage
) -> np.ndarray:
    channels = 1 + len(package.manifest.outputs.segments)
    logits = np.empty((channels, *array.shape), dtype=np.float32)
    with torch.inference_mode():
        for start, batch in _batches(array, device):
            out = _forward(network, batch, device)
            if out.ndim != 4 or out.shape[1] != channels:
                raise ModelUnavailable(
                    f"model {package.name}: network gives {out.shape[1]} channels, manifest "
                    f"declares background + {channels - 1} segment(s)"
                )
            logits[:, start : start + len(batch)] = out.transpose(0, 1).cpu().numpy()
    return logits


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


def _batches(array: np.ndarray, device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
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
