"""Who a result is and what every result shares: its UIDs and its common attributes.

The one place that makes result UIDs. ``ResultUIDs`` holds the SEG, SR, Secondary
Capture and Key Object Selection series and instance UIDs of one job, each derived
(``node.uids.derive_uid``) from the source instance UIDs, the model name and version and
the object kind, so a re-run of the same job yields the same UIDs and never duplicates
objects in the archive; the UIDs inside a result (each SC image, segment and class
tracking UIDs, the device observer, the dimension organization) derive from these here
too.

It also owns the attributes the SEG, the SR and the SC images share: manufacturer,
series descriptions and numbers, software versions and device serial number, content
date and time taken from the source, the completed source headers the patient and
study modules are copied from, and the step that makes highdicom's output depend
only on the inputs (same bytes on a re-run).
"""

from __future__ import annotations

import copy
import datetime
import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DA, TM

from models.manifest import ModelManifest
from node.uids import derive_uid
from workers.volume import Volume

logger = logging.getLogger(__name__)

MANUFACTURER = "ainode"
DEMONSTRATION_NOTICE = " (DEMO, NOT FOR CLINICAL USE)"
LO_LENGTH = 64  # Long String, the VR of descriptions, labels and equipment names
_SERIES_NUMBER_OFFSET = 1000
_UNSTATED_DEIDENTIFICATION = "not stated by the source images"
_TYPE_2_PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


# UIDs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ResultUIDs:
    """The series and instance UIDs of one job's results.

    ``sc_instance`` is not an instance of its own: each Secondary Capture image's UID
    derives from it and its slice (``sc_image``).
    """

    seg_series: str
    seg_instance: str
    sr_series: str
    sr_instance: str
    sc_series: str
    sc_instance: str
    ko_series: str  # the Key Object Selection flagging a critical finding's images
    ko_instance: str

    @classmethod
    def of_job(
        cls, source_sop_uids: Iterable[str], model_name: str, model_version: str
    ) -> ResultUIDs:
        """The UIDs of the results of ``model_name`` ``model_version`` on the sources.

        The order of the source instances does not matter.
        """
        base = ("ainode-result", model_name, model_version, sorted(source_sop_uids))

        def uid(kind: str) -> str:
            return derive_uid(*base, kind)

        # "overlay" is the SC kind's name in the derivation: kept so that UIDs of
        # results written before stay the same.
        return cls(
            seg_series=uid("seg-series"),
            seg_instance=uid("seg-instance"),
            sr_series=uid("sr-series"),
            sr_instance=uid("sr-instance"),
            sc_series=uid("overlay-series"),
            sc_instance=uid("overlay-instance"),
            ko_series=uid("ko-series"),
            ko_instance=uid("ko-instance"),
        )

    @classmethod
    def of_volume(cls, volume: Volume, manifest: ModelManifest) -> ResultUIDs:
        """The UIDs of ``manifest``'s results on the source instances of ``volume``."""
        return cls.of_job(
            (str(ds.SOPInstanceUID) for ds in volume.datasets), manifest.name, manifest.version
        )

    def sc_image(self, slice_index: int) -> str:
        """The SOP Instance UID of the Secondary Capture image of slice ``slice_index``."""
        return sc_image_uid(self.sc_instance, slice_index)


def sc_image_uid(sc_instance_uid: str, slice_index: int) -> str:
    """The SOP Instance UID of the SC image of slice ``slice_index`` (0-based, volume
    order), under the series' base ``sc_instance_uid``."""
    return derive_uid("ainode-overlay-instance", sc_instance_uid, str(slice_index))


def segment_tracking_uid(seg_instance_uid: str, segment_number: int) -> str:
    """The tracking UID of a segment, shared by the SEG and the SR that measures it."""
    return derive_uid("ainode-segment-tracking", seg_instance_uid, str(segment_number))


def class_tracking_uid(sr_instance_uid: str, class_name: str) -> str:
    """The tracking UID of a class's measurement group in the report."""
    return derive_uid("ainode-class-tracking", sr_instance_uid, class_name)


def device_observer_uid(manifest: ModelManifest) -> str:
    """The Device Observer UID of the model in a report: one per model and version."""
    return derive_uid("ainode-device-observer", manifest.name, manifest.version)


def dimension_organization_uid(instance_uid: str) -> str:
    """The Dimension Organization UID of a multi-frame result, in place of a random one."""
    return derive_uid("ainode-dimension-organization", instance_uid)


# Shared attributes ----------------------------------------------------------


def result_description(manifest: ModelManifest, kind: str) -> str:
    """A Long String naming the model and ``kind``, marked when it is a demonstration."""
    notice = DEMONSTRATION_NOTICE if manifest.demonstration else ""
    return f"{manifest.title} {kind}"[: LO_LENGTH - len(notice)] + notice


def software_versions(manifest: ModelManifest) -> list[str]:
    """The node's version and the model's, as the results' Software Versions."""
    try:
        node_version = importlib.metadata.version("ainode")
    except importlib.metadata.PackageNotFoundError:
        node_version = "unknown"
    return [
        f"ainode {node_version}"[:LO_LENGTH],
        f"{manifest.name} {manifest.version}"[:LO_LENGTH],
    ]


def device_serial_number(manifest: ModelManifest) -> str:
    """The serial number of the 'device' that made a result: the model and its version."""
    return f"{manifest.name}-{manifest.version}"[:LO_LENGTH]


