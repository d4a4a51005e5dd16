"""Network formats a model package may declare, each checked and loaded its own way.

``network.format`` in ``model.yaml`` names an entry of ``FORMATS``. A format says
which manifest fields it takes, which file its ``sha256`` covers, what can be checked
at discovery without running the network (files present, the declared input and
output against what the preprocessing feeds and the manifest decodes), and how the
network is built on a device. Every format returns something called like an
``nn.Module`` on a (B, C, H, W) float32 tensor, or (B, C, D, H, W) for a network
whose manifest says ``spatial_dims: 3``. A new format is one more class
registered with ``@format_for``; nothing else changes.

Shipped formats: ``module`` (an architecture of ``models.architectures`` plus a
state dict), ``torchscript``, ``onnx`` (run with onnxruntime) and ``monai_bundle``
(a MONAI model-zoo bundle folder; its ``models/model.ts`` is run as TorchScript).
"""

from __future__ import annotations

import json
import pickle
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from models.architectures import ARCHITECTURES, SPATIAL_DIMS
from models.manifest import ManifestError, ModelTask
from workers.errors import ModelUnavailable

if TYPE_CHECKING:
    import onnxruntime

    from models.registry import ModelPackage


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


# ---------------------------------------------------------------- signature checks

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


# ---------------------------------------------------------------- module


@format_for("module")
class ModuleFormat(NetworkFormat):
    """An architecture of ``models.architectures`` built with ``parameters``, plus a state dict."""

    required = frozenset({"architecture", "weights"})
    allowed = frozenset({"architecture", "parameters", "weights"})

    def network_file(self, package: ModelPackage) -> Path:
        return inside_package(package, str(package.manifest.network.weights), "weights")

    def check(self, package: ModelPackage, feed: NetworkInput) -> None:
        spec = package.manifest.network
        if spec.architecture not in ARCHITECTURES:
            raise ManifestError(
                f"unknown architecture {spec.architecture!r} "
                f"(known: {', '.join(sorted(ARCHITECTURES))})"
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


# ---------------------------------------------------------------- torchscript


def _load_torchscript(path: Path, device: torch.device) -> nn.Module:
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
        return _load_torchscript(path, device)


# ---------------------------------------------------------------- onnx


class OnnxNetwork(nn.Module):
    """An onnxruntime session behind ``nn.Module``'s call, so inference runs it unchanged.

    A (B, C, H, W) or (B, C, D, H, W) tensor goes in as float32 numpy, the first output
    comes back as a tensor on the input's device.
    """

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        (out,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return f"providers={self.session.get_providers()}"


def _onnx_session(
    path: Path, providers: list[str], optimise: bool = True
) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread budget per worker process: torch's, which the operator already sets.
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    if not optimise:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)


def _onnx_providers(device: torch.device) -> list[str]:
    """CUDA first when the network runs on a GPU and onnxruntime was built with it."""
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if (
        device.type == "cuda"
        and torch.cuda.is_available()
        and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    ):
        providers.insert(0, "CUDAExecutionProvider")
    return providers


def _check_onnx_session(
    package: ModelPackage, feed: NetworkInput, session: onnxruntime.InferenceSession
) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    name = package.manifest.network.weights
    if len(inputs) != 1:
        raise ManifestError(
            f"input count: ONNX model {name} takes {len(inputs)} inputs "
            f"({', '.join(i.name for i in inputs)}), the node feeds one image tensor"
        )
    (image,) = inputs
    if image.type != "tensor(float)":
        raise ManifestError(
            f"input type: ONNX input {image.name!r} is {image.type}, the node feeds float32"
        )
    shape = list(image.shape)
    if len(shape) != 2 + feed.spatial_dims:
        raise ManifestError(
            f"input rank: ONNX input {image.name!r} has shape {shape}, the node feeds "
            f"rank {2 + feed.spatial_dims} (batch, channels, {', '.join(feed.axes)}) "
            f"as network.spatial_dims {feed.spatial_dims} says"
        )
    output_shape = list(outputs[0].shape)
    rank = 2 + feed.spatial_dims if package.manifest.task is ModelTask.SEGMENTATION else 2
    if len(output_shape) != rank:
        raise ManifestError(
            f"output rank: ONNX output {outputs[0].name!r} has shape {output_shape}, a "
            f"{package.manifest.task.value} model gives rank {rank}"
        )
    check_signature(
        package,
        feed,
        source=f"ONNX input {image.name!r}",
        in_channels=shape[1],
        spatial=shape[2:],
        out_channels=output_shape[1],
    )


@format_for("onnx")
class OnnxFormat(NetworkFormat):
    """An ONNX file run by onnxruntime; its declared input and output are checked on opening."""

    required = frozenset({"weights"})
    allowed = frozenset({"weights"})

    def network_file(self, package: ModelPackage) -> Path:
        return inside_package(package, str(package.manifest.network.weights), "weights")

    def check(self, package: ModelPackage, feed: NetworkInput) -> None:
        super().check(package, feed)
        try:
            session = _onnx_session(
                self.network_file(package), ["CPUExecutionProvider"], optimise=False
            )
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise ManifestError(
                f"{package.manifest.network.weights} cannot be opened as ONNX: {exc}"
            ) from exc
        _check_onnx_session(package, feed, session)

    def build(self, package: ModelPackage, path: Path, device: torch.device) -> nn.Module:
        from models.registry import network_input

        try:
            session = _onnx_session(path, _onnx_providers(device))
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise ModelUnavailable(f"{path.name} cannot be opened as ONNX: {exc}") from exc
        try:
            _check_onnx_session(package, network_input(package.manifest), session)
        except ManifestError as exc:
            raise ModelUnavailable(str(exc)) from exc
        return OnnxNetwork(session)


# ---------------------------------------------------------------- monai bundle

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
        return _load_torchscript(path, device)
