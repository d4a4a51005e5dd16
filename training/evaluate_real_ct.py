"""Run the shipped demonstration models on the real CT images pydicom ships.

    python -m training.evaluate_real_ct [--write-cards]

The models were trained on synthetic phantoms only; this shows what they say about
real scanner images. Candidates are the CT Image Storage files with pixel data of at
least 64x64 found on disk in pydicom's own test files and in the pydicom-data package.
Only files already on disk are read: nothing is downloaded (pydicom's
``get_testdata_files`` may try to, so it is not used). Each image is loaded as a
one-slice series by the node's own loader (``workers.load.series.load_series``) and run
through ``workers.pipeline.run_model``, as the node would. The table is printed and, with
``--write-cards``, written into both model cards.
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
import torch
from pydicom.data.data_manager import DATA_ROOT, external_data_sources

from models.registry import ModelPackage, discover_packages
from training.phantom import LESION, LUNG
from training.training import replace_card_section
from workers.errors import SeriesNotAnalysable
from workers.infer import NetworkCache
from workers.load.series import load_series
from workers.pipeline import run_model

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MIN_MATRIX = 64
SEGMENTATION = "ct-lung-nodule-seg"
CLASSIFIER = "ct-nodule-classifier"


@dataclass
class RealCtResult:
    file: str
    source: str
    matrix: str
    pixel_mm: float
    body_part: str
    lung_fraction: float  # of the image's pixels
    lung_area_cm2: float
    nodule_area_cm2: float
    nodule_probability: float


def local_ct_files() -> list[tuple[str, Path]]:
    """(source, path) of single-frame CT images on disk, without any download."""
    candidates: list[tuple[str, Path]] = [
        ("pydicom", Path(p)) for p in (Path(DATA_ROOT) / "test_files").rglob("*") if p.is_file()
    ]
    for library, store in external_data_sources().items():
        candidates += [(library, Path(p)) for p in store.get_paths("**/*")]
    found = []
    for source, path in sorted(candidates, key=lambda item: item[1].name):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM, or too broken to read: not a candidate
            continue
        if (
            header.get("Modality") == "CT"
            and header.get("SOPClassUID") == CT_IMAGE_STORAGE
            and int(header.get("Rows") or 0) >= MIN_MATRIX
            and int(header.get("Columns") or 0) >= MIN_MATRIX
            and int(header.get("NumberOfFrames") or 1) == 1
            and os.path.getsize(path) > 0
        ):
            found.append((source, path))
    return found


def evaluate(seg: ModelPackage, cls: ModelPackage) -> list[RealCtResult]:
    device = torch.device("cpu")
    cache = NetworkCache()
    results = []
    for source, path in local_ct_files():
        try:
            volume = load_series([path])
        except SeriesNotAnalysable as exc:  # e.g. a codec missing: say so, go on
            print(f"skip {path.name}: {exc}")
            continue
        dataset = volume.datasets[0]
        labels = run_model(seg, volume, device, cache).labels
        probability = run_model(cls, volume, device, cache).probabilities["nodule"]
        assert labels is not None
        pixel_cm2 = volume.spacing[1] * volume.spacing[2] / 100.0
        results.append(
            RealCtResult(
                file=path.name,
                source=source,
                matrix=f"{volume.shape[1]}x{volume.shape[2]}",
                pixel_mm=round(volume.spacing[1], 3),
                body_part=str(dataset.get("BodyPartExamined") or "-"),
                lung_fraction=round(float((labels == LUNG).mean()), 4),
                lung_area_cm2=round(float((labels == LUNG).sum()) * pixel_cm2, 1),
                nodule_area_cm2=round(float((labels == LESION).sum()) * pixel_cm2, 2),
                nodule_probability=round(probability, 4),
            )
        )
    return results


def markdown_table(results: list[RealCtResult]) -> str:
    lines = [
        "| File (source) | Matrix, pixel | Body part tag | Lung fraction | Lung area | "
        "Nodule area | Nodule probability |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| `{r.file}` ({r.source}) | {r.matrix}, {r.pixel_mm} mm | {r.body_part} | "
            f"{r.lung_fraction:.3f} | {r.lung_area_cm2} cm² | {r.nodule_area_cm2} cm² | "
            f"{r.nodule_probability:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-cards", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    registry = discover_packages()
    seg, cls = registry.get(SEGMENTATION), registry.get(CLASSIFIER)
    results = evaluate(seg, cls)
    table = markdown_table(results)
    print(table)
    if args.write_cards:
        for package in (seg, cls):
            if package.card_path is not None:
                replace_card_section(package.card_path, "real-ct", table)


if __name__ == "__main__":
    main()
