"""Receive throughput: the node's Storage SCP beside DCMTK's storescp and Orthanc.

Sends the same CT series (N slices of 512x512, default 500) with DCMTK's storescu to
each receiver, (a) over one association and (b) over four associations at once (four
storescu processes, each a quarter of the N instances, so N in all), three runs each
on a fresh receiver, and prints the median instances/s and the node's ratio to each
peer. The node runs twice: serving every association in its own process (the default)
and with two receiving processes (AINODE_DICOM_RECEIVE_PROCESSES=2). Every node run is
durable: each instance's file, its directory entry and its index row are on disk
before it is acknowledged (a syncfs per round of instances, then the SQLite commit:
WAL, synchronous=FULL). storescp writes without fsync; Orthanc with its defaults
(SyncStorageArea: a fsync per file).
Run: `.venv/bin/python tests/bench/receive.py [N]`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.db.migrate import upgrade_to_head  # noqa: E402
from node.db.session import make_engine, make_session_factory  # noqa: E402
from node.scp import StorageSCP  # noqa: E402
from node.settings import Settings  # noqa: E402
from tests.factories import make_ct_series, write_series  # noqa: E402
from tests.orthanc import free_port, start_orthanc  # noqa: E402

ENV = {**os.environ, "TCP_NODELAY": "1"}
RUNS = 3
ASSOCIATIONS = 4
NODE = "ainode, in the node's process"


def send(files: list[Path], port: int, aec: str, associations: int) -> float:
    """Instances/s for ``files`` split over ``associations`` storescu processes at once."""
    shares = [files[i::associations] for i in range(associations)]
    began = time.perf_counter()
    senders = [
        subprocess.Popen(["storescu", "-aec", aec, "127.0.0.1", str(port), *map(str, share)],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for share in shares
    ]  # fmt: skip
    if any(sender.wait() != 0 for sender in senders):
        raise RuntimeError(f"storescu failed against {aec}")
    return len(files) / (time.perf_counter() - began)


def wait_port(port: int) -> None:
    for _ in range(100):
        echo = subprocess.run(["echoscu", "127.0.0.1", str(port)], env=ENV, capture_output=True)
        if echo.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on {port}")


@contextmanager
def storescp(root: Path) -> Iterator[tuple[int, str]]:
    port = free_port()
    root.mkdir()
    peer = subprocess.Popen(["storescp", "-od", str(root), str(port)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_port(port)
        yield port, "STORESCP"
    finally:
        peer.terminate()
        peer.wait()


@contextmanager
def orthanc(root: Path) -> Iterator[tuple[int, str]]:
    server = start_orthanc(root)
    try:
        yield server.dicom_port, "ORTHANC"
    finally:
        server.stop()


@contextmanager
def node(root: Path, receive_processes: int = 0) -> Iterator[tuple[int, str]]:
    settings = Settings(data_dir=root, dicom_port=free_port(), dicom_bind="127.0.0.1",
                        dicom_receive_processes=receive_processes)  # fmt: skip
    engine = make_engine(settings)
    upgrade_to_head(engine)
    scp = StorageSCP(settings, make_session_factory(engine))
    scp.start()
    try:
        yield settings.dicom_port, "AINODE"
    finally:
        scp.stop()
        engine.dispose()


@contextmanager
def node_with_processes(root: Path) -> Iterator[tuple[int, str]]:
    with node(root, RECEIVE_PROCESSES) as receiver:
        yield receiver


RECEIVE_PROCESSES = 2
NODE_PROCESSES = f"ainode, {RECEIVE_PROCESSES} receiving processes"
RECEIVERS = {
    "DCMTK storescp (no fsync)": storescp,
    "Orthanc": orthanc,
    NODE: node,
    NODE_PROCESSES: node_with_processes,
}


def measure(files: list[Path], root: Path, associations: int) -> dict[str, float]:
    """Median instances/s of each receiver; runs interleaved so load drifts hit all."""
    rates: dict[str, list[float]] = {name: [] for name in RECEIVERS}
    for run in range(RUNS):
        for name, receiver in RECEIVERS.items():
            folder = root / f"receiver{list(RECEIVERS).index(name)}-{associations}-{run}"
            with receiver(folder) as (port, aec):
                rates[name].append(send(files, port, aec, associations))
    return {name: statistics.median(values) for name, values in rates.items()}


def report(title: str, rates: dict[str, float]) -> None:
    print(title)
    for name, rate in rates.items():
        print(f"  {name:34s} {rate:8.1f} instances/s")
    for name in (NODE, NODE_PROCESSES):
        print(f"  {name}: {rates[name] / rates['Orthanc']:.2f}x Orthanc, "
              f"{rates[name] / rates['DCMTK storescp (no fsync)']:.2f}x storescp")  # fmt: skip


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        hu = rng.normal(0, 50, size=(count, 512, 512)).astype(np.float32)
        files = write_series(make_ct_series(hu, (1.0, 0.7, 0.7)), root / "series")
        one = measure(files, root, 1)
        four = measure(files, root, ASSOCIATIONS)
    print(f"receive: {count} CT instances of 512x512, median of {RUNS} runs, {os.cpu_count()} CPUs")
    report("(a) one association, storescu", one)
    report(f"(b) {ASSOCIATIONS} associations at once, {ASSOCIATIONS} storescu, "
           f"{count // ASSOCIATIONS} instances each", four)  # fmt: skip


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
