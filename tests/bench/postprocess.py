"""Benchmark: the postprocess step before and after labels were decided on the prepared grid.

A 300-slice 512x512 CT phantom goes through the shipped segmentation model's
preprocessing and network (infer), then through the postprocess step as it was
(``tests.postprocess_reference``: every margin mapped back at full resolution) and as
it is (``workers.postprocess``). Each is timed best of ``--repeats``, postprocessing
with the peak memory a run allocates (traced, its output included); the two label
maps must be identical. Inference runs on the CPU, and on CUDA when present;
postprocessing is always on the CPU. Prints a table.

    python tests/bench/postprocess.py [--slices 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.registry import discover_packages  # noqa: E402
from tests.postprocess_reference import reference_postprocess  # noqa: E402
from training.phantom import make_phantom  # noqa: E402
from training.training import phantom_volume  # noqa: E402
from workers.infer import NetworkCache, infer  # noqa: E402
from workers.postprocess import postprocess  # noqa: E402
from workers.preprocessing import preprocess  # noqa: E402
from workers.volume import ModelOutput  # noqa: E402

MODEL = "ct-lung-nodule-seg"


def timed(run: Callable[[], ModelOutput], repeats: int) -> tuple[float, float, ModelOutput]:
    """Best seconds of ``repeats`` runs, the peak MiB a run allocates (traced, its
    output included), and the output."""
    best, peak, output = float("inf"), 0.0, None
    tracemalloc.start()
    for _ in range(repeats):
        output = None  # the last output is not counted in the next peak
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        output = run()
        best = min(best, time.perf_counter() - start)
        peak = max(peak, (tracemalloc.get_traced_memory()[1] - before) / 2**20)
    tracemalloc.stop()
    assert output is not None
    return best, peak, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    package = discover_packages().get(MODEL)
    phantom = make_phantom(np.random.default_rng(7), (args.slices, 512, 512), (1.0, 0.7, 0.7), 2)
    volume = phantom_volume(phantom)
    prepared = preprocess(volume, package.manifest.preprocessing)
    del phantom
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    cache = NetworkCache()
    print(f"{args.slices} x 512 x 512 CT phantom, {MODEL}; seconds (peak MiB allocated)")
    print(f"{'device':6} {'infer':>8} {'postprocess before':>22} {'postprocess after':>22}")
    for device in devices:
        cache.get(package, device)  # warm: loading is not inference
        inference = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs = infer(prepared, package, device, cache)
            if device.type == "cuda":
                torch.cuda.synchronize()
            inference = min(inference, time.perf_counter() - start)
        before = timed(partial(reference_postprocess, outputs, prepared, package), args.repeats)
        after = timed(partial(postprocess, outputs, prepared, package), args.repeats)
        assert np.array_equal(before[2].labels, after[2].labels), "label maps differ"
        print(
            f"{device.type:6} {inference:8.2f} {before[0]:12.2f} ({before[1]:6.0f}) "
            f"{after[0]:12.2f} ({after[1]:6.0f})   identical labels; "
            f"{before[0] / after[0]:.1f}x faster"
        )
    print(f"torch threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
