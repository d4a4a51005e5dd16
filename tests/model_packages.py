"""Model packages written the way a site would, for tests: model.yaml, network file, sha256.

Networks are built by the tests with fixed weights, so every expected output is known.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from workers.volume import Volume

CPU = torch.device("cpu")
CODE = {"value": "1", "scheme": "99TEST", "meaning": "test"}
SEGMENT = {"label": 1, "name": "Bright", "category": CODE, "type": CODE}


def volume_of(voxels: np.ndarray, spacing=(2.0, 1.0, 1.0)) -> Volume:  # noqa: ANN001
    return Volume(
        voxels=np.asarray(voxels, dtype=np.float32),
        spacing=spacing,
        origin=np.zeros(3),
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        slice_direction=np.array([0.0, 0.0, 1.0]),
        datasets=[],
    )


def write_package(
    folder: Path,
    network: nn.Module | None,
    *,
    task: str = "segmentation",
    roles: tuple[str, ...] = (),
    preprocessing: list[dict] | None = None,
    **spec: object,
) -> Path:
    """A package in ``folder``: the network as TorchScript (or the file ``spec`` names,
    already there), a model.yaml whose ``network`` is ``spec`` plus the file's sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"format": "torchscript", **spec}
    if "bundle" not in spec:
        spec.setdefault("weights", "network.ts")
    if network is not None:
        torch.jit.save(torch.jit.script(network.eval()), str(folder / "network.ts"))
    file = folder / str(spec.get("weights", "bundle/models/model.ts"))
    spec["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    manifest = {
        "name": folder.name,
        "version": "1",
        "title": f"test network {folder.name}",
        "task": task,
        "accepts": {"modality": ["CT"]},
        "additional_inputs": [
            {"role": role, "accepts": {"modality": ["PT"]}, "registration": "none"}
            for role in roles
        ],
        "preprocessing": preprocessing or [],
        "network": spec,
        "outputs": (
            {"segments": [SEGMENT]}
            if task == "segmentation"
            else {"classes": [{"name": "bright", "finding": CODE}]}
        ),
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def pointwise3d(in_channels: int = 1) -> nn.Conv3d:
    """Background logit 0.5, foreground logit ch0 - ch1 - ...: bright voxels (> 0.5)."""
    conv = nn.Conv3d(in_channels, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 0] = 1.0
        conv.weight[1, 1:] = -1.0
        conv.bias.copy_(torch.tensor([0.5, 0.0]))
    return conv


def random_volume(shape: tuple[int, ...], seed: int = 7) -> np.ndarray:
    # Values on a grid of 1/64 away from 0.5: no label ties.
    values = np.random.default_rng(seed).integers(0, 64, shape).astype(np.float32) / 64 + 1 / 128
    return values


def onnx_export3d(network: nn.Module, path: Path, rank: int) -> None:
    shape = (1, 1, 8, 16, 16) if rank == 5 else (1, 1, 16, 16)
    names = ["batch", "channels", "slices", "rows", "columns"]
    names = names[:2] + names[7 - rank :]
    axes = {i: n for i, n in enumerate(names) if n != "channels"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            network,
            (torch.zeros(shape),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
        )
