"""Fixtures for the real peers: Orthanc, Redis, PostgreSQL, and the node as a process."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from tests.orthanc import Orthanc, start_orthanc

MACHINE_REDIS = "redis://127.0.0.1:6379"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A plain Orthanc (no routing) as the archive."""
    peer = start_orthanc(tmp_path / "orthanc")
    yield peer
    peer.stop()


@pytest.fixture
def machine_redis_url() -> Iterator[str]:
    """A private database number on the machine's Redis, emptied before and after."""
    client = redis.Redis.from_url(MACHINE_REDIS, socket_connect_timeout=2)
    client.ping()  # fails loudly when Redis is not running
    db = 1 + secrets.randbelow(15)
    url = f"{MACHINE_REDIS}/{db}"
    scoped = redis.Redis.from_url(url)
    scoped.flushdb()
    yield url
    scoped.flushdb()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database on the machine's server."""
    name = f"ainode_test_{secrets.token_hex(4)}"
    admin = psycopg2.connect(POSTGRES_ADMIN, connect_timeout=5)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    with admin.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()
