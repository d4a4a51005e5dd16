"""The gate: the node's own conformance checks on every result it emits.

dciodvfy checks the IOD (modules and attributes) but not SR templates, and some
SEG content viewers rely on is optional in the IOD. These checks cover what the
encoders promise: the mandatory content of TID 1500 "Measurement Report" as the node
writes it, the segment and frame references of a SEG, what a Secondary Capture
overlay must say about itself and its source, and that no spacing a SEG or SC states
is zero (:mod:`workers.encode.measures`). Each problem names the item and the rule it
breaks, so a failed job says why. ``gate`` runs them on a job's results before any is
kept; nothing leaves the node that fails them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from pydicom import Dataset
from pydicom.uid import SecondaryCaptureImageStorage

from node.db.models import ResultKind
from workers.encode.kos_checks import check_key_objects
from workers.encode.measures import check_spatial_measures
from workers.errors import EncodingError

# (code value, meaning) of the DCM concepts the checks look for, as PS3.16 names them.
_MEASUREMENT_REPORT = ("126000", "Imaging Measurement Report")
_LANGUAGE = ("121049", "Language of Content Item and Descendants")
_OBSERVER_TYPE = ("121005", "Observer Type")
_DEVICE = ("121007", "Device")
_PERSON = ("121006", "Person")
_DEVICE_OBSERVER_UID = ("121012", "Device Observer UID")
_PERSON_OBSERVER_NAME = ("121008", "Person Observer Name")
_PROCEDURE_REPORTED = ("121058", "Procedure reported")
_IMAGE_LIBRARY = ("111028", "Image Library")
_IMAGING_MEASUREMENTS = ("126010", "Imaging Measurements")
_MEASUREMENT_GROUP = ("125007", "Measurement Group")
_TRACKING_IDENTIFIER = ("112039", "Tracking Identifier")
_TRACKING_UID = ("112040", "Tracking Unique Identifier")


def _named(concept: tuple[str, str]) -> str:
    return f"{concept[1]} ({concept[0]})"


def _concept(item: Dataset) -> tuple[str, str] | None:
    """(code value, coding scheme) of an item's concept name, None without one."""
    names = item.get("ConceptNameCodeSequence")
    if not names:
        return None
    return str(names[0].get("CodeValue", "")), str(names[0].get("CodingSchemeDesignator", ""))


def _children(item: Dataset, concept: tuple[str, str], scheme: str = "DCM") -> list[Dataset]:
    """The direct content items of ``item`` named by the DCM ``concept``."""
    return [
        child
        for child in item.get("ContentSequence", [])
        if _concept(child) == (concept[0], scheme)
    ]


def _descendants(item: Dataset) -> Iterator[Dataset]:
    for child in item.get("ContentSequence", []):
        yield child
        yield from _descendants(child)


# SR: TID 1500 -----------------------------------------------------------------


def check_measurement_report(sr: Dataset) -> list[str]:
    """The problems with the TID 1500 Measurement Report content of ``sr``.

    An empty list means the report holds every item TID 1500 makes mandatory, as
    the node emits it: the root container and its template identification, TID 1204
    language, TID 1002 observer context, procedure reported, the TID 1600 image
    library and the imaging measurements with TID 1501/1411 measurement groups.
    """
    problems: list[str] = []
    if _concept(sr) != (_MEASUREMENT_REPORT[0], "DCM"):
        problems.append(
            f"TID 1500: root concept name is {_concept(sr)}, not {_named(_MEASUREMENT_REPORT)}"
        )
    if sr.get("ValueType") != "CONTAINER":
        problems.append(f"TID 1500: root value type is {sr.get('ValueType')!r}, not CONTAINER")
    # TID 1500 leaves the root's continuity open (highdicom writes CONTINUOUS); the
    # SR Document Content Module only requires one of the two enumerated values.
    if sr.get("ContinuityOfContent") not in ("SEPARATE", "CONTINUOUS"):
        problems.append(
            f"TID 1500: root Continuity Of Content is {sr.get('ContinuityOfContent')!r}, "
            "not SEPARATE or CONTINUOUS"
        )
    templates = sr.get("ContentTemplateSequence", [])
    if not any(
        str(t.get("TemplateIdentifier", "")) == "1500" and t.get("MappingResource") == "DCMR"
        for t in templates
    ):
        problems.append(
            "TID 1500: root ContentTemplateSequence lacks Template Identifier 1500 "
            "with Mapping Resource DCMR"
        )
    problems.extend(_check_root_items(sr))
    problems.extend(_check_observer_context(sr))
    measurements = _children(sr, _IMAGING_MEASUREMENTS)
    if not measurements:
        problems.append(f"TID 1500: root container lacks {_named(_IMAGING_MEASUREMENTS)}")
    for container in measurements:
        problems.extend(_check_measurements(container))
    return problems


