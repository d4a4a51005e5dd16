"""Latency: from the last instance the node acknowledged to the results in the archive.

Starts a real Orthanc as the archive and ``ainode serve`` as a subprocess on the node's
DEFAULT settings, except its ports, its data dir and its destination (that Orthanc);
it prints which settings it set and the defaults that bear on latency. Then:

1. a warm-up study (40 slices): the first job after start also loads the models;
2. a 40-slice and a 300-slice 512x512 chest CT phantom, each sent by DCMTK's storescu
   in one association, and 40 slices whose Instance Numbers start at 2 (so nothing
   shows the series complete: the quiet period decides). From the last acknowledged
   instance (the last C-STORE response in ``storescu -v``'s output) to the moment the
   SEG and every SR appear in Orthanc (its REST API polled every 0.1 s), with the
   stages from the node's ``/api/studies/{uid}/timeline``;
3. N studies (default 20) of 40 slices sent back to back: studies per hour (first
   instance sent to the last result in the archive) and the fraction of that time the
   analysis worker was busy (the union of each job's latest attempt, from its start to
   the end of its last step, over the wall time).

The goals of the issue are printed beside the figures; nothing is asserted. On a
machine with CUDA the node runs the networks there (``AINODE_DEVICE=auto``) and the
300-slice goal is the GPU one.
Run: `.venv/bin/python tests/bench/latency.py [--studies 20] [--keep DIR]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.settings import Settings  # noqa: E402
from tests.factories import make_ct_series, write_series  # noqa: E402
from tests.node_process import NodeProcess  # noqa: E402
from tests.orthanc import Orthanc, free_port, start_orthanc  # noqa: E402
from training.phantom import make_phantom  # noqa: E402

RESULTS = {"SEG": 1, "SR": 2}  # the shipped models: a SEG and an SR, and a classifier's SR
EVIDENT_GOAL = 5.0  # s, 40 slices, completeness evident
AFTER_QUIET_GOAL = 5.0  # s past the quiet period, 40 slices, completeness not evident
CPU_300_GOAL, GPU_300_GOAL = 30.0, 15.0
LATENCY_WORDS = ("stable", "complet", "scheduler", "device", "deliver", "worker", "receive")


@dataclass
class Study:
    name: str
    files: list[Path]
    study_uid: str


@dataclass
class Sent:
    study: Study
    began: float  # monotonic: storescu started
    acknowledged: float  # monotonic: the last C-STORE response
    appeared: dict[str, tuple[str, float]] = field(default_factory=dict)  # uid: (what, when)


def make_study(root: Path, name: str, seed: int, slices: int, spacing: float,
               gap: bool = False) -> Study:  # fmt: skip
    """A chest CT phantom; with ``gap``, its Instance Numbers start at 2, so nothing shows
    the series complete (the slices themselves are whole and evenly spaced, so the
    models take it) and the node must wait for the quiet period."""
    phantom = make_phantom(
        np.random.default_rng(seed), (slices, 512, 512), (spacing, 0.7, 0.7), lesions=2
    )
    datasets = make_ct_series(
        phantom.hu, phantom.spacing, patient_id=f"LATENCY{seed}", series_description=name
    )
    if gap:
        for ds in datasets:
            ds.InstanceNumber += 1
    files = write_series(datasets, root / f"study-{seed}")
    return Study(name, files, str(datasets[0].StudyInstanceUID))


def send(study: Study, port: int) -> Sent:
    """storescu -v in one association; the time of the last store response it logged."""
    began = time.monotonic()
    last = began
    sender = subprocess.Popen(
        ["storescu", "-v", "-R", "-aet", "MODALITY", "-aec", "AINODE", "127.0.0.1", str(port),
         *map(str, study.files)],
        env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert sender.stdout is not None
    for line in sender.stdout:
        if "Received Store Response" in line:
            last = time.monotonic()
    if sender.wait() != 0:
        raise RuntimeError(f"storescu failed for {study.name}")
    return Sent(study, began, last)


def results_held(archive: Orthanc, study_uid: str) -> dict[str, str]:
    """Series Instance UID -> 'MODALITY description' of the study's SEG and SR series."""
    found = httpx.post(
        f"{archive.url}/tools/find",
        json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
        timeout=30,
    ).json()
    held = {}
    for series in found:
        tags = series["MainDicomTags"]
        if tags.get("Modality") in RESULTS and series.get("Instances"):
            description = tags.get("SeriesDescription", "")
            held[tags["SeriesInstanceUID"]] = f"{tags['Modality']} {description}"
    return held


