"""The network architectures a model package may name, and their builders.

A manifest's ``network.architecture`` is a key of ``ARCHITECTURES``; its
``network.parameters`` are the builder's keyword arguments. Whether each takes 2D
slices (N, C, H, W) or 3D volumes (N, C, D, H, W), which a manifest's
``network.spatial_dims`` must match, is ``models.formats.module_format.SPATIAL_DIMS``
(checked at discovery, without torch). All are small enough to run on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions, each with batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet2d(nn.Module):
    """A 2D U-Net: ``depth`` poolings, channels doubling from ``width`` at each level.

    Returns per-pixel logits (N, out_channels, H, W); H and W must be divisible by
    2**depth.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 16, depth: int = 3):
        super().__init__()
        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        channels = in_channels
        for w in widths[:-1]:
            self.down.append(_conv_block(channels, w))
            channels = w
        self.bottom = _conv_block(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for deep, shallow in zip(widths[:0:-1], widths[-2::-1], strict=True):
            self.up.append(nn.ConvTranspose2d(deep, shallow, 2, stride=2))
            self.merge.append(_conv_block(2 * shallow, shallow))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


class SliceClassifier(nn.Module):
    """A 2D CNN that scores each slice for each class: logits (N, classes).

    Four stages halve the resolution; global max and mean pooling are concatenated so
    a small finding anywhere in the slice can drive the score.
    """

    def __init__(self, in_channels: int, classes: int, width: int = 16):
        super().__init__()
        stages = []
        channels = in_channels
        for level in range(4):
            w = width * 2**level
            stages.append(_conv_block(channels, w))
            stages.append(nn.MaxPool2d(2))
            channels = w
        self.features = nn.Sequential(*stages[:-1])  # no pooling after the last stage
        self.head = nn.Linear(2 * channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        pooled = torch.cat([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)
        return self.head(pooled)


def _conv_block3d(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3x3 convolutions, each with instance norm and ReLU (3D batches are small)."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.ReLU(inplace=True),
        nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.InstanceNorm3d(out_channels, affine=True),
        nn.ReLU(inplace=True),
    )


class UNet3d(nn.Module):
    """A 3D U-Net: ``depth`` poolings, channels doubling from ``width`` at each level.

    Returns per-voxel logits (N, out_channels, D, H, W); D, H and W must be divisible
    by 2**depth (a sliding-window patch size is chosen so).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 8, depth: int = 2):
        super().__init__()
        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        channels = in_channels
        for w in widths[:-1]:
            self.down.append(_conv_block3d(channels, w))
            channels = w
        self.bottom = _conv_block3d(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for deep, shallow in zip(widths[:0:-1], widths[-2::-1], strict=True):
            self.up.append(nn.ConvTranspose3d(deep, shallow, 2, stride=2))
            self.merge.append(_conv_block3d(2 * shallow, shallow))
        self.head = nn.Conv3d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool3d(x, 2)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def unet2d(
    in_channels: int = 1, out_channels: int = 2, width: int = 16, depth: int = 3
) -> nn.Module:
    return UNet2d(in_channels, out_channels, width, depth)


def unet3d(
    in_channels: int = 1, out_channels: int = 2, width: int = 8, depth: int = 2
) -> nn.Module:
    return UNet3d(in_channels, out_channels, width, depth)


def cnn2d_classifier(in_channels: int = 1, classes: int = 1, width: int = 16) -> nn.Module:
    return SliceClassifier(in_channels, classes, width)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet2d": unet2d,
    "cnn2d_classifier": cnn2d_classifier,
    "unet3d": unet3d,
}
