"""The catalogue of network formats: what a format is, and the registry ``network.format`` names.

A format says which manifest fields it takes, which file its ``sha256`` covers, what
can be checked at discovery without running the network, and how the network is built
on a device. Nothing here imports torch: a format's ``build`` imports what it runs
with, so discovery and the processes that only route series stay free of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, ClassVar

from models.contract_errors import ManifestError
from models.feed import NetworkInput

if TYPE_CHECKING:
    import torch
    from torch import nn

    from models.package import ModelPackage


class NetworkFormat(ABC):
    """One way of storing a network: its manifest fields, checks and loader."""

    name: ClassVar[str]
    required: ClassVar[frozenset[str]]
    """Optional ``network`` fields this format needs."""
    allowed: ClassVar[frozenset[str]]
    """Optional ``network`` fields this format takes (``required`` included)."""

    @abstractmethod
    def network_file(self, package: ModelPackage) -> Path:
        """The file the network is loaded from, which the manifest's sha256 covers."""

    def check(self, package: ModelPackage, feed: NetworkInput) -> None:
        """Refuse, with ManifestError naming the rule, what can be seen without running."""
        file = self.network_file(package)
        if not file.is_file():
            raise ManifestError(f"network file {_relative(package, file)!r} is missing")

    @abstractmethod
    def build(self, package: ModelPackage, path: Path, device: torch.device) -> nn.Module:
        """The network from ``path`` (digest already verified); ModelUnavailable if it fails."""


FORMATS: dict[str, NetworkFormat] = {}


def format_for(name: str) -> Callable[[type[NetworkFormat]], type[NetworkFormat]]:
    """Register a format class under ``name``, as ``network.format`` names it."""

    def register(kind: type[NetworkFormat]) -> type[NetworkFormat]:
        if name in FORMATS:
            raise ValueError(f"network format {name!r} is registered twice")
        kind.name = name
        FORMATS[name] = kind()
        return kind

    return register


def network_format(name: str) -> NetworkFormat:
    """The format ``network.format`` names; ManifestError for an unknown one."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ManifestError(
            f"network.format {name!r} is unknown (known: {', '.join(sorted(FORMATS))})"
        ) from None


def check_fields(format_name: str, given: set[str]) -> None:
    """Refuse a manifest that lacks a field its format needs, or sets one it does not take."""
    kind = network_format(format_name)
    missing = sorted(kind.required - given)
    if missing:
        raise ManifestError(f"network.format {format_name} requires network.{missing[0]}")
    extra = sorted(given - kind.allowed)
    if extra:
        takers = sorted(n for n, f in FORMATS.items() if extra[0] in f.allowed) or ["no format"]
        raise ManifestError(
            f"network.format {format_name} does not take network.{extra[0]} "
            f"(only {', '.join(takers)})"
        )


def inside_package(package: ModelPackage, relative: str, field: str) -> Path:
    """``relative`` in the package folder; an absolute path or one climbing out is refused.

    Checked on the written path, not the resolved one, so a site may still link a large
    file into the package.
    """
    written = PurePosixPath(relative.replace("\\", "/"))
    if written.is_absolute() or ".." in written.parts:
        raise ManifestError(f"network.{field} {relative!r} must lie inside the package folder")
    return package.path / written


def _relative(package: ModelPackage, path: Path) -> str:
    try:
        return str(path.relative_to(package.path))
    except ValueError:
        return str(path)
