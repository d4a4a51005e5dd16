"""What both demonstration models' training scripts share.

Data: synthetic phantoms (``training.phantom``) preprocessed by the very steps their
manifest declares (``workers.preprocessing``), kept as network-grid slices with soft
per-class targets. Then batches with crops and flips, an optimisation loop, metrics,
and the writing of a package's weights, sha256, metrics and model-card sections.
Each script keeps only what is particular to its task.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.loader import sha256_of
from models.manifest import ModelManifest, PreprocessStep
from training.phantom import LESION, Phantom, make_phantom, random_geometry
from workers.preprocessing import preprocess_array
from workers.volume import Volume

CLASSES = 3  # background, lung, lesion: the channel order of every target
# A slice counts as showing a nodule from this cross-section on (a disc ~5 mm across);
# thinner caps of a nodule are too ambiguous to call either way and are not trained on.
MIN_LESION_AREA_MM2 = 20.0
ABDOMEN_CHANCE = 0.15


def seed_everything(seed: int) -> None:
    """Fix every random source training uses, and keep to one CPU thread."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class SliceSet:
    """Network-grid training slices.

    ``images`` float32 (N, H, W) as preprocessed; ``targets`` uint8 (N, 3, H, W), the
    fraction (x255) of each network pixel that is background, lung, lesion in the
    source; ``pixel_area_mm2`` (N,) the source area one network pixel covers.
    """

    images: np.ndarray
    targets: np.ndarray
    pixel_area_mm2: np.ndarray

    def __len__(self) -> int:
        return self.images.shape[0]

    def lesion_area_mm2(self) -> np.ndarray:
        """Lesion area of each whole slice, in mm2."""
        fraction = self.targets[:, LESION].reshape(len(self), -1).sum(axis=1) / 255.0
        return fraction * self.pixel_area_mm2


def random_phantom(rng: np.random.Generator, slices: int, lesions: int) -> Phantom:
    """A phantom of random scanner geometry (see ``random_geometry``).

    Some are upper-abdomen volumes without lung (``ABDOMEN_CHANCE``), for training
    and for the held-out sets alike.
    """
    shape, spacing = random_geometry(rng, slices)
    return make_phantom(rng, shape, spacing, lesions, abdomen_chance=ABDOMEN_CHANCE)


def phantom_volume(phantom: Phantom) -> Volume:
    """A phantom as the pipeline's Volume: axial, identity directions, no DICOM headers."""
    return Volume(
        voxels=phantom.hu,
        spacing=phantom.spacing,
        origin=np.zeros(3),
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        slice_direction=np.array([0.0, 0.0, 1.0]),
        datasets=[],
    )


def phantom_slices(phantom: Phantom, steps: Sequence[PreprocessStep]) -> SliceSet:
    """A phantom as network-grid slices: its HU through ``steps``, its labels as fractions.

    Labels go through the geometric steps only (``resize_inplane``), one channel per
    class, so each target pixel holds the share of its area each class covers: the
    same thing bilinear upsampling of logits reconstructs at inference.
    """
    images = preprocess_array(phantom.hu, steps)
    geometric = [s for s in steps if s.step == "resize_inplane"]
    onehot = np.stack([phantom.labels == c for c in range(CLASSES)], axis=1).astype(np.float32)
    slices, _, rows, cols = onehot.shape
    fractions = preprocess_array(onehot.reshape(slices * CLASSES, rows, cols), geometric)
    fractions = fractions.reshape(slices, CLASSES, *fractions.shape[1:])
    targets = np.clip(np.rint(fractions * 255.0), 0, 255).astype(np.uint8)
    _, dy, dx = phantom.spacing
    area = dy * dx * (rows / images.shape[1]) * (cols / images.shape[2])
    return SliceSet(images, targets, np.full(slices, area, dtype=np.float32))


