"""The coded concepts the SEG and SR encoders write, in one place.

Each constant names the context group (PS3.16 CID) or template row it is chosen
from, so a reviewer can check it against the standard. Model-specific codes
(segment categories and types, class findings) come from the model manifest, not
from here.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept as HdCodedConcept
from pydicom.sr.coding import Code

from models.manifest import CodedConcept

# CID 7162 "Surface Processing Algorithm Families": the family of the algorithm in
# the SEG's Segmentation Algorithm Identification and in SR TID 4019 items.
ALGORITHM_FAMILY = Code("123110", "DCM", "Artificial Intelligence")

# TID 1501/1411 row "Finding": a segment's type or a class's finding goes here.
# TID 1501 qualitative evaluation: the class's finding code as concept name, its
# value from CID 241 "Present-Absent Only" (threshold applied to the probability).
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")

# TID 300 measurement of a classifier's output. DCM 122157 "Probability" is the
# generic DICOM concept (used by the ECG statement templates for the likelihood a
# statement is true); SNOMED has no pre-coordinated "model probability". The value
# is a fraction in [0, 1], so its unit is UCUM "1" (CID 7181 "no units").
PROBABILITY = Code("122157", "DCM", "Probability")
NO_UNITS = Code("1", "UCUM", "no units")

# TID 1411 volume of a segment: SCT 118565006 "Volume" (CID 7469 "Generic
# Intensity and Size Measurements"), in UCUM "cm3" (CID 7181; 1 cm3 = 1 ml). CID
# 7181 lists cm3, not ml, so cm3 is the unit viewers know.
VOLUME = Code("118565006", "SCT", "Volume")
CUBIC_CENTIMETER = Code("cm3", "UCUM", "cubic centimeter")

# TID 1500 "Procedure Reported", from CID 100 "Quantitative Diagnostic Imaging
# Procedures": the LOINC code of the modality where CID 100 has one, else the
# generic SNOMED "Imaging procedure".
PROCEDURE_BY_MODALITY = {
    "CT": Code("25045-6", "LN", "CT unspecified body region"),
    "MR": Code("25056-3", "LN", "MRI unspecified body region"),
    "PT": Code("44136-0", "LN", "PET unspecified body region"),
    "NM": Code("49118-3", "LN", "NM unspecified body region"),
    "CR": Code("43468-8", "LN", "XR unspecified body region"),
    "DX": Code("43468-8", "LN", "XR unspecified body region"),
}
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")


def procedure_reported(modality: str) -> Code:
    """The TID 1500 Procedure Reported code for a source series of ``modality``."""
    return PROCEDURE_BY_MODALITY.get(modality.upper(), IMAGING_PROCEDURE)


def coded(concept: CodedConcept) -> HdCodedConcept:
    """A manifest code triplet as highdicom's coded concept."""
    return HdCodedConcept(
        value=concept.value, scheme_designator=concept.scheme, meaning=concept.meaning
    )
