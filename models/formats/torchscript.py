"""The ``torchscript`` format: a ``torch.jit.save`` file, whose input is only known by running it.

Also the loader of a MONAI bundle's ``models/model.ts``. torch is imported when a
network is loaded, not when the format is registered.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.contract_errors import ModelUnavailable
from models.formats.catalogue import NetworkFormat, format_for, inside_package

if TYPE_CHECKING:
    import torch
    from torch import nn

    from models.package import ModelPackage


def load_torchscript(path: Path, device: torch.device) -> nn.Module:
    """The TorchScript network in ``path`` on ``device``; ModelUnavailable if it fails."""
    import torch

    try:
        return torch.jit.load(str(path), map_location=device)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelUnavailable(f"{path.name} is not a loadable TorchScript file: {exc}") from exc


@format_for("torchscript")
class TorchScriptFormat(NetworkFormat):
    """A TorchScript file (``torch.jit.save``); its input is only known by running it."""

    required = frozenset({"weights"})
    allowed = frozenset({"weights"})

    def network_file(self, package: ModelPackage) -> Path:
        return inside_package(package, str(package.manifest.network.weights), "weights")

    def build(self, package: ModelPackage, path: Path, device: torch.device) -> nn.Module:
        return load_torchscript(path, device)
