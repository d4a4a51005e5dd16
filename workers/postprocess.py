"""Postprocessing: a network's outputs as findings on the source grid of the series.

This module owns the pipeline's postprocess step (``postprocess``): mapping what
``workers.infer`` returns on the prepared grid back through ``Prepared.to_source``
(the inverse of preprocessing) onto the volume's own geometry, and turning it into a
:class:`~workers.volume.ModelOutput`: segment label values (and, for a fractional
SEG, each segment's probability per voxel) for a segmentation model, one probability
per class for a classifier.
"""

from __future__ import annotations

import numpy as np
import torch

from models.manifest import ModelTask, SegmentationType
from models.package import ModelPackage
from workers.postprocess_labels import CHUNK_SLICES, UNSURE, labels_of_margins, map_labels
from workers.postprocess_stencil import source_stencil
from workers.preprocessing import Prepared
from workers.volume import ModelOutput

# The logit margin over background given to source voxels no prepared voxel covers,
# when probabilities are kept: certain background (its probability is below 1e-40),
# yet finite, so that interpolating next to it stays a number.
_UNSEEN_MARGIN = -100.0


def postprocess(outputs: np.ndarray, prepared: Prepared, package: ModelPackage) -> ModelOutput:
    """Outputs of ``workers.infer.infer`` as a ``ModelOutput`` on the source grid.

    Segmentation: each segment's logit margin over background is mapped back linearly
    (interpolation is linear, so this is the margin of the mapped logits); the best
    positive margin's segment wins, which is an arg-max, but max() is several times
    faster than argmax() on CPU. Its channel c becomes the label value of the
    manifest's c-th segment. The labels are decided on the prepared grid wherever
    that gives the same label, and interpolated only elsewhere
    (``workers.postprocess_labels``). Classification: a series' probability for a
    class is its maximum over the slices.

    A manifest asking for a fractional SEG also gets ``segment_probabilities``: the
    softmax of the mapped logits, background included, without its background row, so
    a voxel's label is its most probable channel. Voxels the network never saw (cropped
    away) are then certain background, in the labels too, rather than the even odds
    that zero margins would give.
    """
    manifest = package.manifest
    if manifest.task is not ModelTask.SEGMENTATION:
        # Prepared slice k is source slice k when the steps were slicewise: the scores
        # per slice then say which images show the finding (workers.critical).
        per_slice = (
            manifest.network.spatial_dims == 2
            and prepared.slicewise
            and outputs.shape[0] == prepared.source_shape[0]
        )
        return ModelOutput(
            probabilities={
                c.name: float(outputs[:, i].max()) for i, c in enumerate(manifest.outputs.classes)
            },
            slice_probabilities=outputs.astype(np.float32, copy=False) if per_slice else None,
        )
    segments = manifest.outputs.segments
    lookup = np.array([0] + [s.label for s in segments], dtype=np.uint8)
    if manifest.outputs.segmentation_type is SegmentationType.FRACTIONAL:
        return _fractional(outputs, prepared, torch.from_numpy(lookup))
    # UNSURE marks the voxels left to interpolation, so it cannot be a channel too.
    fast = len(lookup) <= UNSURE and len(outputs) == len(lookup)
    stencil = source_stencil(prepared) if fast else None
    return ModelOutput(labels=map_labels(outputs, prepared, lookup, stencil))


def _fractional(outputs: np.ndarray, prepared: Prepared, lookup: torch.Tensor) -> ModelOutput:
    """Labels and each segment's probability, from every margin mapped back."""
    labels = np.empty(prepared.source_shape, dtype=np.uint8)
    # Four bytes per voxel and segment.
    probabilities = np.empty((len(outputs) - 1, *prepared.source_shape), dtype=np.float32)
    chunk = CHUNK_SLICES if prepared.slicewise else outputs.shape[1]
    with torch.inference_mode():
        for start in range(0, outputs.shape[1], chunk):
            logits = outputs[:, start : start + chunk]
            margins = torch.from_numpy(
                prepared.to_source(logits[1:] - logits[:1], "linear", _UNSEEN_MARGIN)
            )
            stop = start + margins.shape[1]
            labels[start:stop] = labels_of_margins(margins, lookup)
            probabilities[:, start:stop] = _segment_probabilities(margins).numpy()
    return ModelOutput(labels=labels, segment_probabilities=probabilities)


def _segment_probabilities(margins: torch.Tensor) -> torch.Tensor:
    """Each segment's softmax probability from its logit margins over background.

    Softmax does not change when every logit is shifted alike, so the margins (the
    logits less the background's) with a background margin of 0 give the softmax of
    the logits themselves.
    """
    background = torch.zeros_like(margins[:1])
    return torch.softmax(torch.cat((background, margins)), dim=0)[1:]
