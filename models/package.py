"""One usable model package: its folder and parsed manifest (``models.registry`` finds them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.formats import network_format
from models.manifest import ModelManifest


@dataclass
class ModelPackage:
    """One usable model package: its directory and parsed manifest."""

    path: Path
    manifest: ModelManifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def weights_path(self) -> Path:
        """The file the network loads from and the sha256 covers: weights, TorchScript,
        ONNX, or a bundle's ``models/model.ts``."""
        return network_format(self.manifest.network.format).network_file(self)

    @property
    def card_path(self) -> Path | None:
        """The model card, when the manifest names one."""
        return self.path / self.manifest.card if self.manifest.card else None
