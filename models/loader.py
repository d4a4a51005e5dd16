"""Loading a package's network: verify the weights' digest, build, load, place.

The sha256 in ``model.yaml`` pins the exact weights a manifest was written for, so a
swapped or corrupted file is refused before it can produce a result.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
from torch import nn

from models.architectures import ARCHITECTURES
from models.registry import ModelPackage
from workers.errors import ModelUnavailable

_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_network(package: ModelPackage, device: torch.device) -> nn.Module:
    """The package's network in eval mode on ``device``.

    Raises ModelUnavailable when the weights are missing, do not match the manifest's
    sha256, or do not fit the declared architecture.
    """
    spec = package.manifest.network
    where = f"model {package.name} {package.manifest.version}"
    path = package.weights_path
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise ModelUnavailable(f"{where}: cannot read weights {path}: {exc}") from exc
    if actual != spec.sha256:
        raise ModelUnavailable(
            f"{where}: weights {path.name} have sha256 {actual}, manifest expects {spec.sha256}"
        )
    builder = ARCHITECTURES.get(spec.architecture)
    if builder is None:
        raise ModelUnavailable(f"{where}: unknown architecture {spec.architecture!r}")
    try:
        network = builder(**spec.parameters)
    except (TypeError, ValueError) as exc:
        raise ModelUnavailable(
            f"{where}: architecture {spec.architecture!r} rejects parameters "
            f"{spec.parameters}: {exc}"
        ) from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as exc:
        # load_state_dict reports missing/unexpected keys and shape mismatches as RuntimeError.
        raise ModelUnavailable(f"{where}: weights do not fit {spec.architecture}: {exc}") from exc
    network.eval()
    return network.to(device)
