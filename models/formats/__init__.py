"""Network formats a model package may declare, each checked and loaded its own way.

``network.format`` in ``model.yaml`` names an entry of ``FORMATS``. A format says
which manifest fields it takes, which file its ``sha256`` covers, what can be checked
at discovery without running the network (files present, the declared input and
output against what the preprocessing feeds and the manifest decodes), and how the
network is built on a device. Every format returns something called like an
``nn.Module`` on a (B, C, H, W) float32 tensor, or (B, C, D, H, W) for a network
whose manifest says ``spatial_dims: 3``. A new format is one more module whose class
is registered with ``@format_for``, imported here; nothing else changes.

Shipped formats: ``module`` (an architecture of ``models.architectures`` plus a
state dict), ``torchscript``, ``onnx`` (run with onnxruntime) and ``monai_bundle``
(a MONAI model-zoo bundle folder; its ``models/model.ts`` is run as TorchScript).
Importing this package registers them without importing torch: each imports what it
runs with when a network is built (``models.loader``).
"""

from models.formats import module_format, monai_bundle, onnx_format, torchscript
from models.formats.catalogue import (
    FORMATS,
    NetworkFormat,
    check_fields,
    format_for,
    inside_package,
    network_format,
)
from models.formats.signature import check_signature

__all__ = [
    "FORMATS",
    "NetworkFormat",
    "check_fields",
    "check_signature",
    "format_for",
    "inside_package",
    "module_format",
    "monai_bundle",
    "network_format",
    "onnx_format",
    "torchscript",
]
