"""Model package discovery: which packages the node can run, and why others are refused.

A package is a directory holding ``model.yaml`` beside its network file (and card):
weights for an in-repo architecture, a TorchScript or ONNX file, or a MONAI bundle
folder (``models.formats``); what its preprocessing feeds the network is
``models.feed``'s to say. The shipped packages live in ``models/packages``; an
operator may add more in one extra directory. ``open_package`` checks one package
without running it; discovery never raises on a broken package: it records the
package and the reason in ``ModelRegistry.refused`` so the node can show it and
carry on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.contract_errors import ManifestError
from models.feed import network_input
from models.formats import check_fields, network_format
from models.manifest import ModelManifest
from models.package import ModelPackage

MANIFEST_NAME = "model.yaml"


def shipped_packages_dir() -> Path:
    """Where the packages that ship with ainode live."""
    return Path(__file__).parent / "packages"


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
            try:
                package = open_package(package_dir)
            except ManifestError as exc:
                registry.refused.append((package_dir, str(exc)))
                continue
            if package.name in registry.names:
                first = registry.get(package.name).path
                registry.refused.append(
                    (package_dir, f"duplicate model name {package.name!r}, already from {first}")
                )
            else:
                registry.packages.append(package)
    return registry


def open_package(path: Path) -> ModelPackage:
    """The package in folder ``path``, checked as far as it can be without running it.

    Checks the manifest's schema, that its network fields fit its format, the
    preprocessing steps, the format's own rules (files present; declared input and
    output channels and size against what the preprocessing feeds and the outputs
    need), and the card. The network file's digest is checked when it is loaded
    (``models.loader``). Raises ManifestError naming the rule that failed.
    """
    package_dir = Path(path)
    manifest = ModelManifest.from_file(package_dir / MANIFEST_NAME)
    package = ModelPackage(path=package_dir, manifest=manifest)
    spec = manifest.network
    kind = network_format(spec.format)
    check_fields(spec.format, spec.given_fields())
    kind.check(package, network_input(manifest))
    card = package.card_path
    if card is not None and not card.is_file():
        raise ManifestError(f"model card {manifest.card!r} is missing")
    return package
