"""Inference: running a model's network on a prepared input, and nothing else.

This module owns the pipeline's infer step (``infer``): which torch device a worker
uses (``select_device``), the networks it keeps warm between jobs (``NetworkCache``,
owned by the worker process), and the forward passes on the grid preprocessing
prepared, fed as ``models.feed`` describes: slice-batch by slice-batch for a 2D network
(rows and columns padded to ``PADDED_MULTIPLE``), for a 3D one overlapping patches
blended by a Gaussian importance map (``sliding_window``) for segmentation, or one
pass on the whole volume for classification. Reduced precision (autocast) on CUDA
only. Preprocessing (``workers.preprocessing``) comes before it and mapping the
outputs back to the source grid (``workers.postprocess``) after it, both called by
``workers.pipeline``. Nothing here touches CUDA until a model is run on it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.feed import PADDED_MULTIPLE
from models.loader import load_network
from models.manifest import ModelTask
from models.package import ModelPackage
from workers.errors import ModelUnavailable
from workers.preprocessing import Prepared

BATCH_SLICES = 16
# Sliding-window patches per forward pass of a 3D network.
BATCH_PATCHES = 4
# Gaussian importance map: sigma as a fraction of the patch (nnU-Net's and MONAI's 1/8).
_SIGMA_SCALE = 0.125

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


def infer(
    prepared: Prepared, package: ModelPackage, device: torch.device, cache: NetworkCache
) -> np.ndarray:
    """The pipeline's infer step: the network's outputs on the prepared grid, float32 on
    the CPU. The network comes warm from ``cache`` (loaded on ``device`` the first time).

    Segmentation: logits (channels, slices, rows, columns), channel 0 background.
    Classification: sigmoid probabilities (slices, classes) per slice for a 2D network,
    (1, classes) for a 3D one.
    """
    network = cache.get(package, device)
    spec = package.manifest.network
    if spec.spatial_dims == 3:
        volume = _channel_tensor(prepared.channels)
        if package.manifest.task is ModelTask.SEGMENTATION:
            if spec.patch_size is None:  # open_package refuses this; say so if bypassed
                raise ModelUnavailable(f"model {package.name}: a 3D network needs patch_size")
            return sliding_window(
                network,
                volume,
                tuple(spec.patch_size),  # type: ignore[arg-type]
                spec.patch_overlap,
                package.manifest.output_channels,
                device,
                package.name,
            )
        return _classify_volume(network, volume, device, package)
    if package.manifest.task is ModelTask.SEGMENTATION:
        return _segment_logits(network, prepared.channels, device, package)
    return _classify(network, prepared.channels, device, package)


def _segment_logits(
    network: nn.Module,
    arrays: Sequence[np.ndarray],
    device: torch.device,
    package: ModelPackage,
) -> np.ndarray:
    channels = 1 + len(package.manifest.outputs.segments)
    logits = np.empty((channels, *arrays[0].shape), dtype=np.float32)
    with torch.inference_mode():
        for start, batch in _batches(arrays, device):
            out = _forward(network, batch, device)
            if out.ndim != 4 or out.shape[1] != channels:
                raise ModelUnavailable(
                    f"model {package.name}: network gives {out.shape[1]} channels, manifest "
                    f"declares background + {channels - 1} segment(s)"
                )
            logits[:, start : start + len(batch)] = out.transpose(0, 1).cpu().numpy()
    return logits


def _classify(
    network: nn.Module,
    arrays: Sequence[np.ndarray],
    device: torch.device,
    package: ModelPackage,
) -> np.ndarray:
    """Per-slice probabilities (slices, classes)."""
    classes = len(package.manifest.outputs.classes)
    scores = []
    with torch.inference_mode():
        for _start, batch in _batches(arrays, device):
            logits = _forward(network, batch, device)
            if logits.ndim != 2 or logits.shape[1] != classes:
                raise ModelUnavailable(
                    f"model {package.name}: network gives scores of shape {tuple(logits.shape)}, "
                    f"manifest declares {classes} class(es)"
                )
            scores.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(scores)


def _batches(
    arrays: Sequence[np.ndarray], device: torch.device
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first slice index, (B, C, H, W) float32 tensor on device) per batch of slices,
    one channel per prepared input series."""
    for start in range(0, arrays[0].shape[0], BATCH_SLICES):
        stop = start + BATCH_SLICES
        if len(arrays) == 1:
            batch = torch.from_numpy(arrays[0][start:stop]).unsqueeze(1)
        else:
            batch = torch.from_numpy(np.stack([a[start:stop] for a in arrays], axis=1))
        yield start, batch.to(device, non_blocking=True)