def default_series_number(source: Dataset, offset: int) -> int:
    """The source's Series Number plus 1000 plus ``offset`` (0 for SEG, 1 for SR)."""
    try:
        base = int(source.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        base = 0
    return max(base, 0) + _SERIES_NUMBER_OFFSET + offset


def content_datetime(volume: Volume) -> tuple[datetime.date, datetime.time]:
    """Content Date and Time of a result, taken from the source so they are reproducible.

    A result's content is a reading of the source images, so it carries their date:
    the source series' date and time, else the study's, else the images' content
    date and time. Only a source with none of them gets the current time.
    """
    source = volume.datasets[0]
    for date_keyword, time_keyword in (
        ("SeriesDate", "SeriesTime"),
        ("StudyDate", "StudyTime"),
        ("ContentDate", "ContentTime"),
        ("AcquisitionDate", "AcquisitionTime"),
    ):
        date_value = source.get(date_keyword)
        if not date_value:
            continue
        try:
            date = DA(date_value)
            time_value = source.get(time_keyword)
            time = TM(time_value) if time_value else datetime.time(0, 0)
        except (ValueError, TypeError):
            continue
        if date is not None and time is not None:
            return date, time
    logger.warning("source series has no date; the result's content date is the current time")
    now = datetime.datetime.now()
    return now.date(), now.time().replace(microsecond=0)


def make_deterministic(dataset: Dataset, instance_uid: str) -> None:
    """Replace what highdicom derives from the clock or a random UID.

    Instance Creation Date/Time and Contribution DateTime (both Type 3) are removed
    rather than faked; the Dimension Organization UID is derived from the instance.
    """
    for keyword in ("InstanceCreationDate", "InstanceCreationTime"):
        if keyword in dataset:
            delattr(dataset, keyword)
    for item in dataset.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            del item.ContributionDateTime
    if "DimensionOrganizationSequence" in dataset:
        uid = dimension_organization_uid(instance_uid)
        for item in dataset.DimensionOrganizationSequence:
            item.DimensionOrganizationUID = uid
        for item in dataset.get("DimensionIndexSequence", []):
            item.DimensionOrganizationUID = uid


# Source headers -------------------------------------------------------------


def source_instances(volume: Volume) -> list[Dataset]:
    """The distinct source instances of ``volume``, in slice order.

    One per slice for a series of single-frame images; the one instance, once, when
    the volume is the frames of a multi-frame image (``volume.frame_numbers`` set).
    """
    if volume.frame_numbers is None:
        return list(volume.datasets)
    return [volume.datasets[0]]


def source_headers(volume: Volume) -> list[Dataset]:
    """The source instances, the first completed with empty patient and study attributes.

    highdicom copies the patient and study modules from the first source image and
    reads their Type 2 attributes directly, so an archive's image without, say, an
    Accession Number would stop it. A copy of that one header gets the missing ones,
    empty, as the IOD allows (and a De-identification Method when the source says
    its identity was removed but not how); the volume's own headers are untouched. A
    multi-frame source's copy also gets its plane orientation and pixel measures in
    the shared functional groups, where highdicom reads them (an enhanced object may
    repeat them per frame instead; the loader checked that they agree). A Pixel Spacing
    or Slice Thickness that is not positive (a radiograph's "0\\0") is left out of the
    copy, so no result repeats it (:func:`_drop_unmeasured_spacing`).
    """
    sources = source_instances(volume)
    return [completed_header(sources[0], volume.frame_numbers is not None), *sources[1:]]


def completed_header(source: Dataset, multi_frame: bool = False) -> Dataset:
    """A copy of one source header completed as :func:`source_headers` completes the
    first (``multi_frame``: the source is a multi-frame image): the header a result
    copies its patient and study modules from."""
    first = copy.deepcopy(source)
    for keyword in _TYPE_2_PATIENT_AND_STUDY:
        if keyword not in first:
            setattr(first, keyword, "")
    if (
        str(first.get("PatientIdentityRemoved", "")).upper() == "YES"
        and not first.get("DeidentificationMethod")
        and not first.get("DeidentificationMethodCodeSequence")
    ):
        # Identity removed requires the method (Type 1C); a source stating the one
        # without the other would make every result invalid, so the method is named
        # as unknown rather than the de-identification fact dropped.
        first.DeidentificationMethod = _UNSTATED_DEIDENTIFICATION
    if multi_frame:
        _share_frame_geometry(first)
    _drop_unmeasured_spacing(first)
    return first


def _drop_unmeasured_spacing(source: Dataset) -> None:
    """Remove Pixel Spacing and Slice Thickness values that are not positive from
    ``source`` and its shared Pixel Measures: highdicom copies them into the SEG's
    Pixel Measures, where zero is an error (PS3.3 C.7.6.16.2.1; dciodvfy says so). The
    source then states no spacing, which is the truth; the loader read it so too."""
    holders = [source]
    shared = source.get("SharedFunctionalGroupsSequence")
    if shared:
        holders += list(shared[0].get("PixelMeasuresSequence") or ())
    for holder in holders:
        for keyword in ("PixelSpacing", "SliceThickness"):
            if keyword in holder and not positive_values(holder.get(keyword)):
                delattr(holder, keyword)


def positive_values(value: object) -> bool:
    """Whether an attribute's value(s) are all numbers above zero (a stated spacing)."""
    values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    try:
        return len(values) > 0 and all(float(v) > 0 for v in values)
    except (TypeError, ValueError):
        return False


def _share_frame_geometry(source: Dataset) -> None:
    """Copy frame 1's plane orientation and pixel measures to the shared groups if absent."""
    per_frame = source.get("PerFrameFunctionalGroupsSequence")
    if not per_frame:
        return
    if not source.get("SharedFunctionalGroupsSequence"):
        source.SharedFunctionalGroupsSequence = [Dataset()]
    shared = source.SharedFunctionalGroupsSequence[0]
    for keyword in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        if keyword not in shared and keyword in per_frame[0]:
            setattr(shared, keyword, copy.deepcopy(per_frame[0][keyword].value))