def wait_results(
    archive: Orthanc, sent: list[Sent], interval: float = 0.1, timeout: float = 300
) -> None:
    """Poll the archive until every study holds its results; note when each appeared.

    Studies are polled in the order sent, the first still waiting only: the node
    analyses them in that order, and the poll costs the node no CPU for the others.
    """
    deadline = time.monotonic() + timeout
    waiting = list(sent)
    while waiting:
        if time.monotonic() > deadline:
            names = [one.study.name for one in waiting]
            raise RuntimeError(f"results missing after {timeout} s: {names}")
        one = waiting[0]
        now = time.monotonic()
        for uid, what in results_held(archive, one.study.study_uid).items():
            one.appeared.setdefault(uid, (what, now))
        kinds = [what.split()[0] for what, _ in one.appeared.values()]
        if all(kinds.count(kind) >= count for kind, count in RESULTS.items()):
            waiting.pop(0)
            continue
        time.sleep(interval)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stages(timeline: dict) -> list[str]:
    """One line per job: the stages after the last instance, in seconds."""
    lines = []
    for series in timeline["series"]:
        events = {e["kind"]: e["offset_seconds"] for e in series["events"]}
        last, complete = events.get("received_last"), events.get("complete")
        for job in series["jobs"]:
            steps = [e for e in job["events"] if e["kind"] == "step"]
            attempt = max((s["attempt"] for s in steps), default=0)
            steps = [s for s in steps if s["attempt"] == attempt]
            queued = next(e["offset_seconds"] for e in job["events"] if e["kind"] == "queued")
            stored = [e["offset_seconds"] for e in job["events"] if e["kind"] == "stored"]
            parts = [f"complete +{complete - last:.1f}"] if None not in (last, complete) else []
            parts.append(f"queued +{queued - (queued if complete is None else complete):.1f}")
            if steps:
                parts.append(f"wait {steps[0]['offset_seconds'] - queued:.1f}")
                parts += [f"{s['name']} {s['seconds'] or 0:.1f}" for s in steps]
                end = max(s["offset_seconds"] + (s["seconds"] or 0) for s in steps)
                if stored:
                    parts.append(f"deliver {max(stored) - end:.1f}")
            latency = ", ".join(f"{d} {v:.1f} s" for d, v in job["latency_seconds"].items())
            lines.append(f"    {job['model_name']}: {' | '.join(parts)}  (node: {latency})")
    return lines


def quiet_period_evident(timeline: dict, stable: float) -> bool:
    """Whether the series counted as complete before the quiet period was over."""
    for series in timeline["series"]:
        events = {e["kind"]: e["offset_seconds"] for e in series["events"]}
        if "complete" in events and "received_last" in events:
            return events["complete"] - events["received_last"] < stable - 0.5
    return False


def goal_line(seconds: float, goal: float, what: str = "") -> str:
    verdict = "met" if seconds <= goal else "MISSED"
    return f"goal{' ' + what if what else ''} <= {goal:.0f} s: {verdict}"


def report_study(one: Sent, node: NodeProcess, stable: float, gpu: bool) -> None:
    study = one.study
    sending = one.acknowledged - one.began
    print(f"\n{study.name}: {len(study.files)} instances sent in {sending:.1f} s "
          f"({len(study.files) / sending:.0f} inst/s)")  # fmt: skip
    for what, moment in sorted(one.appeared.values(), key=lambda pair: pair[1]):
        print(f"  {what:<60} {moment - one.acknowledged:6.1f} s after the last acknowledged")
    last = max(moment for _, moment in one.appeared.values()) - one.acknowledged
    timeline: dict = node.get(f"/api/studies/{study.study_uid}/timeline")  # type: ignore[assignment]
    print("  stages (s after the previous; from the node's timeline):")
    print("\n".join(stages(timeline)))
    if len(study.files) >= 300:
        goal = GPU_300_GOAL if gpu else CPU_300_GOAL
        print(f"  all results: {last:.1f} s; {goal_line(last, goal, 'GPU' if gpu else 'CPU')}")
    elif quiet_period_evident(timeline, stable):
        goal = goal_line(last, EVIDENT_GOAL)
        print(f"  all results: {last:.1f} s; completeness evident, {goal}")
    else:
        goal = stable + AFTER_QUIET_GOAL
        print(f"  all results: {last:.1f} s; completeness by the quiet period ({stable:g} s), "
              f"{goal_line(last, goal)}")  # fmt: skip


