"""Memory of the receiving process: flat over many instances, a huge one and a bomb.

Starts only the Storage SCP in its own process (as `ainode serve` starts it) and
prints its RSS before, after and at peak (VmHWM, reset between phases) for: 5,000
small instances (DCMTK storescu, one association), one 2 GiB instance (written to
disk by streaming, sent by storescu from disk) and a ~1 MiB Deflated upload that
inflates to 1 GiB (dcmsend, bytes as they are). Figures only, no assertions.
Run: `.venv/bin/python tests/bench/receive_memory.py [small_count] [big_GiB]`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.orthanc import free_port  # noqa: E402
from tests.receive_files import header, write_deflate_bomb, write_instance  # noqa: E402

SCP_ONLY = """
import threading
from node.db.migrate import upgrade_to_head
from node.db.session import make_engine, make_session_factory
from node.scp import StorageSCP
from node.settings import Settings
settings = Settings.load()
engine = make_engine(settings)
upgrade_to_head(engine)
StorageSCP(settings, make_session_factory(engine)).start()
threading.Event().wait()
"""
ENV = {**os.environ, "TCP_NODELAY": "1"}


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in bytes."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def mib(value: int) -> str:
    return f"{value / 2**20:8.1f} MiB"


def phase(name: str, pid: int, command: list[str]) -> None:
    reset_peak(pid)
    before, _ = memory(pid)
    began = time.perf_counter()
    result = subprocess.run(command, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    after, peak = memory(pid)
    outcome = "ok" if result.returncode == 0 else f"exit {result.returncode}"
    tail = (result.stdout + result.stderr).strip().splitlines()[-1:] or [""]
    print(
        f"{name:32} RSS before {mib(before)}  after {mib(after)}  peak {mib(peak)}"
        f"  (+{mib(peak - before).strip()})  {seconds:7.1f} s  {outcome}: {tail[0][:60]}"
    )


def main(small: int, big_gib: float) -> None:
    with tempfile.TemporaryDirectory(dir=Path.cwd() / "var" if (Path.cwd() / "var").is_dir()
                                     else None) as tmp:  # fmt: skip
        root = Path(tmp)
        port = free_port()
        env = {k: v for k, v in ENV.items() if not k.startswith("AINODE_")}
        env.update(AINODE_DATA_DIR=str(root / "node"), AINODE_DICOM_PORT=str(port),
                   AINODE_DICOM_BIND="127.0.0.1", AINODE_MIN_FREE_BYTES="0")  # fmt: skip
        scp = subprocess.Popen([sys.executable, "-c", SCP_ONLY], env=env,
                               cwd=Path(__file__).resolve().parents[2])  # fmt: skip
        try:
            for _ in range(300):
                if subprocess.run(["echoscu", "-aec", "AINODE", "127.0.0.1", str(port)],
                                  capture_output=True).returncode == 0:  # fmt: skip
                    break
                time.sleep(0.1)
            small_dir = root / "small"
            small_dir.mkdir()
            files = []
            for i in range(small):
                path = small_dir / f"{i}.dcm"
                write_instance(path, header(f"1.2.826.0.1.3680043.8.498.7.{i}"), 8 << 10)
                files.append(str(path))
            storescu = ["storescu", "-xe", "-aec", "AINODE", "127.0.0.1", str(port)]
            phase(f"{small} small instances", scp.pid, storescu + files)
            big = root / "big.dcm"
            size = write_instance(big, header("1.2.826.0.1.3680043.8.498.8.1"),
                                  int(big_gib * 2**30))  # fmt: skip
            phase(f"one {size / 2**30:.2f} GiB instance", scp.pid, storescu + [str(big)])
            big.unlink()
            bomb = root / "bomb.dcm"
            packed = write_deflate_bomb(bomb, header("1.2.826.0.1.3680043.8.498.8.2"), 1 << 30)
            dcmsend = ["dcmsend", "-aec", "AINODE", "--decompress-never", "127.0.0.1", str(port)]
            phase(f"deflate bomb {packed / 2**20:.1f} MiB->1 GiB", scp.pid, dcmsend + [str(bomb)])
        finally:
            scp.terminate()
            scp.wait()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000,
         float(sys.argv[2]) if len(sys.argv) > 2 else 2.0)  # fmt: skip
