"""Fixtures the integration tests share: the web API tests' seeded app (over SQLite, then
PostgreSQL), and the encoder tests' sphere series with its SEG and SR encoded once per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.encoding import Encoded, Series, encode, segmentation_manifest, sphere_series
from tests.web_node import Node, served_node


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite under tmp_path, or a throwaway PostgreSQL database (unreachable = failure)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ainode.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[Node]:
    """The web app over a freshly seeded database (``tests.web_node.seed``)."""
    with served_node(database_url, tmp_path) as served:
        yield served


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    return sphere_series(tmp_path_factory.mktemp("ct"))


@pytest.fixture(scope="module")
def encoded(series: Series, tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    return encode(
        series, segmentation_manifest(), series.labels, tmp_path_factory.mktemp("results")
    )
