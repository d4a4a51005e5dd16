"""Limits on what one C-STORE may claim: instance size, inflated size, free disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import func, select

from node.db.models import Instance
from node.status import StoreStatus
from tests.node_process import NodeProcess, node_environment, wait_for
from tests.receive_files import header, write_deflate_bomb, write_instance
from tests.receive_node import pynetdicom_store, running_scp, spool_files, storescu


def test_an_instance_over_the_size_limit_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    big = tmp_path / "big.dcm"
    write_instance(big, header(), 1 << 20)
    with running_scp(tmp_path / "var", max_instance_bytes=256 * 1024) as scp:
        status = pynetdicom_store(scp.settings.dicom_port, big)
        assert status.Status == StoreStatus.INSTANCE_TOO_LARGE
        assert "max instance bytes" in str(status.ErrorComment)
        assert spool_files(scp) == []
        small = tmp_path / "small.dcm"
        write_instance(small, header(), 4096)
        assert storescu(scp.settings.dicom_port, small).returncode == 0
        assert len(spool_files(scp)) == 1


def test_a_deflate_bomb_is_refused_without_inflating_it_in_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.dcm"
    assert write_deflate_bomb(bomb, header(), 64 << 20) < 1 << 20
    with running_scp(tmp_path / "var", max_inflated_bytes=16 << 20) as scp:
        status = pynetdicom_store(scp.settings.dicom_port, bomb)
        assert status.Status == StoreStatus.INSTANCE_TOO_LARGE
        assert "max inflated bytes" in str(status.ErrorComment)
        assert spool_files(scp) == []
        with scp.sessions() as session:
            assert session.scalar(select(func.count()).select_from(Instance)) == 0


def test_a_small_deflated_instance_is_kept_as_received(tmp_path: Path) -> None:
    deflated = tmp_path / "deflated.dcm"
    write_deflate_bomb(deflated, header(PatientName="Roe^Jane"), 1 << 20)
    with running_scp(tmp_path / "var") as scp:
        # dcmsend sends the deflated bytes as they are (storescu would inflate them).
        result = subprocess.run(
            ["dcmsend", "-aec", "AINODE", "--decompress-never", "127.0.0.1",
             str(scp.settings.dicom_port), str(deflated)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        with scp.sessions() as session:
            row = session.scalars(select(Instance)).one()
        assert row.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"


def test_under_the_free_space_watermark_stores_are_refused(tmp_path: Path) -> None:
    instance = tmp_path / "a.dcm"
    write_instance(instance, header(), 4096)
    with running_scp(tmp_path / "var", min_free_bytes=1 << 60) as scp:
        result = storescu(scp.settings.dicom_port, instance)
        assert "Refused: OutOfResources" in result.stderr, result.stderr
        status = pynetdicom_store(scp.settings.dicom_port, instance)
        assert status.Status == StoreStatus.OUT_OF_RESOURCES
        assert "disk nearly full" in str(status.ErrorComment)
        assert spool_files(scp) == []


def test_healthz_says_the_disk_is_nearly_full(tmp_path: Path) -> None:
    env, port, http_port = node_environment(tmp_path / "node", min_free_bytes=str(1 << 60))
    node = NodeProcess(tmp_path / "node", port, http_port, env)
    node.data_dir.mkdir(parents=True)
    node.process = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "serve"], env=env, start_new_session=True,
        stdout=node.log_path.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def health() -> httpx.Response | None:
            try:
                response = httpx.get(node.url + "/healthz", timeout=2)
            except httpx.HTTPError:
                return None
            return response if response.json().get("scp") else None

        response = wait_for(health, 120, 0.3, "the node's /healthz")
        assert response.status_code == 503
        assert response.json()["disk"] is False
    finally:
        node.stop()
