"""Encoding a job's critical findings as a Key Object Selection document (KOS, PS3.3 A.35.4).

The one place that builds KO objects. When a critical rule fires (``workers.critical``),
the job gets one KOS that flags the images showing each finding, so a viewer or PACS
opens the study at them:

- document title ``(113000, DCM, "Of Interest")`` from CID 7010 "Key Object Selection
  Document Titles": the images are selected because they show a finding. (113001 is
  "Rejected for Quality Reasons", which IHE IOCM archives act on by hiding the images:
  never that one.)
- a Key Object Description (TID 2010) with every finding in words, the model named;
- the model as device observer (TID 1004), as in the SR;
- one IMAGE item per source image, the most telling image of the first finding first.

UIDs come from ``workers.encode.identity`` (deterministic: a re-run writes the same
object); the patient and study modules are copied from the completed source header.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes as dicom_codes

from models.manifest import ModelManifest
from workers.critical import FiredRule
from workers.encode.identity import (
    DEMONSTRATION_NOTICE,
    MANUFACTURER,
    completed_header,
    content_datetime,
    default_series_number,
    device_observer_uid,
    device_serial_number,
    make_deterministic,
    result_description,
    software_versions,
)
from workers.errors import EncodingError
from workers.volume import Volume

# CID 7010 "Key Object Selection Document Titles".
DOCUMENT_TITLE = dicom_codes.DCM.OfInterest
_SERIES_OFFSET = 2  # SEG: source + 1000, SR: + 1001, KO: + 1002


def encode_key_objects(
    volume: Volume,
    manifest: ModelManifest,
    fired: Sequence[FiredRule],
    series_uid: str,
    instance_uid: str,
    *,
    series_number: int | None = None,
) -> hd.ko.KeyObjectSelectionDocument:
    """The KOS of one job's ``fired`` critical rules, referencing the images that show them.

    Raises
    ------
    EncodingError
        When no rule fired, a rule names no image, or highdicom refuses the object.
    """
    if not fired:
        raise EncodingError("a Key Object Selection needs at least one critical finding")
    images = flagged_images(volume, fired)
    if not images:
        raise EncodingError("the critical findings name no image of the series")
    evidence = [completed_header(images[0], volume.frame_numbers is not None), *images[1:]]
    observer = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_observer_uid(manifest),
        name=manifest.title,
        manufacturer_name=manifest.manufacturer,
        model_name=manifest.name,
        serial_number=device_serial_number(manifest),
    )
    content_date, content_time = content_datetime(volume)
    try:
        content = hd.ko.KeyObjectSelection(
            document_title=DOCUMENT_TITLE,
            referenced_objects=evidence,
            observer_device_context=hd.sr.ObserverContext(
                observer_type=dicom_codes.cid270.Device,
                observer_identifying_attributes=observer,
            ),
            description=key_object_description(manifest, fired),
        )
        document = hd.ko.KeyObjectSelectionDocument(
            evidence=evidence,
            content=content,
            series_instance_uid=series_uid,
            series_number=series_number or default_series_number(evidence[0], _SERIES_OFFSET),
            sop_instance_uid=instance_uid,
            instance_number=1,
            manufacturer=MANUFACTURER,
            series_description=result_description(manifest, "critical finding"),
            manufacturer_model_name=manifest.name,
            software_versions=software_versions(manifest),
            device_serial_number=device_serial_number(manifest),
            content_date=content_date,
            content_time=content_time,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise EncodingError(f"cannot encode the critical findings as a KOS: {exc}") from exc
    make_deterministic(document, instance_uid)
    return document


def flagged_images(volume: Volume, fired: Sequence[FiredRule]) -> list[Dataset]:
    """The source instances that show the findings, each once, in the rules' order
    (the most telling image of the first rule first). A multi-frame source is one
    instance, referenced once."""
    images: dict[str, Dataset] = {}
    for rule in fired:
        for index in rule.slices:
            dataset = volume.datasets[index]
            images.setdefault(str(dataset.SOPInstanceUID), dataset)
    return list(images.values())


def key_object_description(manifest: ModelManifest, fired: Sequence[FiredRule]) -> str:
    """The Key Object Description: each finding in words, then the model that found it."""
    notice = DEMONSTRATION_NOTICE.strip() if manifest.demonstration else ""
    lines = [f"Critical finding: {rule.text}" for rule in fired]
    lines.append(f"Found by {manifest.name} {manifest.version} ({manifest.title}) {notice}".strip())
    return "\n".join(lines)
