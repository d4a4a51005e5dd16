"""Every model an analysis worker may run, loaded onto its device and run once before
the worker takes a job, so that no job pays for loading a network.

``warm_models`` builds each package's network into the worker's ``NetworkCache``
(its sha256 checked, ``models.loader``) and runs it on a zero input of the shape its
manifest's input contract says inference feeds (``models.loader.trial_run``), under
the reduced precision jobs run it with on CUDA, so that the device's context, the
weights and the kernels are ready. The time each model took is logged. A model that
cannot be loaded or run is refused, with the reason, for this worker's life: its jobs
fail with that reason (``workers.analysis_context``) and the worker carries on with
the others.
"""

from __future__ import annotations

import logging
import time

import torch

from models.contract_errors import ModelUnavailable
from models.loader import trial_run
from models.registry import ModelRegistry
from workers.infer import NetworkCache, autocast_for

log = logging.getLogger(__name__)


def warm_models(
    registry: ModelRegistry, device: torch.device, networks: NetworkCache
) -> dict[str, str]:
    """Load and run once every package of ``registry`` on ``device`` (kept in
    ``networks``); the models refused, by name, with the reason."""
    refused: dict[str, str] = {}
    for package in registry.packages:
        manifest = package.manifest
        began = time.perf_counter()
        try:
            network = networks.get(package, device)
            with autocast_for(device):
                trial = trial_run(package, network, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except ModelUnavailable as exc:
            refused[package.name] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a foreign format may raise anything
            refused[package.name] = f"{type(exc).__name__}: {exc}"
        else:
            log.info(
                "model %s %s loaded and warmed on %s in %.2f s (input %s)",
                manifest.name, manifest.version, device, time.perf_counter() - began,
                "x".join(map(str, trial.input_shape)),
            )  # fmt: skip
            continue
        log.error(
            "model %s %s refused on this worker, its jobs will fail: %s",
            manifest.name, manifest.version, refused[package.name],
        )  # fmt: skip
    return refused
