"""The receiving process stays free of torch: ``ainode serve`` maps no torch, SimpleITK or
scipy library, nor does its delivery worker child; only its analysis worker child, which
runs the networks, loads torch.

Read from the running processes' memory maps (``/proc/<pid>/maps``), so an import
anywhere on the serve path (routing, discovery, the web app) shows up however it came.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from node.jobs.contracts import GPU_QUEUE, IO_QUEUE
from tests.node_process import NodeProcess, start_node, wait_for

# What each library's shared objects have in their mapped paths.
HEAVY = {
    "torch": ("libtorch", "/torch/"),
    "SimpleITK": ("SimpleITK",),
    "scipy": ("/scipy/", "scipy.libs"),
}


def mapped_files(pid: int) -> set[str]:
    """The files a process has mapped (its shared objects among them)."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            paths.add(fields[5])
    return paths


def libraries_of(pid: int) -> dict[str, list[str]]:
    """For each heavy library, the files of it the process has mapped."""
    files = mapped_files(pid)
    return {
        name: sorted(f for f in files if any(mark in f for mark in marks))
        for name, marks in HEAVY.items()
    }


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def worker_child(pid: int, queue: str = GPU_QUEUE) -> int | None:
    """The serve process's ``ainode worker`` child taking ``queue``, once started."""
    for child in children(pid):
        command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"node.cli" not in command or b"--queues" not in command:
            continue
        if command[command.index(b"--queues") + 1] == queue.encode():
            return child
    return None


def consuming(node: NodeProcess, pid: int) -> bool:
    """The worker ``pid`` has started and consumes its queues (Celery says it is ready)."""
    return any(
        f"ainode-{pid}@" in line and " ready." in line for line in node.log(200_000).splitlines()
    )


def test_serve_maps_no_torch_simpleitk_or_scipy_nor_does_its_delivery_worker(tmp_path):
    node = start_node(tmp_path / "node")
    try:
        assert node.process is not None
        serve_pid = node.process.pid
        worker = wait_for(lambda: worker_child(serve_pid), 60, what="the analysis worker")
        delivery = wait_for(
            lambda: worker_child(serve_pid, IO_QUEUE), 60, what="the delivery worker"
        )
        # Each worker imports what it needs as it starts; wait until both consume their
        # queue, so every process is seen past its imports (and the models warm).
        wait_for(lambda: consuming(node, worker), 180, what="the analysis worker ready")
        wait_for(lambda: consuming(node, delivery), 180, what="the delivery worker ready")
        node.get("/healthz")

        loaded = {name: files for name, files in libraries_of(serve_pid).items() if files}
        assert loaded == {}, f"ainode serve (pid {serve_pid}) maps {loaded}"
        assert any("libtorch" in f for f in libraries_of(worker)["torch"])
        in_delivery = {name: files for name, files in libraries_of(delivery).items() if files}
        assert in_delivery == {}, f"the delivery worker (pid {delivery}) maps {in_delivery}"

        # Each worker is supervised: killed, it is started again.
        os.kill(delivery, signal.SIGKILL)
        wait_for(
            lambda: worker_child(serve_pid, IO_QUEUE) not in (None, delivery), 60,
            what="a new delivery worker",
        )  # fmt: skip
        assert worker_child(serve_pid) == worker
    finally:
        node.stop()
