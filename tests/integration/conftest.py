"""Fixtures of the web API tests (``test_web_*``): the seeded app over SQLite, then PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
