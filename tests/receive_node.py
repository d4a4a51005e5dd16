"""A Storage SCP in the test process with chosen settings, and senders for it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pynetdicom import AE

from node.acceptor.record import AssociationRecord
from node.db.migrate import upgrade_to_head
from node.db.session import make_engine, make_session_factory
from node.scp import StorageSCP
from node.settings import Settings
from tests.orthanc import free_port

CALLED = "AINODE"


@contextmanager
def running_scp(
    data_dir: Path, on_association: Callable[[AssociationRecord], None] | None = None,
    **settings: Any,
) -> Iterator[StorageSCP]:  # fmt: skip
    config = Settings(data_dir=data_dir, dicom_port=free_port(), dicom_bind="127.0.0.1", **settings)
    engine = make_engine(config)
    upgrade_to_head(engine)
    extra = {"on_association": on_association} if on_association is not None else {}
    scp = StorageSCP(config, make_session_factory(engine), **extra)
    scp.start()
    try:
        yield scp
    finally:
        scp.stop()
        engine.dispose()


def storescu(port: int, *files: Path, calling: str = "MODALITY") -> subprocess.CompletedProcess:
    """DCMTK storescu, Explicit VR Little Endian proposed first (sent as on disk)."""
    return subprocess.run(
        ["storescu", "-v", "-xe", "-aet", calling, "-aec", CALLED, "127.0.0.1", str(port),
         *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def pynetdicom_store(port: int, ds: Dataset | Path, calling: str = "SECONDSCU") -> Dataset:
    """C-STORE with pynetdicom as a second client; returns the status data set."""
    if isinstance(ds, Path):
        ds = dcmread(ds)
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED)
    assert assoc.is_established
    try:
        return assoc.send_c_store(ds)
    finally:
        assoc.release()


def spool_files(scp: StorageSCP) -> list[Path]:
    return sorted(p for p in scp.settings.spool_dir.rglob("*") if p.is_file())
