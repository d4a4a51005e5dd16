"""What inference feeds a network: the one place that says so.

``workers.infer`` builds its batches to this description and discovery
(``models.registry``, ``models.formats``) checks a package's declared input against
it: one channel per input series (the primary, then each additional input), 2D
slices' rows and columns padded up to a multiple of ``PADDED_MULTIPLE``; 3D inputs
fed unpadded (sliding-window patches of ``network.patch_size``, or the whole prepared
volume for a classifier).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.contract_errors import ManifestError
from models.manifest import ModelManifest, ModelTask
from models.steps import ResizeInplaneStep, StepRole, check_steps

# U-Nets halve the grid several times; padding 2D slices to this multiple lets any
# size through.
PADDED_MULTIPLE = 16


@dataclass(frozen=True)
class NetworkInput:
    """What inference feeds a network: (B, channels, *spatial) float32.

    ``spatial_dims`` 2: slices, ``size`` is the in-plane (rows, columns) after
    preprocessing and padding, or None when it follows each series' own size (no
    ``resize_inplane`` step); either way rows and columns are multiples of
    ``multiple``. ``spatial_dims`` 3: volumes, ``size`` is (slices, rows, columns):
    the sliding window's patch for segmentation, the fixed prepared size (or None)
    for classification; ``multiple`` is 1 (3D inputs are not padded).
    """

    channels: int
    size: tuple[int, ...] | None
    multiple: int
    spatial_dims: int = 2

    @property
    def axes(self) -> tuple[str, ...]:
        """The names of the spatial axes fed."""
        return ("slices", "rows", "columns")[-self.spatial_dims :]


def network_input(manifest: ModelManifest) -> NetworkInput:
    """What inference will feed this manifest's network.

    ManifestError when the preprocessing breaks the step contract
    (``models.steps.check_steps``) or a 3D segmentation network has no patch size.
    """
    if manifest.network.spatial_dims == 3:
        return _volume_input(manifest)
    resizes = [s for s in check_steps(manifest.preprocessing) if isinstance(s, ResizeInplaneStep)]
    size = None
    if resizes:
        _, rows, columns = resizes[-1].fixed_size
        size = (_padded(rows), _padded(columns))
    return NetworkInput(channels=manifest.input_channels, size=size, multiple=PADDED_MULTIPLE)


def _padded(length: int | None) -> int:
    assert length is not None  # resize_inplane fixes rows and columns
    return -(-length // PADDED_MULTIPLE) * PADDED_MULTIPLE


def _volume_input(manifest: ModelManifest) -> NetworkInput:
    """A 3D network's input: the patch for segmentation; for classification the size the
    last geometric step fixes, when it fixes all three axes (a crop_or_pad)."""
    spec = manifest.network
    size: tuple[int, ...] | None = None
    if manifest.task is ModelTask.SEGMENTATION:
        if spec.patch_size is None:
            raise ManifestError(
                "network.patch_size: a 3D segmentation network (spatial_dims 3) needs a "
                "sliding-window patch_size [slices, rows, columns]"
            )
        size = tuple(spec.patch_size)
    else:
        steps = check_steps(manifest.preprocessing)
        geometric = [s for s in steps if s.role is StepRole.GEOMETRIC]
        fixed = geometric[-1].fixed_size if geometric else None
        if fixed is not None and None not in fixed:
            size = tuple(int(n) for n in fixed)  # type: ignore[arg-type]
    return NetworkInput(channels=manifest.input_channels, size=size, multiple=1, spatial_dims=3)
