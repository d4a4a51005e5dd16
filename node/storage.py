"""Durable files: the one way the node puts bytes on disk that it has promised to keep.

A write goes to a temporary file in the destination folder, is fsynced, renamed over
the final name and the folder is fsynced, so that after a crash the file is either
whole or absent, never torn. Re-writing the same name is atomic (a duplicate C-STORE
replaces the earlier copy in one step).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableFolder:
    """A folder tree under ``root`` into which files are written durably."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known_dirs: set[Path] = set()

    def ensure_dir(self, relative: Path) -> Path:
        """Create ``root/relative`` and fsync every parent that gained an entry."""
        target = self.root / relative
        if target in self._known_dirs:
            return target
        missing: list[Path] = []
        probe = target
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        target.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):
            _fsync_dir(created.parent)
        self._known_dirs.add(target)
        return target

    def write(self, relative: Path, chunks: bytes | list[bytes]) -> int:
        """Write ``chunks`` to ``root/relative`` durably; return the number of bytes."""
        folder = self.ensure_dir(relative.parent)
        final = folder / relative.name
        tmp = folder / f".{relative.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        parts = [chunks] if isinstance(chunks, bytes) else chunks
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                    size += written
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(folder)
        return size