def _channel_tensor(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """The prepared inputs as one (C, D, H, W) float32 CPU tensor."""
    if len(arrays) == 1:
        return torch.from_numpy(arrays[0]).unsqueeze(0)
    return torch.from_numpy(np.stack(arrays))


def _classify_volume(
    network: nn.Module, volume: torch.Tensor, device: torch.device, package: ModelPackage
) -> np.ndarray:
    """One pass on the whole (C, D, H, W) volume: probabilities (1, classes)."""
    classes = len(package.manifest.outputs.classes)
    with torch.inference_mode(), autocast_for(device):
        logits = network(volume.unsqueeze(0).to(device)).float()
    if logits.shape != (1, classes):
        raise ModelUnavailable(
            f"model {package.name}: network gives scores of shape {tuple(logits.shape)} "
            f"for a volume of shape {tuple(volume.shape)}, manifest declares "
            f"{classes} class(es): expected (1, {classes})"
        )
    return torch.sigmoid(logits).cpu().numpy()


def _window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Patch starts along one axis: a stride of patch * (1 - overlap), the last patch
    flush with the end (``size`` >= ``patch``)."""
    stride = max(1, int(patch * (1.0 - overlap)))
    last = size - patch
    return sorted({min(start, last) for start in range(0, last + stride, stride)})


def importance_map(patch: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """A (D, H, W) Gaussian centred on the patch, peak 1, sigma ``_SIGMA_SCALE`` of each
    side: a patch's centre, which saw the most context, counts most in the blend. Its
    floor of 1e-3 gives every voxel a patch covers some weight."""
    axes = []
    for n in patch:
        centre = (n - 1) / 2.0
        sigma = max(n * _SIGMA_SCALE, 1e-3)
        x = torch.arange(n, dtype=torch.float32, device=device)
        axes.append(torch.exp(-0.5 * ((x - centre) / sigma) ** 2))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weights /= weights.max()
    return weights.clamp_(min=1e-3)


def sliding_window(
    network: nn.Module,
    volume: torch.Tensor,
    patch: tuple[int, int, int],
    overlap: float,
    channels: int,
    device: torch.device,
    name: str = "network",
    batch_size: int = BATCH_PATCHES,
) -> np.ndarray:
    """Logits (channels, D, H, W) of a 3D network over a (C, D, H, W) volume, run on
    overlapping ``patch``-sized windows, ``batch_size`` at a time, and blended.

    A volume smaller than the patch along an axis is padded at its end with zeros (as
    MONAI's ``sliding_window_inference`` pads) and the result cropped back. Float32
    out, reduced precision on CUDA only.
    """
    shape = tuple(volume.shape[1:])
    pads = [max(0, p - n) for n, p in zip(shape, patch, strict=True)]
    if any(pads):
        volume = F.pad(volume, (0, pads[2], 0, pads[1], 0, pads[0]))
    padded = tuple(volume.shape[1:])
    starts = list(
        itertools.product(
            *(_window_starts(n, p, overlap) for n, p in zip(padded, patch, strict=True))
        )
    )
    weights = importance_map(patch, device)
    logits = torch.zeros((channels, *padded), dtype=torch.float32, device=device)
    total = torch.zeros(padded, dtype=torch.float32, device=device)
    with torch.inference_mode():
        for first in range(0, len(starts), batch_size):
            corners = starts[first : first + batch_size]
            windows = [
                tuple(slice(s, s + p) for s, p in zip(corner, patch, strict=True))
                for corner in corners
            ]
            batch = torch.stack([volume[(slice(None), *w)] for w in windows])
            with autocast_for(device):
                out = network(batch.to(device, non_blocking=True))
            out = out.float()
            if tuple(out.shape) != (len(windows), channels, *patch):
                raise ModelUnavailable(
                    f"model {name}: network gives {tuple(out.shape)} for patches of "
                    f"{tuple(batch.shape)}, manifest needs ({len(windows)}, {channels}, "
                    f"{', '.join(map(str, patch))}) (batch, background + segments, "
                    "slices, rows, columns)"
                )
            for window, patch_logits in zip(windows, out, strict=True):
                logits[(slice(None), *window)] += patch_logits * weights
                total[window] += weights
    logits /= total
    crop = tuple(slice(0, n) for n in shape)
    return logits[(slice(None), *crop)].contiguous().cpu().numpy()


def _forward(network: nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits in float32, computed under reduced precision on CUDA only."""
    rows, cols = batch.shape[-2:]
    pad_rows = -rows % PADDED_MULTIPLE
    pad_cols = -cols % PADDED_MULTIPLE
    if pad_rows or pad_cols:
        batch = F.pad(batch, (0, pad_cols, 0, pad_rows), mode="replicate")
    with autocast_for(device):
        logits = network(batch)
    logits = logits.float()
    if logits.ndim == 4 and (pad_rows or pad_cols):
        logits = logits[..., :rows, :cols]
    return logits


def autocast_for(device: torch.device) -> AbstractContextManager[object]:
    """Mixed precision on a CUDA device (bfloat16 where supported, else float16); none
    on the CPU. Jobs and the worker's warm-up run under the same one."""
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)
