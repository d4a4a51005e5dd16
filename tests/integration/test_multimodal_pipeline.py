"""A multimodal job through the worker's pipeline: a CT and a PET series of one study.

The PET series lies on a coarser grid in the CT's frame of reference; the node must
bring it onto the CT grid and feed both as channels. The test network (fixed weights)
calls a voxel "hot" from the PET channel alone, so the SEG it produces lines up with
the phantom's lesions on the CT only if the PET was resampled to the right place.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import torch
from pydicom import dcmwrite
from torch import nn

from models.registry import open_package
from tests.dicom_checks import dciodvfy_errors
from tests.factories import make_ct_series, write_series
from tests.model_packages import CPU, write_package
from training.phantom import make_phantom
from workers.infer import NetworkCache
from workers.pipeline import analyze

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"


def hot_from_second_channel() -> nn.Conv2d:
    """Background logit 0; foreground logit = channel 1 - 0.5 (PET scaled to [0, 1])."""
    conv = nn.Conv2d(2, 2, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1, 1] = 1.0
        conv.bias.copy_(torch.tensor([0.0, -0.5]))
    return conv


def test_ct_and_pet_series_become_one_segmentation(tmp_path: Path) -> None:
    phantom = make_phantom(
        np.random.default_rng(3), shape=(10, 128, 128), spacing=(3.0, 1.5, 1.5), lesions=2
    )
    assert phantom.has_lesion
    ct = make_ct_series(phantom.hu, phantom.spacing, series_description="CT")
    # PET: uptake 1 in tissue, 10 in the lesions, on a grid twice as coarse in-plane.
    uptake = np.where(phantom.labels[:, ::2, ::2] == 2, 10.0, 1.0).astype(np.float32)
    spacing = (phantom.spacing[0], phantom.spacing[1] * 2, phantom.spacing[2] * 2)
    pet = make_ct_series(
        uptake, spacing, study_uid=str(ct[0].StudyInstanceUID),
        series_description="PET", series_number=2, rescale=(0.01, 0.0),
    )  # fmt: skip
    for ds in pet:
        ds.Modality = "PT"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = PET_IMAGE_STORAGE
        ds.FrameOfReferenceUID = ct[0].FrameOfReferenceUID
    ct_paths = write_series(ct, tmp_path / "ct")
    pet_paths = write_series(pet, tmp_path / "pet")

    folder = write_package(
        tmp_path / "ct-pet-hot",
        hot_from_second_channel(),
        roles=("pet",),
        preprocessing=[{"step": "scale", "low": 0, "high": 10}],
    )
    analysis = analyze(
        ct_paths, open_package(folder), CPU, NetworkCache(), additional_paths=[pet_paths]
    )

    truth = phantom.labels == 2
    kinds = [kind for kind, _ in analysis.objects]
    assert kinds == ["SEG", "SR"]
    found = analysis.findings["segments"]["Bright"]["voxels"]
    print(f"lesion voxels: truth {int(truth.sum())}, found {found}")
    seg = analysis.objects[0][1]
    assert seg.StudyInstanceUID == ct[0].StudyInstanceUID
    mask = (
        hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
            source_sop_instance_uids=[str(ds.SOPInstanceUID) for ds in ct],
            segment_numbers=[1],
            assert_missing_frames_are_empty=True,
        )[..., 0]
        > 0
    )
    dice = 2 * np.logical_and(mask, truth).sum() / (mask.sum() + truth.sum())
    print(f"Dice against the lesions on the CT grid: {dice:.3f}")
    # Linear resampling of a twice-coarser PET blurs the lesion edge by about a voxel.
    assert dice >= 0.75
    for kind, dataset in analysis.objects:
        buffer = BytesIO()
        dcmwrite(buffer, dataset, enforce_file_format=True)
        path = tmp_path / f"{kind}.dcm"
        path.write_bytes(buffer.getvalue())
        assert not dciodvfy_errors(path), kind
