"""Durable files: the one way the node puts bytes on disk that it has promised to keep.

A write goes to a temporary file in the destination folder, is fsynced, renamed over
the final name and the folder is fsynced, so that after a crash the file is either
whole or absent, never torn. Re-writing the same name is atomic (a duplicate C-STORE
replaces the earlier copy in one step).

A received instance is written as it arrives into ``spool/.incoming`` (same
filesystem, so keeping it is a rename), hashed while written and capped in size;
``sweep_spool`` removes what a crash left half done.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
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


INCOMING = ".incoming"  # received bytes not yet kept, on the spool's own filesystem


class IncomingFile:
    """A received data set as it arrives: written in chunks, hashed while written, capped.

    Once ``refusal`` is set (too large, or the disk nearly full) further bytes are
    dropped and the file emptied, so a sender cannot fill the disk with one instance;
    the instance is refused when its message ends. Nothing is held whole in memory.
    """

    def __init__(self, folder: Path, limit: int) -> None:
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=folder)
        self.name = name
        self.path = Path(name)
        self.limit = limit
        self.size = 0
        self.refusal: str | None = None
        self.kept = False
        self._digest = hashlib.sha256()
        # Unbuffered: each fragment goes from the socket's buffer to the page cache in one copy.
        self._file = os.fdopen(fd, "wb", buffering=0)

    def refuse(self, reason: str) -> None:
        if self.refusal is None:
            self.refusal = reason
            self._file.truncate(0)

    def write(self, data: bytes | memoryview) -> int:
        size = len(data)
        self.size += size
        if self.refusal is not None:
            return size
        if self.size > self.limit:
            self.refuse(f"instance larger than {self.limit} bytes (max instance bytes)")
            return size
        self._digest.update(data)
        view = memoryview(data)
        while view:  # a raw file may write less than asked
            view = view[self._file.write(view) or 0 :]
        return size

    def hexdigest(self) -> str:
        """sha256 of every byte written, as kept on disk."""
        return self._digest.hexdigest()

    def close(self) -> None:
        """Hand every byte to the filesystem and close; idempotent. Not yet durable:
        the round that keeps the file makes it so (:func:`make_durable`), and finds
        most of it written already: the disk starts on it here, without waiting."""
        if not self._file.closed:
            if self.refusal is None:
                start_writeback(self._file.fileno())
            self._file.close()

    def discard(self) -> None:
        """Remove the file unless it was kept; idempotent."""
        if not self._file.closed:
            self._file.close()
        if not self.kept:
            self.path.unlink(missing_ok=True)


def has_room(folder: Path, min_free: int) -> bool:
    """Whether the filesystem holding ``folder`` has at least ``min_free`` bytes free."""
    return shutil.disk_usage(folder).free >= min_free


def move_into(spool: DurableFolder, incoming: IncomingFile, relative: Path) -> Path:
    """Rename a whole, fsynced incoming file to its place in the spool; return the folder
    that gained the entry. The rename is durable only once that folder is fsynced
    (:func:`fsync_dirs`): the group committer fsyncs each folder once per round."""
    folder = spool.ensure_dir(relative.parent)
    if not incoming.kept:
        incoming.close()
        os.replace(incoming.path, folder / relative.name)
        incoming.kept = True
    return folder


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2), or None where the C library has none."""
    libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(libc, "syncfs", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int]
    return function


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2), or None where the C library has none."""
    function = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return function


_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now, without waiting (a hint:
    it makes nothing durable; where there is no sync_file_range it does nothing)."""
    function = _sync_file_range()
    if function is not None:
        function(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def make_durable(root: Path, files: list[Path], folders: set[Path]) -> None:
    """Make ``files`` (written and closed, not fsynced) and the entries renamed into
    ``folders`` durable, all of them under ``root``.

    One ``syncfs`` of ``root``'s filesystem does it in one journal commit whatever the
    number of files, where a fsync per file and per folder costs one commit each (which
    the filesystem serializes); without ``syncfs``, each is fsynced in turn.
    """
    syncfs = _syncfs()
    if syncfs is not None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if syncfs(fd) != 0:
                error = ctypes.get_errno()
                raise OSError(error, f"syncfs: {os.strerror(error)}")
        finally:
            os.close(fd)
        return
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in folders:
        _fsync_dir(folder)


def move_back(spool: DurableFolder, incoming: IncomingFile, relative: Path) -> None:
    """Undo :func:`move_into` (its row did not commit): the file is incoming again, and
    goes when the handler discards it. Already gone (replaced, then moved back by
    another instance of the same round) is fine."""
    if incoming.kept:
        incoming.kept = False
        with contextlib.suppress(FileNotFoundError):
            os.replace(spool.root / relative, incoming.path)


def sweep_spool(root: Path, indexed: set[str]) -> list[Path]:
    """Remove what a crash left in the spool: incoming and temporary files, and kept
    files that no Instance row describes (written, but their row never committed, so
    never acknowledged). Returns what was removed. Runs before the SCP listens."""
    removed: list[Path] = []
    if not root.exists():
        return removed
    for dirpath, _dirs, files in os.walk(root):
        folder = Path(dirpath)
        for name in files:
            path = folder / name
            relative = path.relative_to(root).as_posix()
            stale = (
                relative.startswith(INCOMING + "/")
                or name.endswith(".tmp")
                or (name.endswith(".dcm") and relative not in indexed)
            )
            if stale:
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
