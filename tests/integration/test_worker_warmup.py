"""An analysis worker loads and warms every model before it takes a job.

The worker's own start (``AnalysisContext.build``) and its own task function
(``run_analysis``) on a real SQLite database and the machine's Redis: after start, each
shipped model's network is on the device and has run once (logged with its time); the
jobs that follow load no network (the worker's network cache gains nothing) and decode
their shared series once. A package whose network file does not match its sha256 is
refused at start, with the reason; its job fails with that reason, and the others run.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import yaml

from models.registry import shipped_packages_dir
from node.db.migrate import upgrade_to_head
from node.db.models import Job, JobState
from node.db.session import make_engine, make_session_factory
from node.settings import Settings
from tests.factories import phantom_study
from tests.worker_jobs import queue_series_jobs
from workers.analysis_context import AnalysisContext
from workers.analysis_task import run_analysis
from workers.context import WorkerContext

SHIPPED = ("ct-lung-nodule-seg", "ct-nodule-classifier")
BROKEN = "broken-classifier"


def broken_package(models_dir: Path) -> None:
    """A copy of the shipped classifier whose manifest pins another network file."""
    folder = models_dir / BROKEN
    shutil.copytree(shipped_packages_dir() / "ct-nodule-classifier", folder)
    manifest = yaml.safe_load((folder / "model.yaml").read_text())
    manifest["name"] = BROKEN
    manifest["network"]["sha256"] = "0" * 64
    (folder / "model.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def test_every_model_is_warm_before_the_first_job_and_a_broken_one_is_refused(
    tmp_path: Path, machine_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    broken_package(tmp_path / "models")
    settings = Settings(
        data_dir=tmp_path / "node", models_dir=tmp_path / "models", device="cpu",
        broker_url=machine_redis_url,
    )  # fmt: skip
    engine = make_engine(settings)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    caplog.set_level(logging.INFO, logger="workers")

    analysis = AnalysisContext.build(settings)

    assert set(analysis.refused) == {BROKEN}
    assert "sha256" in analysis.refused[BROKEN]
    warmed = [
        r.getMessage() for r in caplog.records if "loaded and warmed on cpu" in r.getMessage()
    ]
    assert sorted(line.split()[1] for line in warmed) == sorted(SHIPPED)
    assert any(f"model {BROKEN} 1.0.0 refused on this worker" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR)  # fmt: skip
    networks = len(analysis.networks)
    assert networks == len(SHIPPED)

    files = phantom_study(tmp_path, 901, slices=6)
    job_ids = queue_series_jobs(sessions, settings, files, [*SHIPPED, BROKEN])
    context, _app = WorkerContext.build(settings, machine_redis_url)
    for job_id in job_ids:
        run_analysis(context, analysis, job_id)

    assert len(analysis.networks) == networks  # no job loaded a network
    assert (analysis.series.decodes, analysis.series.hits) == (1, 1)  # two models, one decode
    with sessions() as session:
        jobs = {job.model_name: job for job in session.query(Job).where(Job.id.in_(job_ids))}
        steps = {name: [s.name for s in job.steps] for name, job in jobs.items()}
        outcome = {name: (job.state, job.error) for name, job in jobs.items()}
    for name in SHIPPED:
        assert outcome[name] == (JobState.DELIVERING, "")  # analysed; no destination
        assert steps[name] == ["load", "preprocess", "infer", "postprocess", "encode", "store"]
    state, error = outcome[BROKEN]
    assert state is JobState.FAILED
    assert error.startswith(f"model {BROKEN} 1.0.0 could not be loaded when this worker started")
    assert "sha256" in error
    engine.dispose()
    context.trail.close(timeout=5.0)
