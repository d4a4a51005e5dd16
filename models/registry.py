"""Model package discovery: which packages the node can run, and why others are refused.

A package is a directory holding ``model.yaml`` beside its network file (and card):
weights for an in-repo architecture, a TorchScript or ONNX file, or a MONAI bundle
folder (``models.formats``). The shipped packages live in ``models/packages``; an
operator may add more in one extra directory. ``open_package`` checks one package
without running it; discovery never raises on a broken package: it records the
package and the reason in ``ModelRegistry.refused`` so the node can show it and
carry on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from models.formats import NetworkInput, check_fields, network_format
from models.manifest import ManifestError, ModelManifest, ModelTask
from workers.errors import AnalysisError
from workers.preprocess import CropOrPad, GeometricOperation, ResizeInplane, build_steps

MANIFEST_NAME = "model.yaml"

# What workers.infer feeds a network: one channel per input series (the primary, then
# each additional input), 2D slices' rows and columns padded up to a multiple of 16.
# 3D inputs are fed unpadded: sliding-window patches of network.patch_size, or the
# whole prepared volume for a classifier.
PADDED_MULTIPLE = 16


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
        """The file the network loads from and the sha256 covers: weights, TorchScript,
        ONNX, or a bundle's ``models/model.ts``."""
        return network_format(self.manifest.network.format).network_file(self)

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


def network_input(manifest: ModelManifest) -> NetworkInput:
    """What inference will feed this manifest's network (preprocessing already checked)."""
    spec = manifest.network
    if spec.spatial_dims == 3:
        return _volume_input(manifest)
    resize = [op for op in build_steps(manifest.preprocessing) if isinstance(op, ResizeInplane)]
    size = None
    if resize:
        rows, cols = resize[-1].size
        size = (
            -(-rows // PADDED_MULTIPLE) * PADDED_MULTIPLE,
            -(-cols // PADDED_MULTIPLE) * PADDED_MULTIPLE,
        )
    return NetworkInput(channels=manifest.input_channels, size=size, multiple=PADDED_MULTIPLE)


def _volume_input(manifest: ModelManifest) -> NetworkInput:
    """A 3D network's input: the patch for segmentation; for classification the size the
    last geometric step fixes, when it is a crop_or_pad fixing all three axes."""
    spec = manifest.network
    size: tuple[int, ...] | None = None
    if manifest.task is ModelTask.SEGMENTATION:
        if spec.patch_size is None:
            raise AnalysisError(
                "network.patch_size: a 3D segmentation network (spatial_dims 3) needs a "
                "sliding-window patch_size [slices, rows, columns]"
            )
        size = tuple(spec.patch_size)
    else:
        geometric = [
            op for op in build_steps(manifest.preprocessing) if isinstance(op, GeometricOperation)
        ]
        last = geometric[-1] if geometric else None
        if isinstance(last, CropOrPad) and None not in last.size:
            size = tuple(int(n) for n in last.size)  # type: ignore[arg-type]
    return NetworkInput(channels=manifest.input_channels, size=size, multiple=1, spatial_dims=3)


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
    try:
        feed = network_input(manifest)
    except AnalysisError as exc:
        raise ManifestError(str(exc)) from exc
    kind.check(package, feed)
    card = package.card_path
    if card is not None and not card.is_file():
        raise ManifestError(f"model card {manifest.card!r} is missing")
    return package