def _check_root_items(sr: Dataset) -> list[str]:
    problems = []
    for concept, template in (
        (_LANGUAGE, "TID 1204"),
        (_PROCEDURE_REPORTED, "TID 1500"),
        (_IMAGE_LIBRARY, "TID 1600"),
    ):
        if not _children(sr, concept):
            problems.append(f"{template}: root container lacks {_named(concept)}")
    for language in _children(sr, _LANGUAGE):
        if not language.get("ConceptCodeSequence"):
            problems.append(f"TID 1204: {_named(_LANGUAGE)} has no coded value")
    for procedure in _children(sr, _PROCEDURE_REPORTED):
        if not procedure.get("ConceptCodeSequence"):
            problems.append(f"TID 1500: {_named(_PROCEDURE_REPORTED)} has no coded value")
    return problems


def _check_observer_context(sr: Dataset) -> list[str]:
    observer_types = _children(sr, _OBSERVER_TYPE)
    if not observer_types:
        return [f"TID 1002: root container lacks {_named(_OBSERVER_TYPE)}"]
    problems = []
    for observer_type in observer_types:
        values = observer_type.get("ConceptCodeSequence", [])
        value = str(values[0].get("CodeValue", "")) if values else ""
        if value == _DEVICE[0]:
            if not _children(sr, _DEVICE_OBSERVER_UID):
                problems.append(f"TID 1004: a Device observer lacks {_named(_DEVICE_OBSERVER_UID)}")
        elif value == _PERSON[0]:
            if not _children(sr, _PERSON_OBSERVER_NAME):
                problems.append(
                    f"TID 1003: a Person observer lacks {_named(_PERSON_OBSERVER_NAME)}"
                )
        else:
            problems.append(
                f"TID 1002: {_named(_OBSERVER_TYPE)} is {value!r}, not "
                f"{_named(_PERSON)} or {_named(_DEVICE)}"
            )
    return problems


def _check_measurements(container: Dataset) -> list[str]:
    groups = _children(container, _MEASUREMENT_GROUP)
    if not groups:
        return [f"TID 1500: {_named(_IMAGING_MEASUREMENTS)} holds no {_named(_MEASUREMENT_GROUP)}"]
    problems = []
    for number, group in enumerate(groups, start=1):
        where = f"{_named(_MEASUREMENT_GROUP)} {number}"
        identifiers = _children(group, _TRACKING_IDENTIFIER)
        if not identifiers or not str(identifiers[0].get("TextValue", "")):
            problems.append(f"TID 1501/1411: {where} lacks {_named(_TRACKING_IDENTIFIER)}")
        uids = _children(group, _TRACKING_UID)
        if not uids or not str(uids[0].get("UID", "")):
            problems.append(f"TID 1501/1411: {where} lacks {_named(_TRACKING_UID)}")
        for item in _descendants(group):
            if item.get("ValueType") == "NUM":
                problems.extend(_check_numeric(item, where))
    return problems


def _check_numeric(item: Dataset, where: str) -> list[str]:
    concept = item.ConceptNameCodeSequence[0]
    name = f"{concept.get('CodeMeaning', '')} ({concept.get('CodeValue', '')})"
    values = item.get("MeasuredValueSequence", [])
    if not values or "NumericValue" not in values[0] or values[0].NumericValue is None:
        return [f"TID 300: numeric item {name} in {where} has no measured value"]
    if not values[0].get("MeasurementUnitsCodeSequence"):
        return [f"TID 300: numeric item {name} in {where} has no measurement units"]
    return []


# SEG ------------------------------------------------------------------------


