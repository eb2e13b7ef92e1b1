"""The Basic Profile table (PS3.15 Table E.1-1 as data) and how its codes are read."""
from __future__ import annotations

import csv

import pytest
from pydicom.datadict import keyword_for_tag

from medcnn.privacy.profile import ACTIONS, PROFILE_TABLE, action_for, profile_rules, resolve


def test_table_covers_the_standard_table_with_valid_rows():
    rules = profile_rules()
    assert len(rules) >= 600  # the 2023b table has several hundred rows
    tags = [r.tag for r in rules]
    assert len(tags) == len(set(tags)), "a tag is listed twice"
    assert {r.action for r in rules} <= set(ACTIONS)
    assert {r.source for r in rules} == {"E.1-1", "E.1-1 (2013)", "medcnn"}
    assert sum(r.source == "E.1-1" for r in rules) >= 590
    for r in rules:
        if "x" not in r.tag:  # keywords come from pydicom's dictionary
            assert r.keyword == keyword_for_tag(int(r.tag, 16)), r


def test_csv_is_plain_data_with_a_header_citing_the_standard():
    text = PROFILE_TABLE.read_text(encoding="utf-8")
    assert "PS3.15" in text and "Table E.1-1" in text and "2023b" in text
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    assert rows[0].keys() == {"tag", "keyword", "name", "action", "source"}


@pytest.mark.parametrize("keyword, action", [
    ("PatientName", "Z"), ("PatientID", "Z"), ("PatientBirthDate", "Z"), ("PatientSex", "Z"),
    ("PatientAge", "X"), ("PatientAddress", "X"), ("OtherPatientIDs", "X"), ("PatientWeight", "X"),
    ("AccessionNumber", "Z"), ("StudyDate", "Z"), ("StudyTime", "Z"), ("StudyID", "Z"),
    ("StudyDescription", "X"), ("SeriesDescription", "X"), ("ReferringPhysicianName", "Z"),
    ("ContentDate", "Z/D"), ("AcquisitionDateTime", "X/Z/D"), ("SeriesDate", "X/D"),
    ("InstanceCreationDate", "X/D"), ("InstanceCreationTime", "X/Z/D"),
    ("InstitutionName", "X/Z/D"), ("InstitutionAddress", "X"), ("StationName", "X/Z/D"),
    ("DeviceSerialNumber", "X/Z/D"), ("OperatorsName", "X/Z/D"), ("PerformingPhysicianName", "X"),
    ("StudyInstanceUID", "U"), ("SeriesInstanceUID", "U"), ("SOPInstanceUID", "U"),
    ("FrameOfReferenceUID", "U"), ("ReferencedSOPInstanceUID", "U"), ("MediaStorageSOPInstanceUID", "U"),
    ("ReferencedImageSequence", "X/Z/U*"), ("SourceImageSequence", "X/Z/U*"),
    ("RequestAttributesSequence", "X"), ("ContentSequence", "D"), ("IconImageSequence", "X"),
    ("DateOfLastCalibration", "X"), ("StationAETitle", "X"), ("ProtocolName", "X/D"),
])
def test_known_attributes_have_the_standard_action(keyword, action):
    from pydicom.datadict import tag_for_keyword

    assert action_for(tag_for_keyword(keyword)) == action


def test_attributes_the_profile_keeps_are_not_listed():
    for keyword in ("SOPClassUID", "Modality", "Rows", "PixelData", "BodyPartExamined", "ViewPosition",
                    "WindowCenter", "RescaleSlope", "BurnedInAnnotation", "PatientIdentityRemoved"):
        from pydicom.datadict import tag_for_keyword

        assert action_for(tag_for_keyword(keyword)) is None, keyword


@pytest.mark.parametrize("tag, action", [
    (0x60003000, "X"), (0x60223000, "X"), (0x60004000, "X"), (0x60000010, "X"),  # overlays
    (0x50000010, "X"), (0x501E3000, "X"),  # curves
    (0x00080000, "X"), (0x00280000, "X"),  # group lengths
])
def test_repeating_groups_and_group_lengths(tag, action):
    assert action_for(tag) == action


def test_combined_codes_resolve_to_their_strictest_action():
    assert resolve("X/Z", "AcquisitionDate") == "X"
    assert resolve("X/D", "SeriesDate") == "X"
    assert resolve("X/Z/D", "InstitutionName") == "X"
    assert resolve("X/Z/U*", "ReferencedImageSequence") == "X"
    assert resolve("Z/D", "ContentDate") == "Z"
    for simple in ("D", "Z", "X", "K", "U"):
        assert resolve(simple) == simple


def test_type1_attributes_of_enhanced_objects_get_a_dummy_at_top_level_only():
    for keyword, code in (("ContentDate", "Z/D"), ("ContentTime", "Z/D"),
                          ("AcquisitionDateTime", "X/Z/D"), ("DeviceSerialNumber", "X/Z/D")):
        assert resolve(code, keyword, enhanced=True) == "D"
        assert resolve(code, keyword, enhanced=True, top_level=False) == code[0]
        assert resolve(code, keyword, enhanced=False) == code[0]
    assert resolve("X/Z/D", "InstitutionName", enhanced=True) == "X"


def test_unknown_code_is_rejected_with_the_valid_ones():
    with pytest.raises(ValueError, match="expected one of D, Z, X"):
        resolve("Q")
