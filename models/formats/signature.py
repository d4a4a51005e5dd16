"""Signature checks: a network's declared input and output against what the node feeds.

Used at discovery by every format that can read a declaration without running the
network (an architecture's parameters, an ONNX graph, a MONAI bundle's metadata).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.contract_errors import ManifestError
from models.feed import NetworkInput
from models.manifest import ModelTask

if TYPE_CHECKING:
    from models.package import ModelPackage

# MONAI's spatial_shape writes "16*n" for "any multiple of 16".
_MULTIPLE_OF = re.compile(r"\s*(\d+)\s*\*\s*n\s*")


def check_signature(
    package: ModelPackage,
    feed: NetworkInput,
    *,
    source: str,
    in_channels: object,
    spatial: Sequence[object] | None,
    out_channels: object,
) -> None:
    """Compare a declared input/output with what inference feeds and decodes.

    Dimensions that are not integers are symbolic (dynamic) and accepted, except a
    MONAI-style ``"k*n"`` (any multiple of k), which is checked against the padding.
    ``spatial`` None: the spatial size is not declared.
    """
    if isinstance(in_channels, int) and in_channels != feed.channels:
        raise ManifestError(
            f"input channels: {source} declares {in_channels} input channel(s), "
            f"the preprocessing produces {feed.channels}"
        )
    if spatial is None:
        spatial = (None,) * feed.spatial_dims
    if len(spatial) != feed.spatial_dims:
        fed_kind = "2D slices" if feed.spatial_dims == 2 else "3D volumes"
        raise ManifestError(
            f"input dimensions: {source} declares {len(spatial)} spatial dimension(s), "
            f"the node feeds {fed_kind} ({', '.join(feed.axes)}) "
            f"as network.spatial_dims says"
        )
    for axis, (declared, name) in enumerate(zip(spatial, feed.axes, strict=True)):
        fed = feed.size[axis] if feed.size is not None else None
        _check_axis(feed, source, name, declared, fed)
    expected = package.manifest.output_channels
    if isinstance(out_channels, int) and out_channels != expected:
        what = (
            f"background + {len(package.manifest.outputs.segments)} segment(s)"
            if package.manifest.task is ModelTask.SEGMENTATION
            else f"{len(package.manifest.outputs.classes)} class(es)"
        )
        raise ManifestError(
            f"output channels: {source} declares {out_channels} output channel(s), "
            f"the manifest's outputs need {expected} ({what})"
        )


def _check_axis(
    feed: NetworkInput, source: str, name: str, declared: object, fed: int | None
) -> None:
    """One declared spatial axis against the size fed on it (None: it varies per series)."""
    if isinstance(declared, int) and not isinstance(declared, bool):
        if fed is None:
            fixes = "resize_inplane" if feed.spatial_dims == 2 else "crop_or_pad"
            raise ManifestError(
                f"input size: {source} takes a fixed {declared} {name}, but the "
                f"preprocessing has no {fixes} step, so the size varies per series"
            )
        if declared != fed:
            how = (
                f"resize_inplane, padded to a multiple of {feed.multiple}"
                if feed.spatial_dims == 2
                else "network.patch_size or crop_or_pad"
            )
            raise ManifestError(
                f"input size: {source} takes {declared} {name}, the preprocessing "
                f"feeds {fed} ({how})"
            )
    elif isinstance(declared, str) and (match := _MULTIPLE_OF.fullmatch(declared)):
        step = int(match.group(1))
        if step > 0 and (fed if fed is not None else feed.multiple) % step:
            feeds = fed if fed is not None else f"any multiple of {feed.multiple}"
            raise ManifestError(
                f"input size: {source} takes {name} in multiples of {step}, the "
                f"preprocessing feeds {feeds}"
            )
