"""Model package discovery: which packages the node can run, and why others are refused.

A package is a directory holding ``model.yaml`` beside its weights (and card). The
shipped packages live in ``models/packages``; an operator may add more in one extra
directory. Discovery never raises on a broken package: it records the package and
the reason in ``ModelRegistry.refused`` so the node can show it and carry on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.architectures import ARCHITECTURES
from models.manifest import ManifestError, ModelManifest
from workers.errors import AnalysisError
from workers.preprocess import build_steps

MANIFEST_NAME = "model.yaml"


def shipped_packages_dir() -> Path:
    """Where the packages that ship with ainode live."""
    return Path(__file__).parent / "packages"


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
        return self.path / self.manifest.network.weights

    @property
    def card_path(self) -> Path | None:
        """The model card, when the manifest names one."""
        return self.path / self.manifest.card if self.manifest.card else None


@dataclass
class ModelRegistry:
    """The packages found, in discovery order, and those refused with their reasons."""

    packages: list[ModelPackage] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)

    def get(self, name: str) -> ModelPackage:
        """The package called ``name``; KeyError when there is none."""
        for package in self.packages:
            if package.name == name:
                return package
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [package.name for package in self.packages]


def discover_packages(extra_dir: Path | None = None) -> ModelRegistry:
    """Scan the shipped packages, then ``extra_dir``; the first of a name wins."""
    registry = ModelRegistry()
    roots = [shipped_packages_dir()]
    if extra_dir is not None:
        roots.append(Path(extra_dir))
    for root in roots:
        if not root.is_dir():
            if root != roots[0]:
                registry.refused.append((root, "model directory does not exist"))
            continue
        for manifest_path in sorted(root.glob(f"*/{MANIFEST_NAME}")):
            package_dir = manifest_path.parent
            package, reason = _open_package(package_dir)
            if package is None:
                registry.refused.append((package_dir, reason))
            elif package.name in registry.names:
                first = registry.get(package.name).path
                registry.refused.append(
                    (package_dir, f"duplicate model name {package.name!r}, already from {first}")
                )
            else:
                registry.packages.append(package)
    return registry


def _open_package(package_dir: Path) -> tuple[ModelPackage | None, str]:
    """The package in ``package_dir``, or None and the reason it cannot be used.

    Checks what can be checked without loading weights: the manifest's schema, the
    architecture name, the preprocessing steps, and that the weights and card exist.
    The weights' digest is checked when they are loaded (``models.loader``).
    """
    try:
        manifest = ModelManifest.from_file(package_dir / MANIFEST_NAME)
    except ManifestError as exc:
        return None, str(exc)
    package = ModelPackage(path=package_dir, manifest=manifest)
    network = manifest.network
    if network.architecture not in ARCHITECTURES:
        return None, (
            f"unknown architecture {network.architecture!r} "
            f"(known: {', '.join(sorted(ARCHITECTURES))})"
        )
    try:
        build_steps(manifest.preprocessing)
    except AnalysisError as exc:
        return None, str(exc)
    if not package.weights_path.is_file():
        return None, f"weights file {network.weights!r} is missing"
    card = package.card_path
    if card is not None and not card.is_file():
        return None, f"model card {manifest.card!r} is missing"
    return package, ""
