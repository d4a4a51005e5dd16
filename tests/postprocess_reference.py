"""The postprocess step as it was before labels were decided on the prepared grid:
every segment's margin mapped back at full resolution, then the best positive one.

Kept only as the reference the faster ``workers.postprocess.postprocess`` must equal,
voxel for voxel (tests/unit/test_postprocess.py, tests/bench/postprocess.py).
"""

from __future__ import annotations

import numpy as np
import torch

from models.manifest import ModelTask, SegmentationType
from models.package import ModelPackage
from workers.preprocessing import Prepared
from workers.volume import ModelOutput

CHUNK_SLICES = 16
_UNSEEN_MARGIN = -100.0


def reference_postprocess(
    outputs: np.ndarray, prepared: Prepared, package: ModelPackage
) -> ModelOutput:
    """``workers.postprocess.postprocess`` as it was: the exact path for every voxel."""
    manifest = package.manifest
    if manifest.task is not ModelTask.SEGMENTATION:
        return ModelOutput(
            probabilities={
                c.name: float(outputs[:, i].max()) for i, c in enumerate(manifest.outputs.classes)
            }
        )
    segments = manifest.outputs.segments
    lookup = torch.tensor([0] + [s.label for s in segments], dtype=torch.uint8)
    labels = np.empty(prepared.source_shape, dtype=np.uint8)
    fractional = manifest.outputs.segmentation_type is SegmentationType.FRACTIONAL
    probabilities = (
        np.empty((len(segments), *prepared.source_shape), dtype=np.float32) if fractional else None
    )
    fill = _UNSEEN_MARGIN if fractional else 0.0
    chunk = CHUNK_SLICES if prepared.slicewise else outputs.shape[1]
    with torch.inference_mode():
        for start in range(0, outputs.shape[1], chunk):
            logits = outputs[:, start : start + chunk]
            margins = torch.from_numpy(prepared.to_source(logits[1:] - logits[:1], "linear", fill))
            stop = start + margins.shape[1]
            best = margins.max(dim=0)
            channel = torch.where(best.values > 0, best.indices + 1, 0)
            labels[start:stop] = lookup[channel].numpy()
            if probabilities is not None:
                background = torch.zeros_like(margins[:1])
                probabilities[:, start:stop] = torch.softmax(
                    torch.cat((background, margins)), dim=0
                )[1:].numpy()
    return ModelOutput(labels=labels, segment_probabilities=probabilities)
