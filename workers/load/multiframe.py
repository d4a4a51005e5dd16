"""Enhanced (and legacy converted enhanced) multi-frame instances as slices.

This module owns reading each frame's place from the Per-Frame and Shared Functional
Groups into a :class:`~workers.load.slices.Slice`, refusing a multi-frame object that
places no frame or holds several stacks, and decoding its frames one at a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.pixels import iter_pixels

from workers.errors import SeriesNotAnalysable
from workers.load.files import describe, frame_count, transfer_syntax_name
from workers.load.slices import Slice, instance_pixel_spacing
from workers.pixels import functional_groups, group_macro, modality_transform, to_modality_values


def frame_slices(path: Path, ds: Dataset) -> list[Slice]:
    """The frames of one multi-frame instance as slices, placed by their functional groups.

    Refuses an object whose frames nothing places (a cine loop, an object stripped of
    its functional groups) and one holding several stacks.
    """
    count = frame_count(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        raise SeriesNotAnalysable(
            f"{describe(path, ds)} is a multi-frame image of {count} frames without "
            "Per-Frame Functional Groups: nothing places its frames in space (a cine "
            "loop, or an enhanced object stripped of its functional groups?); only "
            "multi-frame images that position every frame (enhanced or legacy converted "
            "enhanced CT/MR) can be analysed"
        )
    if len(per_frame) != count:
        raise SeriesNotAnalysable(
            f"{describe(path, ds)} declares {count} frames but describes "
            f"{len(per_frame)} in its Per-Frame Functional Groups"
        )

    slices = []
    stacks: Counter[str] = Counter()
    for frame in range(1, count + 1):
        groups = functional_groups(ds, frame)
        content = group_macro(groups, "FrameContentSequence")
        if content is not None and content.get("StackID") not in (None, ""):
            stacks[str(content.StackID)] += 1
        position = group_macro(groups, "PlanePositionSequence")
        orientation = group_macro(groups, "PlaneOrientationSequence")
        measures = group_macro(groups, "PixelMeasuresSequence") or Dataset()
        spacing = instance_pixel_spacing(measures) or instance_pixel_spacing(ds)
        thickness = measures.get("SliceThickness") or measures.get("SpacingBetweenSlices")
        slices.append(
            Slice(
                dataset=ds,
                frame=frame,
                number=str(frame),
                position=position.get("ImagePositionPatient") if position else None,
                orientation=orientation.get("ImageOrientationPatient") if orientation else None,
                pixel_spacing=spacing,
                thickness=thickness or ds.get("SliceThickness"),
                transform=modality_transform(ds, groups),
            )
        )
    if len(stacks) > 1:
        listed = ", ".join(f"{stack} ({n} frames)" for stack, n in sorted(stacks.items()))
        raise SeriesNotAnalysable(
            f"{describe(path, ds)} holds {len(stacks)} stacks of frames (Stack ID "
            f"{listed}): a job analyses one stack of parallel slices"
        )
    return slices


def decode_frames(
    path: Path,
    ds: Dataset,
    slices: Sequence[Slice],
    voxels: np.ndarray,
    pivot: float | None,
) -> None:
    """Decode every frame of one multi-frame instance into its slice of ``voxels``.

    Frames are decoded one at a time, in file order, so that a large object never
    holds all its stored frames and all its float32 slices at once.
    """
    slot = {piece.frame: index for index, piece in enumerate(slices)}
    frame = 0
    try:
        for frame, stored in enumerate(iter_pixels(ds), start=1):
            index = slot.get(frame)
            if index is None:
                continue
            if stored.shape != voxels.shape[1:]:
                raise SeriesNotAnalysable(
                    f"frame {frame} of {describe(path, ds)} decodes to shape "
                    f"{stored.shape}, not one greyscale frame of "
                    f"{voxels.shape[1]}x{voxels.shape[2]}"
                )
            to_modality_values(stored, slices[index].transform, voxels[index], pivot)
    except SeriesNotAnalysable:
        raise
    except Exception as exc:  # decoders raise many kinds (missing plugin, corrupt stream)
        raise SeriesNotAnalysable(
            f"cannot decode frame {frame + 1} of {describe(path, ds)} (transfer syntax "
            f"{transfer_syntax_name(ds)}): {exc}"
        ) from exc
    if frame < len(slices):
        raise SeriesNotAnalysable(
            f"{describe(path, ds)} holds pixel data for {frame} of its {len(slices)} frames"
        )
