"""Decoded series kept between the jobs of one analysis worker, so that a series is
decoded once for every model that takes it.

Routing makes one job per accepting model for a complete series, and a multimodal job
takes further series as inputs: without a cache, each of those jobs reads and decodes
the same files again, and decoding is often the longest step of a job.
``DecodedSeriesCache`` keeps the volumes ``load_series`` made, the least recently used
going first, within a budget of bytes (the float32 voxels and every temporal position:
``AINODE_DECODE_CACHE_BYTES``; 0 keeps nothing). A series larger than the whole budget
is decoded and used, not kept.

A volume is kept under the identity of the files it was decoded from
(``series_fingerprint``: each file's path, size, modification time and inode) and the
decoding limits it was checked against. An instance added, removed or replaced (the
spool writes a new file and renames it into place) gives another fingerprint, so a
changed series is decoded again without anyone telling the cache.

A kept volume is shared by every job that loads it, so its arrays are made read-only:
later steps work on their own copies (preprocessing copies before it changes a voxel),
and a step that wrote into a shared volume would fail loudly instead of changing the
input of the next job.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from workers.load.limits import DecodeLimits
from workers.load.series import load_series
from workers.volume import Volume

log = logging.getLogger(__name__)


def series_fingerprint(paths: Sequence[Path]) -> str | None:
    """What identifies this exact set of files: a digest of each one's path, size,
    modification time and inode, in the order given; None when one cannot be read (the
    loader then says why)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\n".encode())
    return f"{len(paths)}:{digest.hexdigest()}"


def volume_bytes(volume: Volume) -> int:
    """The memory a decoded volume holds: its voxels and every temporal position."""
    held = volume.voxels.nbytes
    if volume.timepoints is not None:
        held += volume.timepoints.nbytes
    return held


def _freeze(volume: Volume) -> None:
    for array in (volume.voxels, volume.timepoints, volume.slice_times):
        if array is not None:
            array.flags.writeable = False


class DecodedSeriesCache:
    """The decoded series of one worker process, bounded by ``budget_bytes``.

    ``decodes`` counts the series really decoded (``load_series`` calls), ``hits`` the
    loads answered from memory.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.decodes = 0
        self.hits = 0
        self._volumes: OrderedDict[tuple[str, DecodeLimits], tuple[Volume, int]] = OrderedDict()
        self._held = 0

    @property
    def held_bytes(self) -> int:
        return self._held

    def __len__(self) -> int:
        return len(self._volumes)

    def load(self, paths: Sequence[Path], limits: DecodeLimits | None = None) -> Volume:
        """The series at ``paths`` as ``load_series`` gives it, decoded again only when
        these files were not decoded (with these limits) before or were evicted since.
        Refusals (``SeriesNotAnalysable``) are raised as the loader raises them."""
        limits = limits or DecodeLimits()
        fingerprint = series_fingerprint(paths) if self.budget_bytes > 0 else None
        key = (fingerprint, limits) if fingerprint is not None else None
        if key is not None and key in self._volumes:
            self._volumes.move_to_end(key)
            self.hits += 1
            return self._volumes[key][0]
        self.decodes += 1
        volume = load_series(paths, limits)
        if key is not None:
            self._keep(key, volume)
        return volume

    def _keep(self, key: tuple[str, DecodeLimits], volume: Volume) -> None:
        size = volume_bytes(volume)
        if size > self.budget_bytes:
            log.info(
                "a decoded series of %.0f MiB is not kept: the decode cache holds %.0f MiB",
                size / 2**20, self.budget_bytes / 2**20,
            )  # fmt: skip
            return
        _freeze(volume)
        while self._volumes and self._held + size > self.budget_bytes:
            _evicted, (_volume, evicted_size) = self._volumes.popitem(last=False)
            self._held -= evicted_size
        self._volumes[key] = (volume, size)
        self._held += size

    def clear(self) -> None:
        self._volumes.clear()
        self._held = 0
