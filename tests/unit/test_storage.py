"""Durable writes: whole files or nothing, atomic replacement, no stray temp files."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.storage import DurableFolder


def test_write_creates_folders_and_replaces_atomically(tmp_path: Path) -> None:
    folder = DurableFolder(tmp_path / "spool")
    relative = Path("1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    assert folder.write(relative, [b"abc", b"def"]) == 6
    assert (tmp_path / "spool" / relative).read_bytes() == b"abcdef"
    assert folder.write(relative, b"new") == 3
    assert (tmp_path / "spool" / relative).read_bytes() == b"new"
    leftovers = [p.name for p in (tmp_path / "spool").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_failed_write_leaves_the_previous_file(tmp_path: Path) -> None:
    folder = DurableFolder(tmp_path)
    relative = Path("a/file.dcm")
    folder.write(relative, b"kept")
    # The second chunk is not bytes: the write fails after the first chunk went out.
    with pytest.raises(TypeError):
        folder.write(relative, [b"partial", 12345])  # type: ignore[list-item]
    assert (tmp_path / relative).read_bytes() == b"kept"
    assert not list(tmp_path.rglob("*.tmp"))
