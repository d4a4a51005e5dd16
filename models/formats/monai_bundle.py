"""The ``monai_bundle`` format: a MONAI model-zoo bundle folder.

``network_data_format`` of ``configs/metadata.json`` (MONAI Bundle Specification) is
checked at discovery against the node's input and the manifest's outputs; the
TorchScript ``models/model.ts`` is what runs, and what the manifest's sha256 covers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.contract_errors import ManifestError
from models.feed import NetworkInput
from models.formats.catalogue import NetworkFormat, format_for, inside_package
from models.formats.signature import check_signature
from models.formats.torchscript import load_torchscript

if TYPE_CHECKING:
    import torch
    from torch import nn

    from models.package import ModelPackage


BUNDLE_METADATA = Path("configs") / "metadata.json"
BUNDLE_TORCHSCRIPT = Path("models") / "model.ts"
_FLOAT32_NAMES = {"float32", "float", "torch.float32", "torch.float", "np.float32", "numpy.float32"}


def _metadata_field(metadata: Any, *keys: str) -> Any:
    value = metadata
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise ManifestError(
                f"bundle metadata: configs/metadata.json lacks {'.'.join(keys[: depth + 1])}"
            )
        value = value[key]
    return value


@format_for("monai_bundle")
class MonaiBundleFormat(NetworkFormat):
    """A MONAI bundle folder (model-zoo layout): metadata.json describes, model.ts runs.

    ``network_data_format`` of ``configs/metadata.json`` (MONAI Bundle Specification)
    is checked against the node's input and the manifest's outputs; the TorchScript
    ``models/model.ts`` is what runs, and what the manifest's sha256 covers.
    """

    required = frozenset({"bundle"})
    allowed = frozenset({"bundle"})

    def bundle_dir(self, package: ModelPackage) -> Path:
        return inside_package(package, str(package.manifest.network.bundle), "bundle")

    def network_file(self, package: ModelPackage) -> Path:
        return self.bundle_dir(package) / BUNDLE_TORCHSCRIPT

    def check(self, package: ModelPackage, feed: NetworkInput) -> None:
        bundle = self.bundle_dir(package)
        named = package.manifest.network.bundle
        if not bundle.is_dir():
            raise ManifestError(f"bundle folder {named!r} is missing")
        metadata_path = bundle / BUNDLE_METADATA
        if not metadata_path.is_file():
            raise ManifestError(f"bundle layout: {BUNDLE_METADATA} is missing in {named!r}")
        if not (bundle / BUNDLE_TORCHSCRIPT).is_file():
            raise ManifestError(
                f"bundle layout: {BUNDLE_TORCHSCRIPT} (TorchScript) is missing in {named!r}"
            )
        try:
            metadata = json.loads(metadata_path.read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"bundle metadata: cannot read {BUNDLE_METADATA}: {exc}") from exc
        image = ("network_data_format", "inputs", "image")
        pred = ("network_data_format", "outputs", "pred")
        dtype = _metadata_field(metadata, *image, "dtype")
        if str(dtype).lower() not in _FLOAT32_NAMES:
            raise ManifestError(
                f"input type: bundle metadata declares input dtype {dtype!r}, "
                "the node feeds float32"
            )
        spatial = _metadata_field(metadata, *image, "spatial_shape")
        if not isinstance(spatial, list):
            raise ManifestError(
                f"bundle metadata: network_data_format.inputs.image.spatial_shape {spatial!r} "
                "is not a list"
            )
        check_signature(
            package,
            feed,
            source="bundle metadata (network_data_format)",
            in_channels=_metadata_field(metadata, *image, "num_channels"),
            spatial=spatial,
            out_channels=_metadata_field(metadata, *pred, "num_channels"),
        )

    def build(self, package: ModelPackage, path: Path, device: torch.device) -> nn.Module:
        return load_torchscript(path, device)
