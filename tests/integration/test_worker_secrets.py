"""The worker child of ``ainode serve`` gets its settings from a private file, never
from its environment (node.supervisor), and passwords may come from files
(AINODE_*_FILE, node.credentials).

A real node is started the worst way round: a STOW-RS destination's bearer token in
the serve process's own environment, the database password in a file. The worker
child's ``/proc/<pid>/environ`` then holds neither, nor any AINODE_ variable; its
settings file is readable by the node's user alone; and the child really works from
it: the job it runs plans the result for that destination.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from node.supervisor import WORKER_SETTINGS
from tests.factories import phantom_study
from tests.integration.test_serve_process import worker_child
from tests.node_process import start_node, wait_for
from tests.orthanc import Orthanc

TOKEN = "Bearer tok-3f9a1c77e2d54b08"
PASSWORD = "pg-5ecret-81d2"


def test_the_worker_child_environment_holds_no_credential(
    tmp_path: Path, postgres_url: str
) -> None:
    password_file = tmp_path / "postgres_password"
    password_file.write_text(PASSWORD + "\n")
    password_file.chmod(0o600)
    destinations = [
        {"name": "viewer", "stow_url": "http://127.0.0.1:9/dicom-web", "kinds": ["SR"],
         "http_headers": {"Authorization": TOKEN}},
    ]  # fmt: skip
    node = start_node(
        tmp_path / "node",
        destinations=json.dumps(destinations),
        database_url=postgres_url,  # trust authentication: the password is carried, unused
        database_password_file=str(password_file),
        delivery_backoff_seconds="60",
    )
    try:
        assert node.process is not None
        worker = wait_for(lambda: worker_child(node.process.pid), 60, what="the worker child")
        environ = Path(f"/proc/{worker}/environ").read_bytes().split(b"\0")
        command = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
        serve_environ = Path(f"/proc/{node.process.pid}/environ").read_bytes()

        Orthanc.store_to(phantom_study(tmp_path, 801, slices=12), "127.0.0.1", node.dicom_port,
                         "AINODE")  # fmt: skip

        def planned() -> list[dict] | None:
            jobs = node.get("/api/jobs")
            deliveries = [
                d
                for job in jobs  # type: ignore[union-attr]
                for result in job["results"]
                for d in result["deliveries"]
            ]
            return deliveries or None

        try:
            deliveries = wait_for(planned, 180, what="a result planned for the destination")
        except AssertionError:
            print(node.log())
            raise
    finally:
        node.stop()

    assert TOKEN.encode() in serve_environ  # given to serve the worst way...
    assert not any(TOKEN.encode() in v or PASSWORD.encode() in v for v in environ)
    assert not [v for v in environ if v.startswith(b"AINODE_")]  # ...none reaches the child
    settings_file = tmp_path / "node" / WORKER_SETTINGS
    assert command[command.index(b"--config") + 1] == str(settings_file.resolve()).encode()
    assert stat.S_IMODE(settings_file.stat().st_mode) == 0o600
    written = json.loads(settings_file.read_text())
    assert written["destinations"][0]["http_headers"] == {"Authorization": TOKEN}
    assert make_url(written["database_url"]).password == PASSWORD
    assert {d["destination"] for d in deliveries} == {"viewer"}  # the child read its file
