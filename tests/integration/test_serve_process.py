"""The receiving process stays free of torch: ``ainode serve`` maps no torch, SimpleITK or
scipy library; only its worker child, which runs the networks, loads torch.

Read from the running processes' memory maps (``/proc/<pid>/maps``), so an import
anywhere on the serve path (routing, discovery, the web app) shows up however it came.
"""

from __future__ import annotations

from pathlib import Path

from tests.node_process import start_node, wait_for

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


def worker_child(pid: int) -> int | None:
    """The ``ainode worker`` child of the serve process, once started."""
    for child in children(pid):
        command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"node.cli" in command and b"worker" in command:
            return child
    return None


def test_serve_maps_no_torch_simpleitk_or_scipy_and_its_worker_maps_torch(tmp_path):
    node = start_node(tmp_path / "node")
    try:
        assert node.process is not None
        serve_pid = node.process.pid
        worker = wait_for(lambda: worker_child(serve_pid), 60, what="the worker child")
        # The worker imports torch as it starts; wait until it has, so both processes
        # are seen past their imports.
        wait_for(lambda: libraries_of(worker)["torch"], 180, what="torch in the worker")
        node.get("/healthz")

        loaded = {name: files for name, files in libraries_of(serve_pid).items() if files}
        assert loaded == {}, f"ainode serve (pid {serve_pid}) maps {loaded}"
        assert any("libtorch" in f for f in libraries_of(worker)["torch"])
    finally:
        node.stop()
