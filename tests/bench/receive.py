"""Receive throughput: the node's Storage SCP beside DCMTK's storescp and Orthanc.

Sends the same CT series (512x512 slices) with DCMTK's storescu, one association,
to each receiver in turn and prints instances/s and the node's ratio to each peer.
The node's figure includes what makes it safe: fsync, rename, directory fsync and the
database row for every instance. Run: `.venv/bin/python tests/bench/receive.py [N]`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
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


def send(files: list[Path], port: int, aec: str) -> float:
    began = time.perf_counter()
    subprocess.run(
        ["storescu", "-aec", aec, "127.0.0.1", str(port), *map(str, files)],
        check=True, env=ENV, capture_output=True,
    )  # fmt: skip
    return len(files) / (time.perf_counter() - began)


def wait_port(port: int) -> None:
    for _ in range(100):
        if (
            subprocess.run(
                ["echoscu", "127.0.0.1", str(port)], env=ENV, capture_output=True
            ).returncode
            == 0
        ):  # noqa: E501
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answers on {port}")


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = np.random.default_rng(0)
        hu = rng.normal(0, 50, size=(count, 512, 512)).astype(np.float32)
        files = write_series(make_ct_series(hu, (1.0, 0.7, 0.7)), root / "series")
        rates: dict[str, float] = {}

        port = free_port()
        (root / "storescp").mkdir()
        peer = subprocess.Popen(
            ["storescp", "-od", str(root / "storescp"), str(port)], env=ENV,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_port(port)
            rates["DCMTK storescp (no fsync)"] = send(files, port, "STORESCP")
        finally:
            peer.terminate()
            peer.wait()

        orthanc = start_orthanc(root / "orthanc")
        try:
            rates["Orthanc"] = send(files, orthanc.dicom_port, "ORTHANC")
        finally:
            orthanc.stop()

        settings = Settings(data_dir=root / "node", dicom_port=free_port(), dicom_bind="127.0.0.1")
        engine = make_engine(settings)
        upgrade_to_head(engine)
        scp = StorageSCP(settings, make_session_factory(engine))
        scp.start()
        try:
            rates["ainode SCP (fsync + index)"] = send(files, settings.dicom_port, "AINODE")
        finally:
            scp.stop()

    node = rates["ainode SCP (fsync + index)"]
    print(f"receive: {count} CT instances of 512x512, one association, storescu")
    for name, rate in rates.items():
        print(f"  {name:32s} {rate:8.1f} instances/s   node/peer = {node / rate:5.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
