"""The shipped container deployment (deploy/): no default password, no password in an
environment, the web published on the host's loopback only, Redis with requirepass
from its secret and its append-only file on.

The compose file is checked by docker-compose itself (``config``, which needs no
Docker engine) and its resolved form is read back; the Redis service's own start
command is run with a real redis-server.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest
import redis
import yaml

from tests.node_process import wait_for
from tests.orthanc import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECRETS = ("postgres_password", "redis_password", "ainode.yaml")


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """deploy/docker-compose.yml as docker-compose resolves it, secrets made as the
    file's own instructions say."""
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose is not installed (tests/peers.sh installs it)")
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("secrets"))
    (copy / "secrets").mkdir(mode=0o700)
    for name in SECRETS[:2]:
        (copy / "secrets" / name).write_text("0123abcd" * 8 + "\n")
    shutil.copy(DEPLOY / "ainode.example.yaml", copy / "secrets" / "ainode.yaml")
    command = [tool, "-f", str(copy / "docker-compose.yml")]
    checked = subprocess.run([*command, "config", "-q"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    resolved = subprocess.run([*command, "config"], capture_output=True, text=True, check=True)
    return yaml.safe_load(resolved.stdout)


def test_no_password_is_written_in_the_deployment() -> None:
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace").lower()
            assert "change-me" not in text, path
    assert "AINODE_HTTP_BIND=0.0.0.0" not in (DEPLOY / "Dockerfile").read_text()


def test_no_service_gets_a_password_in_its_environment(compose: dict) -> None:
    for name, service in compose["services"].items():
        environment = service.get("environment") or {}
        for key, value in environment.items():
            assert not re.search(r"PASSWORD$|SECRET$|TOKEN$", key), (name, key)
            assert not re.search(r"://[^/@]*:[^/@]*@", str(value)), (name, key, value)
    node = compose["services"]["node"]["environment"]
    assert node["AINODE_DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert node["AINODE_BROKER_PASSWORD_FILE"] == "/run/secrets/redis_password"
    postgres = compose["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert set(compose["secrets"]) == set(SECRETS)
    for role in ("node", "worker"):
        assert {s["source"] for s in compose["services"][role]["secrets"]} == set(SECRETS)


def test_only_the_dicom_port_faces_the_network(compose: dict) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "worker"):
        assert not services[name].get("ports"), name
    published = services["node"]["ports"]
    web = [p for p in published if str(p).startswith("127.0.0.1:8080:")]
    dicom = [p for p in published if isinstance(p, dict) and p.get("target") == 11112]
    assert len(web) == 1 and len(dicom) == 1 and len(published) == 2, published


def test_the_redis_service_requires_its_secret_and_keeps_an_append_only_file(
    compose: dict, tmp_path: Path
) -> None:
    """The service's own command, with the secret's and data's paths and a free port
    substituted, run with this machine's redis-server."""
    shell, flag, script = compose["services"]["redis"]["command"]
    assert (shell, flag) == ("sh", "-c")
    password = "5ecret" * 6
    (tmp_path / "redis_password").write_text(password + "\n")
    (tmp_path / "data").mkdir()
    port = free_port()
    script = (
        script.replace("$$", "$")
        .replace("/run/secrets/redis_password", str(tmp_path / "redis_password"))
        .replace("dir /data", f"dir {tmp_path / 'data'}")
        .replace("redis-server -", f"redis-server - --port {port} --bind 127.0.0.1")
    )
    server = subprocess.Popen(["sh", "-c", script], stdout=subprocess.DEVNULL)
    try:
        authenticated = redis.Redis(port=port, password=password, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(authenticated.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, 20, 0.1, "redis-server started by the compose command")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        assert authenticated.config_get("appendonly") == {"appendonly": "yes"}
        (redis_server,) = [
            child
            for child in psutil.Process(server.pid).children(recursive=True)
            if child.name() == "redis-server"
        ]
        assert password not in " ".join(redis_server.cmdline())
        assert password not in " ".join(redis_server.environ().values())
    finally:
        for process in psutil.Process(server.pid).children(recursive=True):
            process.terminate()
        server.terminate()
        server.wait(timeout=20)
