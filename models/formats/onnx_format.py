"""The ``onnx`` format: an ONNX file run by onnxruntime.

Its declared input and output are read from the graph when the package is discovered
(onnxruntime is imported then, and only for an ONNX package) and again when it is
loaded. torch is imported when the network is loaded, not before.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.contract_errors import ManifestError, ModelUnavailable
from models.feed import NetworkInput, network_input
from models.formats.catalogue import NetworkFormat, format_for, inside_package
from models.formats.signature import check_signature
from models.manifest import ModelTask

if TYPE_CHECKING:
    import onnxruntime
    import torch
    from torch import nn

    from models.package import ModelPackage


def _onnx_session(
    path: Path, providers: list[str], threads: int = 1, optimise: bool = True
) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    if not optimise:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)


def _onnx_providers(device: torch.device) -> list[str]:
    """CUDA first when the network runs on a GPU and onnxruntime was built with it."""
    import onnxruntime
    import torch

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
        import torch

        from models.formats.onnx_network import OnnxNetwork

        try:
            # One thread budget per worker process: torch's, which the operator already sets.
            threads = max(1, torch.get_num_threads())
            session = _onnx_session(path, _onnx_providers(device), threads)
        except Exception as exc:  # onnxruntime raises its own unexported exception types
            raise ModelUnavailable(f"{path.name} cannot be opened as ONNX: {exc}") from exc
        try:
            _check_onnx_session(package, network_input(package.manifest), session)
        except ManifestError as exc:
            raise ModelUnavailable(str(exc)) from exc
        return OnnxNetwork(session)
