"""What an analysis worker holds for its whole life besides the ``WorkerContext``: the
model packages, the device, the networks warm on it, the decoded series it keeps, and
where results are written.

Built once when a worker that takes the analysis queue starts, inside the process that
runs the jobs (CUDA is never touched before a fork: the worker uses Celery's solo
pool): every model is loaded and run once there (``workers.warmup``) before the worker
takes a job. Only this module and the ones it imports bring torch into a worker; the
delivery worker never builds one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from models.package import ModelPackage
from models.registry import ModelRegistry, discover_packages
from node.settings import Settings
from node.storage import DurableFolder
from workers.errors import ModelUnavailable
from workers.infer import NetworkCache, select_device
from workers.load.cache import DecodedSeriesCache
from workers.warmup import warm_models

log = logging.getLogger(__name__)


@dataclass
class AnalysisContext:
    registry: ModelRegistry
    device: torch.device
    networks: NetworkCache  # every model's network, loaded and warmed at start
    series: DecodedSeriesCache  # decoded series, for the next job on the same series
    results: DurableFolder
    refused: dict[str, str] = field(default_factory=dict)  # model name -> why not here

    @classmethod
    def build(cls, settings: Settings) -> AnalysisContext:
        """Discover the packages, choose the device, load and warm every model."""
        registry = discover_packages(settings.models_dir)
        for path, reason in registry.refused:
            log.error("model package %s refused: %s", path, reason)
        device = select_device(settings.device)
        networks = NetworkCache()
        refused = warm_models(registry, device, networks)
        log.info(
            "analysis worker ready on %s: %d model(s) warm, %d refused; decode cache %.0f MiB",
            device, len(registry.packages) - len(refused), len(refused),
            settings.decode_cache_bytes / 2**20,
        )  # fmt: skip
        return cls(
            registry=registry,
            device=device,
            networks=networks,
            series=DecodedSeriesCache(settings.decode_cache_bytes),
            results=DurableFolder(settings.results_dir),
            refused=refused,
        )

    def package_for(self, name: str, version: str) -> ModelPackage:
        """The package a job names, ready to run; ModelUnavailable saying why not."""
        try:
            package = self.registry.get(name)
        except KeyError:
            raise ModelUnavailable(f"model {name} is not installed on this worker") from None
        if package.manifest.version != version:
            raise ModelUnavailable(
                f"job wants {name} {version}, this worker has {package.manifest.version}"
            )
        if name in self.refused:
            raise ModelUnavailable(
                f"model {name} {version} could not be loaded when this worker started: "
                f"{self.refused[name]}"
            )
        return package
