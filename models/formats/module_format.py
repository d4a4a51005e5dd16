"""The ``module`` format: an architecture of ``models.architectures`` plus a state dict.

``SPATIAL_DIMS`` names the architectures ``models.architectures`` builds and whether
each takes slices (2) or volumes (3): discovery checks a manifest against it without
importing torch; the builders themselves are imported when a network is built.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

from models.contract_errors import ManifestError, ModelUnavailable
from models.feed import NetworkInput
from models.formats.catalogue import NetworkFormat, format_for, inside_package
from models.formats.signature import check_signature

if TYPE_CHECKING:
    import torch
    from torch import nn

    from models.package import ModelPackage

# Every key of models.architectures.ARCHITECTURES (a test keeps the two in step).
SPATIAL_DIMS: dict[str, int] = {"unet2d": 2, "cnn2d_classifier": 2, "unet3d": 3}


@format_for("module")
class ModuleFormat(NetworkFormat):
    """An architecture of ``models.architectures`` built with ``parameters``, plus a state dict."""

    required = frozenset({"architecture", "weights"})
    allowed = frozenset({"architecture", "parameters", "weights"})

    def network_file(self, package: ModelPackage) -> Path:
        return inside_package(package, str(package.manifest.network.weights), "weights")

    def check(self, package: ModelPackage, feed: NetworkInput) -> None:
        spec = package.manifest.network
        if spec.architecture not in SPATIAL_DIMS:
            raise ManifestError(
                f"unknown architecture {spec.architecture!r} "
                f"(known: {', '.join(sorted(SPATIAL_DIMS))})"
            )
        dims = SPATIAL_DIMS.get(str(spec.architecture), 2)
        if dims != spec.spatial_dims:
            raise ManifestError(
                f"input dimensions: architecture {spec.architecture} is {dims}D, "
                f"network.spatial_dims is {spec.spatial_dims}"
            )
        channels = spec.parameters.get("in_channels")
        check_signature(
            package,
            feed,
            source=f"architecture {spec.architecture} (parameters.in_channels)",
            in_channels=channels,
            spatial=None,
            out_channels=None,
        )
        file = self.network_file(package)
        if not file.is_file():
            raise ManifestError(f"weights file {spec.weights!r} is missing")

    def build(self, package: ModelPackage, path: Path, device: torch.device) -> nn.Module:
        import torch

        from models.architectures import ARCHITECTURES

        spec = package.manifest.network
        builder = ARCHITECTURES.get(str(spec.architecture))
        if builder is None:
            raise ModelUnavailable(f"unknown architecture {spec.architecture!r}")
        try:
            network = builder(**spec.parameters)
        except (TypeError, ValueError) as exc:
            raise ModelUnavailable(
                f"architecture {spec.architecture!r} rejects parameters {spec.parameters}: {exc}"
            ) from exc
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            network.load_state_dict(state)
        except (
            RuntimeError, OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError
        ) as exc:  # fmt: skip
            # load_state_dict reports missing/unexpected keys and shape mismatches as RuntimeError.
            raise ModelUnavailable(f"weights do not fit {spec.architecture}: {exc}") from exc
        return network.to(device)
