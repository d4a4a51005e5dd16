"""Completion by evidence through the real receive path: DCMTK's storescu (or Orthanc's
own routing) sends to the node's Storage SCP, whose association callback marks the
released series and wakes the scheduler's loop, which completes and routes them.

The quiet period is set far beyond the tests' waits (300 s) where evidence should
complete a series, so a series can only be routed by its evidence; where the evidence
is missing (a gap), a short quiet period completes it instead. Assertions are on the
states and the reasons; the timings are printed."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from sqlalchemy import select

from models.registry import ModelPackage, ModelRegistry
from node.completion_release import SeriesRelease
from node.db.migrate import upgrade_to_head
from node.db.models import Series, SeriesState
from node.db.session import SessionFactory, make_engine, make_session_factory
from node.jobs.celery_app import make_celery
from node.jobs.ledger import JobLedger
from node.jobs.queue import JobQueue
from node.scheduler import Scheduler
from node.scp import StorageSCP, log_association
from node.settings import Settings
from tests.factories import MASS, fake_manifest, make_ct_series, write_series
from tests.node_process import wait_for
from tests.orthanc import Orthanc, free_port, start_orthanc

CT_MODEL = fake_manifest("ct-model", "classification", classes=[{"name": "mass", "finding": MASS}])


@contextmanager
def receiving_node(data_dir: Path, redis_url: str, **settings: Any) -> Iterator[StorageSCP]:
    """The Storage SCP and the scheduler's loop, wired as ``ainode serve`` wires them."""
    config = Settings(data_dir=data_dir, dicom_port=free_port(), dicom_bind="127.0.0.1", **settings)
    engine = make_engine(config)
    upgrade_to_head(engine)
    sessions = make_session_factory(engine)
    ledger = JobLedger(sessions)
    queue = JobQueue(make_celery(redis_url, config.visibility_timeout_seconds), ledger)
    registry = ModelRegistry(packages=[ModelPackage(data_dir / "m", CT_MODEL)])
    scheduler = Scheduler(config, sessions, registry, queue, ledger)
    scp = StorageSCP(
        config, sessions, on_association=SeriesRelease(sessions, scheduler.wake, log_association)
    )
    scheduler.start()
    scp.start()
    try:
        yield scp
    finally:
        scp.stop()
        scheduler.stop()
        engine.dispose()


def complete(sessions: SessionFactory, uid: str) -> Series | None:
    with sessions() as session:
        series = session.scalars(select(Series).where(Series.series_instance_uid == uid)).first()
    return series if series is not None and series.state is not SeriesState.RECEIVING else None


def send_and_wait(
    scp: StorageSCP, files: list[Path], calling: str = "MODALITY", timeout: float = 60
) -> Series:
    """Send ``files`` on one association; the series once complete (its reason printed)."""
    uid = series_uid(files)
    began = time.monotonic()
    Orthanc.store_to(files, "127.0.0.1", scp.settings.dicom_port, "AINODE", calling)
    sent = time.monotonic()
    series = wait_for(lambda: complete(scp.sessions, uid), timeout=timeout, interval=0.05,
                      what="the series complete")  # fmt: skip
    print(
        f"{len(files)} instances from {calling}: sent in {sent - began:.2f} s, complete "
        f"{time.monotonic() - sent:.2f} s after the release: {series.completed_by}"
    )
    return series


def series_uid(files: list[Path]) -> str:
    return str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def ct_files(directory: Path, slices: int = 40, skip: int | None = None) -> list[Path]:
    datasets = make_ct_series(np.zeros((slices, 64, 64)), patient_id=directory.name)
    if skip is not None:
        del datasets[skip]
    return write_series(datasets, directory)


def test_a_released_series_completes_after_the_grace_not_the_quiet_period(
    tmp_path: Path, machine_redis_url: str
) -> None:
    with receiving_node(tmp_path / "var", machine_redis_url, stable_seconds=300) as scp:
        series = send_and_wait(scp, ct_files(tmp_path / "forty"))
    assert series.state is SeriesState.ROUTED
    assert series.completed_by == (
        "evidence: MODALITY released the association after Instance Numbers 1..40 without a "
        "gap, evenly spaced"
    )
    assert (series.instance_count, series.calling_ae_title) == (40, "MODALITY")


def test_a_series_with_a_gap_waits_for_the_quiet_period(
    tmp_path: Path, machine_redis_url: str
) -> None:
    with receiving_node(tmp_path / "var", machine_redis_url, stable_seconds=4) as scp:
        series = send_and_wait(scp, ct_files(tmp_path / "gap", skip=19))
    assert series.completed_by == "quiet period (4 s without a new instance)"
    assert (series.instance_count, series.max_instance_number) == (39, 40)


def test_a_single_multi_frame_instance_is_its_series(
    tmp_path: Path, machine_redis_url: str
) -> None:
    source = get_testdata_file("eCT_Supplemental.dcm", download=False)
    assert source is not None, "pydicom's test files are missing"
    copy = tmp_path / "ect.dcm"
    shutil.copy(source, copy)
    with receiving_node(tmp_path / "var", machine_redis_url, stable_seconds=300) as scp:
        series = send_and_wait(scp, [copy])
    assert series.completed_by == "evidence: a single multi-frame instance (2 frames)"


def test_a_senders_rule(tmp_path: Path, machine_redis_url: str) -> None:
    rules = "GAPPY=release,CT300=expected:39"
    with receiving_node(tmp_path / "var", machine_redis_url, stable_seconds=300,
                        completion_rules=rules) as scp:  # fmt: skip
        by_release = send_and_wait(scp, ct_files(tmp_path / "a", skip=19), calling="GAPPY")
        by_count = send_and_wait(scp, ct_files(tmp_path / "b", skip=19), calling="CT300")
    assert by_release.completed_by == "evidence: GAPPY released the association (its rule: release)"
    assert by_count.completed_by == (
        "evidence: 39 instances, as expected from CT300 (its rule: expected:39)"
    )


def test_orthanc_forwarding_stable_studies_with_its_rule(
    tmp_path: Path, machine_redis_url: str
) -> None:
    """The shipped route (deploy/orthanc) forwards a study once Orthanc finds it stable;
    with the rule the example configuration sets (ORTHANC=release), the node completes
    it at the association's release, a series with a gap included."""
    files = ct_files(tmp_path / "pacs", skip=19)
    uid = series_uid(files)
    with receiving_node(tmp_path / "var", machine_redis_url, stable_seconds=300,
                        completion_rules="ORTHANC=release") as scp:  # fmt: skip
        pacs = start_orthanc(tmp_path / "orthanc", node_port=scp.settings.dicom_port)
        try:
            began = time.monotonic()
            pacs.store(files)
            series = wait_for(lambda: complete(scp.sessions, uid), timeout=120, interval=0.05,
                              what="the forwarded series complete")  # fmt: skip
        finally:
            pacs.stop()
    print(f"sent to Orthanc, complete on the node {time.monotonic() - began:.2f} s later "
          f"(Orthanc's stable age 2 s included): {series.completed_by}")  # fmt: skip
    assert series.completed_by == "evidence: ORTHANC released the association (its rule: release)"
    assert series.instance_count == 39