def generate_slices(
    seed: int,
    phantoms: int,
    steps: Sequence[PreprocessStep],
    slices_per_phantom: tuple[int, int] = (12, 24),
    lesion_counts: Sequence[int] = (0, 1, 2, 3),
) -> SliceSet:
    """Slices of ``phantoms`` random phantoms, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(phantoms):
        slices = int(rng.integers(slices_per_phantom[0], slices_per_phantom[1] + 1))
        lesions = int(rng.choice(lesion_counts))
        parts.append(phantom_slices(random_phantom(rng, slices, lesions), steps))
    return SliceSet(
        images=np.concatenate([p.images for p in parts]),
        targets=np.concatenate([p.targets for p in parts]),
        pixel_area_mm2=np.concatenate([p.pixel_area_mm2 for p in parts]),
    )


@dataclass
class Batch:
    images: torch.Tensor  # (B, 1, h, w)
    targets: torch.Tensor  # (B, 3, h, w) class fractions in [0, 1]
    pixel_area_mm2: torch.Tensor  # (B,)


def batches(
    data: SliceSet,
    rng: np.random.Generator,
    batch_size: int,
    crop: int | None,
    lesion_share: float,
) -> Iterator[Batch]:
    """Endless augmented batches; about ``lesion_share`` of slices show a lesion.

    Crops train a fully convolutional network at a fraction of the cost of whole
    slices; a slice with a lesion is cropped around it half the time. Flips and a
    small intensity jitter stand in for left-right anatomy and scanner calibration.
    """
    with_lesion = np.flatnonzero(data.lesion_area_mm2() >= MIN_LESION_AREA_MM2)
    without = np.flatnonzero(data.lesion_area_mm2() < MIN_LESION_AREA_MM2)
    _, height, width = data.images.shape
    size = crop or height
    while True:
        # An empty pool is stood in for by the other, so any slice set yields batches.
        share = lesion_share if with_lesion.size and without.size else float(bool(with_lesion.size))
        picks = np.where(
            rng.random(batch_size) < share,
            rng.choice(with_lesion if with_lesion.size else without, batch_size),
            rng.choice(without if without.size else with_lesion, batch_size),
        )
        images = np.empty((batch_size, 1, size, crop or width), dtype=np.float32)
        targets = np.empty((batch_size, CLASSES, size, crop or width), dtype=np.float32)
        for row, index in enumerate(picks):
            top, left = _crop_origin(data.targets[index, LESION], rng, crop)
            window = (slice(top, top + size), slice(left, left + (crop or width)))
            image = data.images[index][window]
            target = data.targets[index][(slice(None), *window)] / np.float32(255.0)
            if rng.random() < 0.5:
                image, target = image[:, ::-1], target[:, :, ::-1]
            jitter = np.float32(rng.uniform(0.95, 1.05))
            images[row, 0] = image * jitter + np.float32(rng.uniform(-0.02, 0.02))
            targets[row] = target
        yield Batch(
            torch.from_numpy(images),
            torch.from_numpy(targets),
            torch.from_numpy(data.pixel_area_mm2[picks]),
        )


def _crop_origin(lesion: np.ndarray, rng: np.random.Generator, crop: int | None) -> tuple[int, int]:
    height, width = lesion.shape
    if crop is None:
        return 0, 0
    rows, cols = np.nonzero(lesion)
    if rows.size and rng.random() < 0.5:
        pick = rng.integers(rows.size)
        centre = (
            rows[pick] + rng.integers(-crop // 4, crop // 4 + 1),
            cols[pick] + rng.integers(-crop // 4, crop // 4 + 1),
        )
        top, left = centre[0] - crop // 2, centre[1] - crop // 2
    else:
        top, left = rng.integers(0, height - crop + 1), rng.integers(0, width - crop + 1)
    return int(np.clip(top, 0, height - crop)), int(np.clip(left, 0, width - crop))


def fit(
    network: nn.Module,
    data: Iterator[Batch],
    loss_fn: Callable[[nn.Module, Batch], torch.Tensor],
    steps: int,
    learning_rate: float,
    log_every: int = 25,
) -> list[float]:
    """AdamW with a one-cycle schedule for ``steps`` steps; returns every step's loss."""
    network.train()
    optimiser = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=learning_rate, total_steps=steps, pct_start=0.15
    )
    losses = []
    for step in range(1, steps + 1):
        loss = loss_fn(network, next(data))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps):
            recent = np.mean(losses[-log_every:])
            print(f"step {step}/{steps} loss {recent:.4f}", flush=True)
    network.eval()
    return losses


def dice(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    """Dice of two boolean masks; None when both are empty (nothing to agree on)."""
    total = int(prediction.sum()) + int(truth.sum())
    if total == 0:
        return None
    return 2.0 * int((prediction & truth).sum()) / total


def roc_auc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney statistic, ties counted half)."""
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(positive, dtype=bool)
    pos, neg = s[p], s[~p]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUC needs both positive and negative cases")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


def save_package_weights(network: nn.Module, package_dir: Path) -> str:
    """Write ``weights.pt`` (float32 state dict) and pin its sha256 in ``model.yaml``."""
    manifest_path = package_dir / "model.yaml"
    manifest = ModelManifest.from_file(manifest_path)
    weights = package_dir / manifest.network.weights
    state = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype)
        for k, v in network.state_dict().items()
    }
    torch.save(state, weights)
    digest = sha256_of(weights)
    text = manifest_path.read_text()
    updated, count = re.subn(r"(?m)^(\s*sha256:\s*)\S+", rf'\g<1>"{digest}"', text)
    if count != 1:
        raise ValueError(f"{manifest_path}: expected one sha256 line, found {count}")
    manifest_path.write_text(updated)
    ModelManifest.from_file(manifest_path)  # still valid
    return digest


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def replace_card_section(card: Path, section: str, body: str) -> None:
    """Replace the text between ``<!-- section:start -->`` and ``<!-- section:end -->``.

    The model card's prose is written by hand; its figures come from the scripts that
    measure them, so the two cannot drift apart.
    """
    text = card.read_text()
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{card}: no {start} ... {end} section")
    card.write_text(pattern.sub(lambda _m: f"{start}\n{body.strip()}\n{end}", text))
