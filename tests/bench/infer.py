"""Benchmark: seconds and memory of each analysis stage for every shipped model.

A 300-slice 512x512 CT phantom is written as DICOM, then per model the pipeline's own
step functions (``workers.pipeline``): load, preprocess, infer, postprocess and encode
(SEG and SR, through the gate, as a job encodes them). Peak memory: Python allocations
(tracemalloc, which sees numpy buffers) per stage, and the process's maximum resident
set. Runs on the CPU, and on CUDA when present. Prints a table; asserts nothing.

    python tests/bench/infer.py [--slices 300]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.package import ModelPackage  # noqa: E402
from models.registry import discover_packages  # noqa: E402
from tests.factories import make_ct_series, write_series  # noqa: E402
from training.phantom import make_phantom  # noqa: E402
from workers.infer import NetworkCache  # noqa: E402
from workers.pipeline import (  # noqa: E402
    encode,
    gate,
    infer,
    load,
    postprocess,
    preprocess,
    run_model,
    summarise,
)
from workers.volume import ModelOutput  # noqa: E402

STAGES = ("load", "preprocess", "infer", "postprocess", "encode")


class Timings:
    """A step recorder (``workers.pipeline.StepRecorder``) that keeps seconds and peaks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        tracemalloc.reset_peak()
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds[name] = time.perf_counter() - start
            self.peak_mb[name] = tracemalloc.get_traced_memory()[1] / 2**20


def run_steps(
    package: ModelPackage, paths: list[Path], device: torch.device, cache: NetworkCache
) -> tuple[Timings, ModelOutput]:
    """One model through the pipeline's steps, each timed as a job's step is recorded."""
    timings = Timings()
    with timings("load"):
        inputs = load(paths)
    if device.type == "cuda":
        run_model(package, inputs.primary, device, cache)  # kernels chosen and compiled
        torch.cuda.reset_peak_memory_stats()
    with timings("preprocess"):
        prepared = preprocess(inputs, package)
    with timings("infer"):
        outputs = infer(prepared, package, device, cache)
    with timings("postprocess"):
        output = postprocess(outputs, prepared, package)
    del prepared, outputs
    with timings("encode"):
        findings = summarise(package.manifest, inputs.primary, output)
        gate(encode(inputs.primary, package.manifest, output, findings), inputs.primary.datasets)
    return timings, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    args = parser.parse_args()
    registry = discover_packages()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    phantom = make_phantom(np.random.default_rng(7), (args.slices, 512, 512), (1.0, 0.7, 0.7), 2)
    rows = []
    reference: dict[str, ModelOutput] = {}  # the CPU output of each model
    agreement: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_series(make_ct_series(phantom.hu, phantom.spacing), Path(folder))
        del phantom
        tracemalloc.start()
        for device in devices:
            cache = NetworkCache()
            for name in registry.names:
                package = registry.get(name)
                cache.get(package, device)  # warm: loading is not inference
                timings, output = run_steps(package, paths, device, cache)
                if device.type == "cpu":
                    reference[name] = output
                else:
                    agreement.append(
                        f"{name}: {compare(reference[name], output)}; GPU peak "
                        f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
                    )
                rows.append((device.type, name, timings))
                del output
        tracemalloc.stop()
    report(args.slices, rows, agreement)


def report(slices: int, rows: list[tuple[str, str, Timings]], agreement: list[str]) -> None:
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    header = f"{'device':6} {'model':22} " + " ".join(f"{s:>17}" for s in STAGES)
    print(f"{slices} x 512 x 512 CT phantom; seconds (peak traced MiB) per stage")
    print(header)
    for device, name, timings in rows:
        cells = " ".join(f"{timings.seconds[s]:8.2f} ({timings.peak_mb[s]:6.0f})" for s in STAGES)
        print(f"{device:6} {name:22} {cells}")
    print(f"process max RSS: {maxrss_mb:.0f} MiB; torch threads: {torch.get_num_threads()}")
    if agreement:
        print(f"CUDA ({torch.cuda.get_device_name()}) against CPU, mixed precision:")
        for line in agreement:
            print(f"  {line}")


def compare(cpu: ModelOutput, gpu: ModelOutput) -> str:
    """How far the CUDA (autocast) output is from the CPU (float32) one."""
    parts = []
    if cpu.labels is not None and gpu.labels is not None:
        for label in sorted(set(np.unique(cpu.labels)) - {0}):
            a, b = cpu.labels == label, gpu.labels == label
            dice = 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)
            parts.append(f"label {label} Dice {dice:.4f}")
        parts.append(f"voxels differing {np.mean(cpu.labels != gpu.labels):.2e}")
    for key, value in cpu.probabilities.items():
        parts.append(f"{key} p {value:.4f} vs {gpu.probabilities.get(key, float('nan')):.4f}")
    return ", ".join(parts)


if __name__ == "__main__":
    main()
