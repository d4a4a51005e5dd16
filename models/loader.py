"""Loading a package's network: verify the digest, build it by its format, place it.

The sha256 in ``model.yaml`` pins the exact file a manifest was written for (weights,
TorchScript, ONNX, or a MONAI bundle's ``models/model.ts``), so a swapped or
corrupted file is refused before it can produce a result. How each format is built
lives in ``models.formats``; this is the one entry point and the one digest check.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.contract_errors import ManifestError, ModelUnavailable
from models.feed import network_input
from models.formats import network_format
from models.manifest import ModelTask
from models.package import ModelPackage

_CHUNK = 1 << 20
# In-plane size of the trial input when the preprocessing does not fix one.
# The zero input of a trial run when the network's size follows the series' own size.
_TRIAL_SIZE = {2: (64, 64), 3: (16, 64, 64)}


def sha256_of(path: Path) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Refuse a file whose digest is not ``expected``, naming both digests."""
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise ModelUnavailable(f"cannot read network file {path}: {exc}") from exc
    if actual != expected:
        raise ModelUnavailable(
            f"network file {path.name} has sha256 {actual}, manifest expects {expected}"
        )


def load_network(package: ModelPackage, device: torch.device) -> nn.Module:
    """The package's network in eval mode on ``device``, whatever its format.

    Raises ModelUnavailable when the network file is missing, does not match the
    manifest's sha256, or cannot be built by its format.
    """
    spec = package.manifest.network
    where = f"model {package.name} {package.manifest.version}"
    try:
        kind = network_format(spec.format)
        path = kind.network_file(package)
    except ManifestError as exc:
        raise ModelUnavailable(f"{where}: {exc}") from exc
    try:
        verify_sha256(path, spec.sha256)
        network = kind.build(package, path, device)
    except ModelUnavailable as exc:
        raise ModelUnavailable(f"{where}: {exc}") from exc
    network.eval()
    return network.to(device)


@dataclass(frozen=True)
class TrialRun:
    """One forward pass of a zero input: the shapes in and out."""

    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


def trial_run(package: ModelPackage, network: nn.Module, device: torch.device) -> TrialRun:
    """Run one zero input of the shape inference feeds; check the output's shape.

    Segmentation must give (1, background + segments, *spatial), classification
    (1, classes). Raises ModelUnavailable naming the shape that is wrong.
    """
    feed = network_input(package.manifest)
    spatial = tuple(feed.size or _TRIAL_SIZE[feed.spatial_dims])
    shape = (1, feed.channels, *spatial)
    try:
        with torch.inference_mode():
            output = network(torch.zeros(shape, dtype=torch.float32, device=device))
    except Exception as exc:  # a foreign network may raise anything; say what it was
        raise ModelUnavailable(
            f"model {package.name}: forward pass of a zero {tuple(shape)} input failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(output, torch.Tensor):
        raise ModelUnavailable(
            f"model {package.name}: network returns {type(output).__name__}, not a tensor"
        )
    channels = package.manifest.output_channels
    if package.manifest.task is ModelTask.SEGMENTATION:
        expected: tuple[int, ...] = (1, channels, *spatial)
        what = "background + segments"
    else:
        expected = (1, channels)
        what = "classes"
    if tuple(output.shape) != expected:
        raise ModelUnavailable(
            f"model {package.name}: output shape {tuple(output.shape)} for input "
            f"{shape}, manifest needs {expected} (batch, {what}"
            f"{', spatial dimensions' if len(expected) > 2 else ''})"
        )
    return TrialRun(input_shape=shape, output_shape=tuple(output.shape))