def busy_fraction(node: NodeProcess, uids: set[str], began: float, ended: float) -> float:
    """Union of the jobs' latest attempts (start to last step's end) over [began, ended]."""
    jobs: list[dict] = node.get("/api/jobs?limit=1000")  # type: ignore[assignment]
    spans = []
    for job in jobs:
        if job["study_instance_uid"] not in uids or not job["steps"]:
            continue
        start = min(at(s["started_at"]).timestamp() for s in job["steps"])
        end = max(at(s["started_at"]).timestamp() + (s["seconds"] or 0) for s in job["steps"])
        spans.append((max(start, began), min(end, ended)))
    busy, reach = 0.0, began
    for start, end in sorted(spans):
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return busy / (ended - began)


def run_batch(root: Path, node: NodeProcess, archive: Orthanc, count: int) -> None:
    studies = [
        make_study(root, f"batch {n + 1} (40 slices)", 5000 + n, 40, 5.0) for n in range(count)
    ]
    print(f"\n{count} studies of 40 slices, back to back:")
    wall_began, began = time.time(), time.monotonic()
    sent = [send(study, node.dicom_port) for study in studies]
    sending = time.monotonic() - began
    wait_results(archive, sent, interval=0.5)
    ended = max(moment for one in sent for _, moment in one.appeared.values())
    wall = ended - began
    wall_ended = wall_began + wall
    busy = busy_fraction(node, {s.study_uid for s in studies}, wall_began, wall_ended)
    print(f"  sent in {sending:.1f} s; every result in the archive {wall:.1f} s after the first "
          f"instance: {count / wall * 3600:.0f} studies/hour; analysis worker busy {busy:.0%} "
          f"of that time")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20, help="studies sent back to back")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ainode-latency-") as scratch:
        root = args.keep or Path(scratch)
        root.mkdir(parents=True, exist_ok=True)
        bench(root, args.studies)


def bench(root: Path, batch: int) -> None:
    try:
        import torch

        gpu = bool(torch.cuda.is_available())
    except ImportError:
        gpu = False
    began = time.monotonic()
    warm = make_study(root, "warm-up (40 slices)", 4000, 40, 5.0)
    small = make_study(root, "40 slices", 4001, 40, 5.0)
    gapped = make_study(root, "40 slices numbered from 2 (no evidence)", 4003, 40, 5.0, gap=True)
    large = make_study(root, "300 slices", 4002, 300, 1.0)
    print(f"phantoms written in {time.monotonic() - began:.0f} s")

    archive = start_orthanc(root / "archive")
    dicom_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINODE_")}
    chosen = {
        "AINODE_DATA_DIR": str(root / "node"),
        "AINODE_DICOM_PORT": str(dicom_port),
        "AINODE_DICOM_BIND": "127.0.0.1",
        "AINODE_HTTP_PORT": str(http_port),
        "AINODE_ARCHIVE": archive.destination,
    }
    env.update(chosen)
    print("settings set:", " ".join(f"{k}={v}" for k, v in chosen.items()))
    defaults = {
        name: info.get_default(call_default_factory=True)
        for name, info in Settings.model_fields.items()
        if any(word in name for word in LATENCY_WORDS)
    }
    print("defaults that bear on latency:", ", ".join(f"{k}={v}" for k, v in defaults.items()))
    print(f"device: {'CUDA' if gpu else 'CPU'} ({os.cpu_count()} CPUs)")
    stable = float(Settings.model_fields["stable_seconds"].default)
    node = NodeProcess(root / "node", dicom_port, http_port, env)
    try:
        node.start()
        for study in (warm, small, gapped, large):
            one = send(study, dicom_port)
            wait_results(archive, [one])
            report_study(one, node, stable, gpu)
        if batch:
            run_batch(root, node, archive, batch)
    finally:
        node.stop()
        archive.stop()


if __name__ == "__main__":
    main()
