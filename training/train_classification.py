"""Train and evaluate the demonstration lung nodule classifier.

    python -m training.train_classification --out models/packages/ct-nodule-classifier

Trains the package's slice classifier on synthetic phantoms preprocessed exactly as
its manifest says (a slice is positive when it shows at least 20 mm2 of nodule),
writes ``weights.pt`` and its sha256 into ``model.yaml``, then scores held-out
phantoms from another seed through the node's own inference (series probability =
maximum over slices) and records AUC, sensitivity, specificity and accuracy in
``metrics.json`` and the model card. Between the two, the output bias is calibrated
on phantoms of a third seed (``calibration_shift``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.architectures import ARCHITECTURES
from models.manifest import ModelManifest
from models.registry import ModelPackage
from training.phantom import LESION
from training.training import (
    MIN_LESION_AREA_MM2,
    Batch,
    batches,
    fit,
    generate_slices,
    phantom_volume,
    random_phantom,
    replace_card_section,
    roc_auc,
    save_package_weights,
    seed_everything,
    write_json,
)
from workers.infer import NetworkCache
from workers.pipeline import run_model

TRAIN_SEED = 20240602
HELDOUT_SEED = 77000002
TRAIN_PHANTOMS = 90
HELDOUT_PHANTOMS = 60  # half with nodules requested, half without
CALIBRATION_SEED = 77000003
CALIBRATION_PHANTOMS = 40
STEPS = 450
BATCH = 16
# Whole slices, as at inference, so the mean-pooled features see the same field of view.
CROP: int | None = None
LEARNING_RATE = 3e-3
# Fewer positives than the crops of the segmentation model: a series score is the
# maximum over tens of slices, so a slice false-positive rate must be low.
LESION_SHARE = 0.3


def classification_loss(network: nn.Module, batch: Batch) -> torch.Tensor:
    """Binary cross-entropy on whether the crop shows a nodule.

    The label comes from the crop's own ground truth, so a nodule cut away by the crop
    is not asked for; crops showing only a sliver of nodule are left out.
    """
    area = batch.targets[:, LESION].sum(dim=(1, 2)) * batch.pixel_area_mm2
    positive = area >= MIN_LESION_AREA_MM2
    known = positive | (area < 1.0)
    logits = network(batch.images)[:, 0]
    losses = F.binary_cross_entropy_with_logits(logits, positive.float(), reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1)


def series_scores(package: ModelPackage, seed: int, phantoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Series probabilities from the node's own inference, and whether each has a nodule.

    Every other phantom has 1-3 nodules requested; ``has_lesion`` is the truth.
    """
    rng = np.random.default_rng(seed)
    cache = NetworkCache()
    device = torch.device("cpu")
    name = package.manifest.outputs.classes[0].name
    scores, truth = [], []
    for case in range(phantoms):
        slices = int(rng.integers(20, 41))
        lesions = int(rng.integers(1, 4)) if case % 2 == 0 else 0
        phantom = random_phantom(rng, slices, lesions)
        scores.append(
            run_model(package, phantom_volume(phantom), device, cache).probabilities[name]
        )
        truth.append(phantom.has_lesion)
    return np.asarray(scores), np.asarray(truth)


def calibration_shift(scores: np.ndarray, truth: np.ndarray) -> float:
    """The logit to subtract so that probability 0.5 is the best series cut.

    A series score is a maximum over tens of slices, so the slice-level 0.5 the network
    was trained towards sits too low for series. The cut maximising sensitivity +
    specificity on a calibration set (its own seed, neither training nor held-out) is
    moved to 0.5; among equally good cuts the middle one is taken.
    """
    logits = np.log(np.clip(scores, 1e-6, 1 - 1e-6) / np.clip(1 - scores, 1e-6, 1))
    values = np.unique(logits)
    cuts = np.concatenate([[values[0] - 1], (values[:-1] + values[1:]) / 2, [values[-1] + 1]])
    youden = [
        ((logits >= c) & truth).sum() / truth.sum() + ((logits < c) & ~truth).sum() / (~truth).sum()
        for c in cuts
    ]
    best = cuts[np.isclose(youden, max(youden))]
    return float(np.median(best))