def check_segmentation(seg: Dataset) -> list[str]:
    """The problems with ``seg`` beyond what dciodvfy checks, that viewers rely on.

    Every segment is coded (property category and type) and identifies the
    automatic algorithm that made it; the SEG references its source series; every
    frame refers to a declared segment; the pixels are stored as its Segmentation Type
    says (one bit for BINARY; for FRACTIONAL eight bits, a fractional type and a
    maximum value that no stored value exceeds).
    """
    problems: list[str] = []
    segments = seg.get("SegmentSequence", [])
    if not segments:
        problems.append("SEG: SegmentSequence is empty")
    declared = set()
    for segment in segments:
        number = segment.get("SegmentNumber")
        declared.add(number)
        where = f"segment {number}"
        for keyword in (
            "SegmentedPropertyCategoryCodeSequence",
            "SegmentedPropertyTypeCodeSequence",
        ):
            if not segment.get(keyword):
                problems.append(f"SEG: {where} lacks {keyword}")
        if segment.get("SegmentAlgorithmType") != "AUTOMATIC":
            problems.append(
                f"SEG: {where} has Segment Algorithm Type "
                f"{segment.get('SegmentAlgorithmType')!r}, not AUTOMATIC"
            )
        if not segment.get("SegmentAlgorithmName"):
            problems.append(f"SEG: {where} lacks SegmentAlgorithmName (required when AUTOMATIC)")
        if not segment.get("SegmentationAlgorithmIdentificationSequence"):
            problems.append(f"SEG: {where} lacks SegmentationAlgorithmIdentificationSequence")
    if not seg.get("ReferencedSeriesSequence"):
        problems.append("SEG: ReferencedSeriesSequence is empty (no source series referenced)")
    problems.extend(_check_frame_segments(seg, declared))
    problems.extend(_check_segmentation_type(seg))
    problems.extend(check_spatial_measures(seg, "SEG"))
    return problems


def _check_segmentation_type(seg: Dataset) -> list[str]:
    kind = seg.get("SegmentationType")
    if kind == "BINARY":
        problems = []
        if seg.get("BitsAllocated") != 1:
            problems.append(f"SEG: BINARY with Bits Allocated {seg.get('BitsAllocated')}, not 1")
        for keyword in ("SegmentationFractionalType", "MaximumFractionalValue"):
            if keyword in seg:
                problems.append(f"SEG: BINARY has {keyword} (FRACTIONAL only)")
        return problems
    if kind == "FRACTIONAL":
        return _check_fractional(seg)
    # LABELMAP is another SOP class, which the archives here refuse.
    return [f"SEG: Segmentation Type is {kind!r}, not BINARY or FRACTIONAL"]


