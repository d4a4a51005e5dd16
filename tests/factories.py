"""Synthetic DICOM test data: geometry-consistent single-frame CT series.

No package ships a real multi-slice CT series offline, so tests build their own.
``make_ct_series`` turns a HU array into CT Image Storage datasets carrying every
Type 1 and Type 2 attribute of the CT Image IOD (dciodvfy is clean on them), with
UIDs derived from the inputs so a test gets the same objects on every run.
``write_series`` stores them as PS3.10 files. Tests that need a broken series
(a missing slice, a tilted orientation, a duplicated position) build a good one
and edit the datasets before writing them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

from models.manifest import ModelManifest
from node.uids import derive_uid
from training.phantom import make_phantom

_STUDY_DATE = "20240102"
_STUDY_TIME = "080000"


def _ds(value: float) -> str:
    """A DS value within 16 characters that round-trips ``value`` closely enough."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text[:16]


def make_ct_series(
    hu: np.ndarray,
    spacing: tuple[float, float, float] = (2.5, 0.8, 0.8),
    *,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "PHANTOM",
    patient_name: str = "Phantom^Test",
    body_part: str = "CHEST",
    series_description: str = "Synthetic CT",
    series_number: int = 1,
    rescale: tuple[float, float] = (1.0, -1024.0),
) -> list[Dataset]:
    """CT Image Storage datasets, one per slice of ``hu`` (slices, rows, columns).

    Slice ``i`` lies at ``origin + i * spacing[0] * normal``, normal being the cross
    product of the row and column directions of ``orientation``. Pixels are stored
    as ``(hu - intercept) / slope`` rounded, in uint16 when that fits, else int16.
    UIDs not given are derived from the patient, the description, the geometry and
    the pixel values, so equal inputs give equal UIDs.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must be (slices, rows, columns), got shape {hu.shape}")
    slope, intercept = rescale
    stored = np.rint((hu.astype(np.float64) - intercept) / slope)
    if stored.min() >= 0 and stored.max() <= np.iinfo(np.uint16).max:
        pixels, representation = stored.astype(np.uint16), 0
    elif stored.min() >= np.iinfo(np.int16).min and stored.max() <= np.iinfo(np.int16).max:
        pixels, representation = stored.astype(np.int16), 1
    else:
        raise ValueError("hu does not fit 16-bit storage with this rescale")

    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row, col)
    origin_vec = np.asarray(origin, dtype=np.float64)

    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
    identity = (
        patient_id,
        series_description,
        str(spacing),
        str(tuple(orientation)),
        str(tuple(origin)),
        str(rescale),
        digest,
    )
    study_uid = study_uid or derive_uid("tests.factories", "study", patient_id)
    series_uid = series_uid or derive_uid("tests.factories", "series", study_uid, *identity)
    frame_uid = derive_uid("tests.factories", "frame-of-reference", series_uid)

    datasets = []
    for index in range(pixels.shape[0]):
        position = origin_vec + index * spacing[0] * normal
        sop_uid = derive_uid("tests.factories", "instance", series_uid, *identity, str(index))
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _STUDY_DATE
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = _STUDY_TIME
        ds.AccessionNumber = "ACC0001"
        ds.Modality = "CT"
        ds.Manufacturer = "ainode test factory"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Synthetic study"
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.BodyPartExamined = body_part
        ds.SliceThickness = _ds(spacing[0])
        ds.KVP = "120"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in orientation]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(np.dot(position, normal)))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[2])]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = representation
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "HU"
        ds.PixelData = pixels[index].tobytes()
        datasets.append(ds)
    return datasets


def write_series(datasets: Sequence[Dataset], directory: Path) -> list[Path]:
    """Write ``datasets`` as Explicit VR Little Endian PS3.10 files, one per instance."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def phantom_study(directory: Path, seed: int, slices: int, lesions: int = 1) -> list[Path]:
    """Files of a 512x512 chest CT phantom (one series, its own patient) under ``directory``."""
    phantom = make_phantom(
        np.random.default_rng(seed), shape=(slices, 512, 512), spacing=(2.0, 0.7, 0.7),
        lesions=lesions,
    )  # fmt: skip
    datasets = make_ct_series(phantom.hu, phantom.spacing, patient_id=f"PHANTOM{seed}")
    return write_series(datasets, directory / f"study-{seed}")


# SNOMED CT codes the fake models' segments and classes use.
LESION = {"value": "49755003", "scheme": "SCT", "meaning": "Morphologically Altered Structure"}
MASS = {"value": "4147007", "scheme": "SCT", "meaning": "Mass"}
ANATOMY = {"value": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"}
LUNG = {"value": "39607008", "scheme": "SCT", "meaning": "Lung"}
FAKE_NETWORK = {"architecture": "tests.none", "weights": "none.pt", "sha256": "0" * 64}


def fake_manifest(
    name: str,
    task: str,
    *,
    segments: Sequence[Mapping[str, object]] = (),
    classes: Sequence[Mapping[str, object]] = (),
    segmentation_type: str | None = None,
    **fields: object,
) -> ModelManifest:
    """The manifest of a model with no real network, for tests that encode its outputs.

    Version "1.0", title ``name``, accepts CT and a placeholder network unless
    ``fields`` says otherwise; ``fields`` may set any other top-level field too.
    ``outputs`` holds ``segments`` and ``classes`` when given, and
    ``segmentation_type`` when not None (else the manifest's default, binary).
    """
    outputs: dict[str, object] = {}
    if segments:
        outputs["segments"] = list(segments)
    if classes:
        outputs["classes"] = list(classes)
    if segmentation_type is not None:
        outputs["segmentation_type"] = segmentation_type
    data: dict[str, object] = {
        "name": name,
        "version": "1.0",
        "title": name,
        "task": task,
        "accepts": {"modality": ["CT"]},
        "network": FAKE_NETWORK,
        "outputs": outputs,
    }
    return ModelManifest.model_validate({**data, **fields})
