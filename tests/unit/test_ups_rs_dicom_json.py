"""The DICOM JSON model and search parameters UPS-RS reads (``node.web.dicom_json``,
``node.web.dicom_query``): payloads refused with the reason, answers in tag order,
identifiers masked at any depth, query parameters as a C-FIND identifier."""

from __future__ import annotations

import json

import pytest
from pydicom import Dataset

from node.web.dicom_json import DicomJsonError, masked, read_payload, write_object
from node.web.dicom_query import QueryError, read_query


def test_payloads_are_one_checked_data_set() -> None:
    one = {"00741204": {"vr": "LO", "Value": ["Lung"]}}
    assert read_payload(json.dumps([one]).encode()).ProcedureStepLabel == "Lung"
    assert read_payload(json.dumps(one).encode()).ProcedureStepLabel == "Lung"
    for body, why in (
        (b"", "empty"),
        (b"{", "not JSON"),
        (json.dumps([one, one]).encode(), "exactly one"),
        (b'{"0074120": {"vr": "LO"}}', "8 hexadecimal"),
        (b'{"00741204": {"vr": "ZZ"}}', "vr"),
        (b'{"00741204": {"vr": "LO", "Value": "Lung"}}', "array"),
        (b'{"00404021": {"vr": "SQ", "Value": [{"0020000D": {}}]}}', r"00404021\[1\]\.0020000D"),
    ):
        with pytest.raises(DicomJsonError, match=why):
            read_payload(body)


def test_answers_in_tag_order_and_masked_at_any_depth() -> None:
    dataset = Dataset()
    dataset.ProcedureStepLabel = "Lung"
    dataset.PatientName = "DOE^JANE"
    dataset.PatientID = "PID001"
    dataset.PatientBirthDate = "19700101"
    other = Dataset()
    other.PatientID = "MRN-77"
    dataset.OtherPatientIDsSequence = [other]
    request = Dataset()
    request.AccessionNumber = "ACC1"
    dataset.ReferencedRequestSequence = [request]
    dataset.PatientSex = ""
    obj = write_object(dataset)
    assert list(obj) == sorted(obj)
    hidden = masked(obj)
    assert hidden["00100010"]["Value"] == [{"Alphabetic": "***"}]
    assert hidden["00100020"]["Value"] == ["***"]
    assert hidden["00100030"] == {"vr": "DA"}
    assert hidden["00101002"]["Value"][0]["00100020"]["Value"] == ["***"]
    assert hidden["0040A370"]["Value"][0]["00080050"]["Value"] == ["***"]
    assert hidden["00741204"] == obj["00741204"]
    assert hidden["00100040"] == obj["00100040"]  # empty stays empty
    assert obj["00100020"]["Value"] == ["PID001"]  # the original is left as it was


def test_query_parameters_as_an_identifier() -> None:
    query = read_query(
        [
            ("ProcedureStepState", "SCHEDULED"),
            ("00741200", "HIGH"),
            ("ScheduledWorkitemCodeSequence.CodeValue", "lung-nodules"),
            ("SOPInstanceUID", "2.25.1,2.25.2"),
            ("includefield", "PatientName,InputInformationSequence.StudyInstanceUID"),
            ("offset", "5"),
            ("limit", "10"),
            ("fuzzymatching", "true"),
        ]
    )
    ident = query.identifier
    assert ident.ProcedureStepState == "SCHEDULED"
    assert ident.ScheduledProcedureStepPriority == "HIGH"
    assert ident.ScheduledWorkitemCodeSequence[0].CodeValue == "lung-nodules"
    assert list(ident.SOPInstanceUID) == ["2.25.1", "2.25.2"]  # UID list matching
    assert "PatientName" in ident and not ident.PatientName
    assert "StudyInstanceUID" in ident.InputInformationSequence[0]
    assert (query.offset, query.limit, query.fuzzy) == (5, 10, True)
    assert query.matching_tags == {"00741000", "00741200", "00404018", "00080018"}
    for params, why in (
        ([("NoSuchKeyword", "x")], "unknown attribute"),
        ([("PatientName.PatientID", "x")], "not a sequence"),
        ([("InputInformationSequence", "x")], "matched by its items"),
        ([("limit", "0")], "limit"),
        ([("offset", "-1")], "offset"),
        ([("fuzzymatching", "yes")], "true or false"),
    ):
        with pytest.raises(QueryError, match=why):
            read_query(params)