def _check_fractional(seg: Dataset) -> list[str]:
    problems = []
    if seg.get("BitsAllocated") != 8:
        problems.append(f"SEG: FRACTIONAL with Bits Allocated {seg.get('BitsAllocated')}, not 8")
    if seg.get("SegmentationFractionalType") not in ("PROBABILITY", "OCCUPANCY"):
        problems.append(
            f"SEG: FRACTIONAL with Segmentation Fractional Type "
            f"{seg.get('SegmentationFractionalType')!r}, not PROBABILITY or OCCUPANCY"
        )
    maximum = seg.get("MaximumFractionalValue")
    if maximum is None or not 1 <= int(maximum) <= 255:
        problems.append(f"SEG: FRACTIONAL with Maximum Fractional Value {maximum!r}, not 1 to 255")
        return problems
    syntax = getattr(getattr(seg, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in seg or (syntax is not None and syntax.is_encapsulated):
        return problems  # compressed frames are the codec's to check
    size = int(seg.get("NumberOfFrames") or 1) * int(seg.Rows) * int(seg.Columns)
    if len(seg.PixelData) < size:
        problems.append(f"SEG: Pixel Data holds {len(seg.PixelData)} bytes, the frames {size}")
        return problems
    # Pixel Data may end in one padding byte, which is no pixel.
    highest = int(np.frombuffer(seg.PixelData, dtype=np.uint8, count=size).max(initial=0))
    if highest > int(maximum):
        problems.append(
            f"SEG: FRACTIONAL stores {highest}, above its Maximum Fractional Value {int(maximum)}"
        )
    return problems


def _check_frame_segments(seg: Dataset, declared: set[int]) -> list[str]:
    shared = seg.get("SharedFunctionalGroupsSequence", [Dataset()])
    shared_identification = shared[0].get("SegmentIdentificationSequence") if shared else None
    problems = []
    for frame, groups in enumerate(seg.get("PerFrameFunctionalGroupsSequence", []), start=1):
        identification = groups.get("SegmentIdentificationSequence") or shared_identification
        if not identification:
            problems.append(f"SEG: frame {frame} lacks SegmentIdentificationSequence")
            continue
        number = identification[0].get("ReferencedSegmentNumber")
        if number not in declared:
            problems.append(f"SEG: frame {frame} refers to undeclared segment {number}")
    return problems


# SC overlay -------------------------------------------------------------------


def check_overlay(ds: Dataset, sources: Sequence[Dataset] | None = None) -> list[str]:
    """The problems with an overlay image, as the node promises it; empty means none.

    The image is Secondary Capture, RGB, DERIVED\\SECONDARY with its annotation
    declared burned in, and references the source image it was made from. Given
    ``sources`` (the source series' headers, such as ``Volume.datasets``) it must
    also lie in their study, for their patient, in a series of its own, and
    reference only images among them; without them those checks cannot be made.
    """
    problems: list[str] = []
    if str(ds.get("SOPClassUID", "")) != SecondaryCaptureImageStorage:
        problems.append(f"SC overlay: SOP Class UID is {ds.get('SOPClassUID')!r}, not SC")
    photometric = ds.get("PhotometricInterpretation")
    if photometric != "RGB" or ds.get("SamplesPerPixel") != 3:
        problems.append(
            f"SC overlay: {photometric!r} with {ds.get('SamplesPerPixel')!r} samples per "
            "pixel, not RGB with 3"
        )
    if ds.get("BurnedInAnnotation") != "YES":
        problems.append(
            f"SC overlay: Burned In Annotation is {ds.get('BurnedInAnnotation')!r}, not YES"
        )
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    if image_type[:2] != ["DERIVED", "SECONDARY"]:
        problems.append(f"SC overlay: Image Type {image_type} is not DERIVED\\SECONDARY")
    problems.extend(_check_references(ds, sources))
    problems.extend(check_spatial_measures(ds, "SC overlay"))
    if sources:
        problems.extend(_check_study(ds, sources[0]))
    return problems


def _check_references(ds: Dataset, sources: Sequence[Dataset] | None) -> list[str]:
    references = list(ds.get("SourceImageSequence", []))
    if not references:
        return ["SC overlay: SourceImageSequence is empty (no source image referenced)"]
    problems = []
    known = {str(s.SOPInstanceUID) for s in sources or []}
    for number, item in enumerate(references, start=1):
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        if not uid or not item.get("ReferencedSOPClassUID"):
            problems.append(f"SC overlay: source image reference {number} lacks its SOP UIDs")
        elif sources and uid not in known:
            problems.append(f"SC overlay: source image {uid} is not one of the source images")
    return problems


def _check_study(ds: Dataset, source: Dataset) -> list[str]:
    problems = []
    for keyword, what in (("StudyInstanceUID", "study"), ("PatientID", "patient")):
        if str(ds.get(keyword, "")) != str(source.get(keyword, "")):
            problems.append(
                f"SC overlay: {keyword} {ds.get(keyword)!r} is not the source {what}'s "
                f"{source.get(keyword)!r}"
            )
    if str(ds.get("SeriesInstanceUID", "")) == str(source.get("SeriesInstanceUID", "")):
        problems.append("SC overlay: Series Instance UID is the source series', not a new one")
    return problems


# Gate -------------------------------------------------------------------------

_CHECKS = {ResultKind.SEG: check_segmentation, ResultKind.SR: check_measurement_report}


def assert_conformant(
    kind: ResultKind, dataset: Dataset, sources: Sequence[Dataset] | None = None
) -> None:
    """Raise unless ``dataset``, a result of ``kind``, passes its checks. An SC overlay
    is also checked against the ``sources`` it was made from (same patient and study,
    references to them only).

    Raises
    ------
    EncodingError
        With every problem found, so the job records why no object left the node.
    """
    if kind == ResultKind.SC:
        problems: Sequence[str] = check_overlay(dataset, sources)
    elif kind == ResultKind.KO:  # workers.encode.kos_checks
        problems = check_key_objects(dataset, sources)
    elif kind in _CHECKS:
        problems = _CHECKS[ResultKind(kind)](dataset)
    else:
        raise ValueError(f"no conformance checks for {kind!r}, only for SC, SEG, SR and KO")
    if problems:
        raise EncodingError(
            f"the {kind} is not conformant ({len(problems)} problems): " + "; ".join(problems)
        )


def gate(results: Sequence[tuple[ResultKind, Dataset]], sources: Sequence[Dataset]) -> None:
    """The pipeline's gate step: every result of a job passes its checks, or the job
    fails with the first that does not (``sources``: the source series' headers).

    Raises
    ------
    EncodingError
        With every problem of the first result that fails.
    """
    for kind, dataset in results:
        assert_conformant(kind, dataset, sources)
