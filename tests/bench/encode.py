"""Benchmark: the node's SEG encoding beside a straightforward highdicom encoding.

A 500-slice 512x512 CT (headers only, as ``load_series`` hands them to the encoders:
neither encoder reads source pixels) with 10 segments, ellipsoids spread through the
volume. Each encoding runs in a fresh subprocess, twice: once for its seconds, and
once under tracemalloc for its peak memory, so neither figure disturbs the other.

- node binary: ``encode_segmentation`` from the uint8 label volume;
- highdicom binary: ``hd.seg.Segmentation`` with the source datasets and the full
  (slices, rows, columns, segments) boolean array, default options (BINARY, empty
  frames omitted, Explicit VR Little Endian);
- node fractional: ``encode_segmentation`` from float32 probabilities
  (segments, slices, rows, columns), as ``ModelOutput`` holds them;
- highdicom fractional: ``hd.seg.Segmentation`` FRACTIONAL from the same
  probabilities as a float32 (slices, rows, columns, segments) array.

Inputs (datasets, label volume, boolean or float arrays) are built before the clock
starts and are not counted. Peak memory is tracemalloc's peak during the call less
what was traced before it (numpy buffers are traced). Prints a table; asserts
nothing.

    .venv/bin/python tests/bench/encode.py [--slices 500] [--segments 10] [--no-fractional]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.manifest import ModelManifest  # noqa: E402
from tests.factories import LESION, MASS, fake_manifest, make_ct_series  # noqa: E402
from workers.encode.codes import ALGORITHM_FAMILY, coded  # noqa: E402
from workers.encode.seg import encode_segmentation  # noqa: E402
from workers.volume import Volume  # noqa: E402

MATRIX = 512
SPACING = (1.0, 0.7, 0.7)
CASES = ("node-binary", "highdicom-binary", "node-fractional", "highdicom-fractional")
NETWORK = {"architecture": "bench.none", "weights": "none.pt", "sha256": "0" * 64}


def manifest(segments: int, segmentation_type: str) -> ModelManifest:
    """Segment ``i`` has label value ``i``."""
    return fake_manifest(
        "bench-encode",
        "segmentation",
        version="1",
        title="Encoding benchmark",
        network=NETWORK,
        segmentation_type=segmentation_type,
        segments=[
            {"label": i, "name": f"Blob {i}", "category": LESION, "type": MASS}
            for i in range(1, segments + 1)
        ],
    )


def ct_volume(slices: int) -> Volume:
    """CT headers of a ``slices`` x 512 x 512 series; the voxels are never read."""
    datasets = make_ct_series(np.zeros((slices, 2, 2)), SPACING)
    for ds in datasets:
        ds.Rows = ds.Columns = MATRIX
        del ds.PixelData
    return Volume(
        # np.zeros leaves the pages unmapped until written: no memory for unread voxels.
        voxels=np.zeros((slices, MATRIX, MATRIX), dtype=np.float32),
        spacing=SPACING,
        origin=np.zeros(3),
        row_direction=np.array([1.0, 0.0, 0.0]),
        column_direction=np.array([0.0, 1.0, 0.0]),
        slice_direction=np.array([0.0, 0.0, 1.0]),
        datasets=datasets,
    )


def blobs(slices: int, segments: int) -> list[tuple[np.ndarray, tuple[slice, ...]]]:
    """Per segment, a normalised ellipsoid distance (1 on its surface) in its box.

    Centres step evenly through the slices and alternate across the matrix; radii
    about 20 slices and 40-60 pixels, so the blobs do not touch.
    """
    result = []
    for index in range(segments):
        centre = (
            (index + 0.5) * slices / segments,
            MATRIX * (0.3 + 0.4 * (index % 2)),
            MATRIX * (0.25 + 0.25 * (index % 3)),
        )
        radii = (min(20.0, slices / segments / 1.6), 40.0 + 2 * index, 60.0 - 2 * index)
        # The box reaches 1.5 radii: the probability falls to 0 there.
        box = tuple(
            slice(max(0, int(c - 1.5 * r)), min(n, int(c + 1.5 * r) + 1))
            for c, r, n in zip(centre, radii, (slices, MATRIX, MATRIX), strict=True)
        )
        z, y, x = np.ogrid[box]
        distance = np.sqrt(
            ((z - centre[0]) / radii[0]) ** 2
            + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2
        ).astype(np.float32)
        result.append((distance, box))
    return result


def label_volume(slices: int, segments: int) -> np.ndarray:
    labels = np.zeros((slices, MATRIX, MATRIX), dtype=np.uint8)
    for index, (distance, box) in enumerate(blobs(slices, segments)):
        labels[box][distance < 1.0] = index + 1
    return labels


def probability(distance: np.ndarray) -> np.ndarray:
    """1 inside half the radius, falling linearly to 0 at 1.5 radii (0.5 on the surface)."""
    return np.clip(1.5 - distance, 0.0, 1.0)


def probabilities_by_segment(slices: int, segments: int) -> np.ndarray:
    """float32 (segments, slices, rows, columns), as ``ModelOutput`` holds them."""
    result = np.zeros((segments, slices, MATRIX, MATRIX), dtype=np.float32)
    for index, (distance, box) in enumerate(blobs(slices, segments)):
        result[(index, *box)] = probability(distance)
    return result


def probabilities_stacked(slices: int, segments: int) -> np.ndarray:
    """float32 (slices, rows, columns, segments), as highdicom takes them."""
    result = np.zeros((slices, MATRIX, MATRIX, segments), dtype=np.float32)
    for index, (distance, box) in enumerate(blobs(slices, segments)):
        result[(*box, index)] = probability(distance)
    return result


Encoding = Callable[[], Dataset]


def highdicom_call(volume: Volume, spec: ModelManifest, array: np.ndarray, kind: str) -> Encoding:
    """A highdicom encoding as its documentation shows it, with default options."""
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.name,
            segmented_property_category=coded(segment.category),
            segmented_property_type=coded(segment.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=spec.title, family=ALGORITHM_FAMILY, version="1"
            ),
        )
        for number, segment in enumerate(spec.outputs.segments, start=1)
    ]
    return lambda: hd.seg.Segmentation(
        source_images=volume.datasets,
        pixel_array=array,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=1001,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="bench",
        manufacturer_model_name="bench",
        software_versions="1",
        device_serial_number="1",
    )


def prepare(case: str, slices: int, segments: int) -> Encoding:
    """Build the inputs of ``case``; returns the call to measure."""
    volume = ct_volume(slices)
    if case == "node-binary":
        spec = manifest(segments, "binary")
        labels = label_volume(slices, segments)
        return lambda: encode_segmentation(volume, labels, spec, "1.2.826.0.1.3", "1.2.826.0.1.4")
    if case == "highdicom-binary":
        labels = label_volume(slices, segments)
        stacked = np.stack([labels == i for i in range(1, segments + 1)], axis=-1)
        del labels
        return highdicom_call(volume, manifest(segments, "binary"), stacked, "BINARY")
    if case == "node-fractional":
        spec = manifest(segments, "fractional")
        probabilities = probabilities_by_segment(slices, segments)
        empty = np.zeros(volume.shape, dtype=np.uint8)
        return lambda: encode_segmentation(
            volume,
            empty,
            spec,
            "1.2.826.0.1.3",
            "1.2.826.0.1.4",
            segment_probabilities=probabilities,
        )
    if case == "highdicom-fractional":
        stacked = probabilities_stacked(slices, segments)
        return highdicom_call(volume, manifest(segments, "fractional"), stacked, "FRACTIONAL")
    raise ValueError(f"unknown case {case!r}")


def run_case(case: str, mode: str, slices: int, segments: int) -> dict[str, float]:
    """One encoding in this process: seconds, or tracemalloc's peak in MiB."""
    call = prepare(case, slices, segments)
    if mode == "memory":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        seg = call()
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        return {"peak_mib": peak / 2**20}
    start = time.perf_counter()
    seg = call()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "frames": int(seg.NumberOfFrames),
        "pixel_mb": len(seg.PixelData) / 1e6,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def in_subprocess(case: str, mode: str, slices: int, segments: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--case", case, "--mode", mode]
    command += ["--slices", str(slices), "--segments", str(segments)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{case} ({mode}) failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--no-fractional", action="store_true", help="binary encodings only")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("time", "memory"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.mode, args.slices, args.segments)))
        return

    cases = CASES[:2] if args.no_fractional else CASES
    figures: dict[str, dict[str, float]] = {}
    for case in cases:
        figures[case] = in_subprocess(case, "time", args.slices, args.segments)
        figures[case].update(in_subprocess(case, "memory", args.slices, args.segments))
        print(f"  done: {case}", file=sys.stderr, flush=True)

    print(
        f"SEG encoding, {args.slices} x {MATRIX} x {MATRIX} CT, {args.segments} segments; "
        "peak = tracemalloc peak above the inputs; each figure from a fresh process"
    )
    print(
        f"{'encoding':22} {'seconds':>8} {'peak MiB':>9} {'frames':>7} {'Pixel Data MB':>14} "
        f"{'process max RSS MiB':>20}"
    )
    for case, row in figures.items():
        print(
            f"{case:22} {row['seconds']:8.2f} {row['peak_mib']:9.0f} {row['frames']:7d} "
            f"{row['pixel_mb']:14.1f} {row['max_rss_mib']:20.0f}"
        )
    for kind in ("binary", "fractional"):
        node, plain = figures.get(f"node-{kind}"), figures.get(f"highdicom-{kind}")
        if node and plain:
            print(
                f"node / highdicom, {kind}: time {node['seconds'] / plain['seconds']:.2f}, "
                f"peak memory {node['peak_mib'] / plain['peak_mib']:.2f}"
            )


if __name__ == "__main__":
    main()
