"""STAT behind a backlog: how long an urgent study waits with 20 routine studies ahead.

Starts a real Orthanc as the archive and ``ainode serve`` as a subprocess (its embedded
Redis, one analysis worker on the CPU, the shipped models), with one routing rule:
studies from the calling AE title ``EDCT`` (an emergency department's CT) are STAT
(``AINODE_PRIORITY_RULES``). Then:

1. a warm-up study, waited for, so that the figures start with a warm worker;
2. N routine studies (default 20; small chest CT phantoms) sent back to back by DCMTK's
   storescu from ``MODALITY``, then one study from ``EDCT``;
3. for each study, from its last instance received to the last of its results stored in
   the archive (the measure of ``node.web.result_latency``, read from the node's
   database): the STAT study's time and the routine studies' median.

The same run follows with priorities off (no rule: every job MEDIUM), for comparison.
Run: `.venv/bin/python tests/bench/stat.py [--routine 20] [--slices 24] [--size 256] [--keep DIR]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.db.models import Job, Series, Study  # noqa: E402
from node.db.session import make_engine, make_session_factory  # noqa: E402
from node.settings import Settings  # noqa: E402
from node.web.result_latency import result_latencies  # noqa: E402
from tests.factories import make_ct_series, write_series  # noqa: E402
from tests.node_process import NodeProcess, node_environment  # noqa: E402
from tests.orthanc import start_orthanc  # noqa: E402
from training.phantom import make_phantom  # noqa: E402

EMERGENCY_AET = "EDCT"
ROUTINE_AET = "MODALITY"
RULES = f'[{{"priority": "STAT", "calling_ae_title": "{EMERGENCY_AET}"}}]'
MODELS = 2  # the shipped models, one job each per CT study


@dataclass
class BenchStudy:
    name: str
    files: list[Path]
    uid: str


def make_study(root: Path, name: str, seed: int, slices: int, size: int) -> BenchStudy:
    pixel = 360.0 / size  # mm: a 36 cm field of view
    phantom = make_phantom(
        np.random.default_rng(seed), (slices, size, size), (5.0, pixel, pixel), lesions=1
    )
    datasets = make_ct_series(
        phantom.hu, phantom.spacing, patient_id=f"STAT{seed}", series_description=name
    )
    return BenchStudy(
        name, write_series(datasets, root / f"study-{seed}"), datasets[0].StudyInstanceUID
    )


def send(study: BenchStudy, port: int, calling_aet: str) -> None:
    """storescu, one association (its release is the evidence that completes the series)."""
    subprocess.run(
        ["storescu", "-aet", calling_aet, "-aec", "AINODE", "127.0.0.1", str(port),
         *map(str, study.files)],
        env={**os.environ, "TCP_NODELAY": "1"}, check=True, capture_output=True,
    )  # fmt: skip


class Latencies:
    """Each study's result latency, read from the node's database as the metrics read it."""

    def __init__(self, data_dir: Path) -> None:
        self.engine = make_engine(Settings(data_dir=data_dir))
        self.sessions = make_session_factory(self.engine)

    def of(self, uids: set[str]) -> dict[str, float]:
        """Study UID -> seconds, for the studies whose every job's results are stored."""
        with self.sessions() as session:
            rows = session.execute(
                select(Job.id, Study.study_instance_uid)
                .join(Series, Series.id == Job.series_pk)
                .join(Study, Study.id == Series.study_pk)
                .where(Study.study_instance_uid.in_(uids))
            )
            study_of = {job_id: uid for job_id, uid in rows}
            per_study: dict[str, list[float]] = {}
            for seen in result_latencies(session):
                if seen.job_id in study_of:
                    per_study.setdefault(study_of[seen.job_id], []).append(seen.seconds)
        return {uid: max(times) for uid, times in per_study.items() if len(times) >= MODELS}

    def waiting_when_queued(self, urgent: str) -> int:
        """Routine jobs not yet started when the urgent study's first job was created:
        the backlog it met."""
        with self.sessions() as session:
            jobs = session.execute(
                select(Study.study_instance_uid, Job.created_at, Job.started_at)
                .join(Series, Series.id == Job.series_pk)
                .join(Study, Study.id == Series.study_pk)
            ).all()
        queued = min(created for uid, created, _ in jobs if uid == urgent)
        return sum(1 for uid, _, started in jobs if uid != urgent and started > queued)

    def wait(self, uids: set[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.of(uids)
            if len(done) == len(uids):
                return done
            time.sleep(1.0)
        raise RuntimeError(f"results missing after {timeout:.0f} s")

    def close(self) -> None:
        self.engine.dispose()


def run(root: Path, label: str, rules: str | None, args: argparse.Namespace,
        seed: int) -> tuple[float, float]:  # fmt: skip
    """One node and archive; the STAT study's latency and the routine median."""
    archive = start_orthanc(root / f"archive-{label}")
    settings = {"archive": archive.destination, "device": "cpu", "log_level": "WARNING"}
    if rules:
        settings["priority_rules"] = rules
    env, dicom_port, http_port = node_environment(root / f"node-{label}", **settings)
    env.pop("AINODE_STABLE_SECONDS")  # the default quiet period: completion by evidence
    node = NodeProcess(root / f"node-{label}", dicom_port, http_port, env)
    shape = (args.slices, args.size)
    warm = make_study(root, "warm-up", seed, *shape)
    routine = args.routine
    studies = [make_study(root, f"routine {n + 1}", seed + 1 + n, *shape) for n in range(routine)]
    urgent = make_study(root, "urgent", seed + 100, *shape)
    latencies = Latencies(root / f"node-{label}")
    try:
        node.start()
        send(warm, dicom_port, ROUTINE_AET)
        latencies.wait({warm.uid}, 300)
        began = time.monotonic()
        for study in studies:
            send(study, dicom_port, ROUTINE_AET)
        send(urgent, dicom_port, EMERGENCY_AET)
        sent = time.monotonic() - began
        done = latencies.wait({s.uid for s in [*studies, urgent]}, 600)
        total = time.monotonic() - began
        backlog = latencies.waiting_when_queued(urgent.uid)
    finally:
        latencies.close()
        node.stop()
        archive.stop()
    stat = done[urgent.uid]
    median = statistics.median(done[s.uid] for s in studies)
    print(f"{label}: {routine} routine studies and the urgent one sent in {sent:.1f} s; "
          f"every result stored {total:.0f} s after the first was sent; {backlog} routine "
          f"jobs had not started when the urgent study's jobs were queued")  # fmt: skip
    print(f"  urgent study (from {EMERGENCY_AET}): {stat:.1f} s from its last instance to its "
          f"results stored; routine median {median:.1f} s "
          f"(min {min(done[s.uid] for s in studies):.1f}, "
          f"max {max(done[s.uid] for s in studies):.1f})")  # fmt: skip
    return stat, median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routine", type=int, default=20, help="routine studies ahead")
    parser.add_argument("--slices", type=int, default=24, help="slices per study")
    parser.add_argument("--size", type=int, default=256, help="rows and columns per slice")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    print(f"device: CPU ({os.cpu_count()} CPUs); {args.routine} routine studies of "
          f"{args.slices} slices ({args.size}x{args.size}), {MODELS} models: "
          f"{args.routine * MODELS} jobs ahead of the urgent study's {MODELS}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ainode-stat-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        stat, median = run(root, "priorities on", RULES, args, 7000)
        flat, flat_median = run(root, "priorities off", None, args, 8000)
    print(f"\nurgent study: {stat:.1f} s with priority STAT, {flat:.1f} s as MEDIUM "
          f"behind the backlog; routine median {median:.1f} s / {flat_median:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