def evaluate(package: ModelPackage, seed: int, phantoms: int) -> dict[str, object]:
    """Series-level discrimination on held-out phantoms at the manifest's threshold."""
    s, t = series_scores(package, seed, phantoms)
    threshold = package.manifest.outputs.classes[0].threshold
    called = s >= threshold
    return {
        "heldout_seed": seed,
        "heldout_series": phantoms,
        "series_with_nodule": int(t.sum()),
        "threshold": threshold,
        "auc": round(roc_auc(s, t), 4),
        "sensitivity": round(float((called & t).sum() / t.sum()), 4),
        "specificity": round(float((~called & ~t).sum() / (~t).sum()), 4),
        "accuracy": round(float((called == t).mean()), 4),
        "median_probability_with_nodule": round(float(np.median(s[t])), 4),
        "median_probability_without_nodule": round(float(np.median(s[~t])), 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("models/packages/ct-nodule-classifier"))
    parser.add_argument("--steps", type=int, default=STEPS)
    args = parser.parse_args(argv)

    seed_everything(TRAIN_SEED)
    manifest = ModelManifest.from_file(args.out / "model.yaml")
    began = time.perf_counter()
    data = generate_slices(TRAIN_SEED, TRAIN_PHANTOMS, manifest.preprocessing)
    print(f"{len(data)} training slices in {time.perf_counter() - began:.0f} s", flush=True)

    network = ARCHITECTURES[manifest.network.architecture](**manifest.network.parameters)
    stream = batches(data, np.random.default_rng(TRAIN_SEED), BATCH, CROP, LESION_SHARE)
    losses = fit(network, stream, classification_loss, args.steps, LEARNING_RATE)
    trained = time.perf_counter() - began
    save_package_weights(network, args.out)
    package = ModelPackage(args.out, ModelManifest.from_file(args.out / "model.yaml"))
    shift = calibration_shift(*series_scores(package, CALIBRATION_SEED, CALIBRATION_PHANTOMS))
    with torch.no_grad():
        network.head.bias -= shift
    digest = save_package_weights(network, args.out)

    package = ModelPackage(args.out, ModelManifest.from_file(args.out / "model.yaml"))
    metrics = evaluate(package, HELDOUT_SEED, HELDOUT_PHANTOMS)
    metrics.update(
        {
            "train_seed": TRAIN_SEED,
            "train_phantoms": TRAIN_PHANTOMS,
            "train_slices": len(data),
            "steps": args.steps,
            "batch": BATCH,
            "crop": CROP,
            "lesion_share": LESION_SHARE,
            "calibration_seed": CALIBRATION_SEED,
            "calibration_series": CALIBRATION_PHANTOMS,
            "calibration_logit_shift": round(shift, 4),
            "final_loss": round(float(np.mean(losses[-25:])), 4),
            "train_seconds": round(trained, 1),
            "parameters": sum(p.numel() for p in network.parameters()),
            "weights_sha256": digest,
        }
    )
    write_json(args.out / "metrics.json", metrics)
    replace_card_section(args.out / "MODEL_CARD.md", "metrics", _metrics_markdown(metrics))
    print(metrics, flush=True)


def _metrics_markdown(m: dict) -> str:
    return f"""
Held-out set: {m["heldout_series"]} phantom series from seed {m["heldout_seed"]} (never
seen in training), 20-40 slices each, random scanner geometry; every other series had
1-3 nodules requested ({m["series_with_nodule"]} ended up with one: a nodule needs lung,
and some volumes are upper abdomen). Scored through
the node's own inference path (`workers.pipeline.run_model`): series probability = maximum
over slices, called positive at probability >= {m["threshold"]}.

| Metric | Value |
|---|---|
| ROC AUC (series) | {m["auc"]:.3f} |
| Sensitivity | {m["sensitivity"]:.3f} |
| Specificity | {m["specificity"]:.3f} |
| Accuracy | {m["accuracy"]:.3f} |
| Median probability, series with a nodule | {m["median_probability_with_nodule"]:.3f} |
| Median probability, series without | {m["median_probability_without_nodule"]:.3f} |

Training: {m["train_slices"]} slices from {m["train_phantoms"]} phantoms (seed
{m["train_seed"]}), {m["steps"]} steps of batch {m["batch"]} ({_share(m)} showing a nodule) on
{_field(m)}, final loss {m["final_loss"]}, {m["train_seconds"]} s on one CPU thread;
{m["parameters"]:,} parameters. Calibration: output bias shifted by
{-m["calibration_logit_shift"]:+.3f} (logit) so that 0.5 is the best series cut on
{m["calibration_series"]} calibration series from seed {m["calibration_seed"]}.

Weights sha256: `{m["weights_sha256"]}`
"""


def _share(m: dict) -> str:
    return f"{round(100 * m['lesion_share'])}%"


def _field(m: dict) -> str:
    return "whole slices" if m["crop"] is None else f"{m['crop']}x{m['crop']} crops"


if __name__ == "__main__":
    main()
