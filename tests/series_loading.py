"""What the tests of ``workers.load`` share: shipped test files and the refusal of a series."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from workers.errors import SeriesNotAnalysable
from workers.load.series import load_series


def shipped_file(name: str) -> Path:
    """A file shipped offline by pydicom or pydicom-data; fails if it is not on disk."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"test file {name} is not installed"
    return Path(path)


def refusal(paths: list[Path]) -> str:
    """The reason ``load_series`` gives for refusing ``paths`` (fails if it loads them)."""
    with pytest.raises(SeriesNotAnalysable) as info:
        load_series(paths)
    return str(info.value)
