"""Unlisted public attributes, the remove-unlisted option and the Clean Descriptors Option."""
from __future__ import annotations

import argparse
import csv
import io
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medcnn.cli import deidentify as command
from medcnn.io import read_image
from medcnn.privacy import Deidentifier, deidentify_bytes
from medcnn.privacy.descriptors import CLEAN_DESCRIPTORS_TABLE, clean_descriptor_tags
from medcnn.privacy.profile import KEEP_BINARY, PROFILE_TABLE, action_for

UNKNOWN_TAG = 0xAAAA0010  # an even (public) group the data dictionary does not know
PIXEL_FILES = ["CT_small.dcm", "MR_small.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm",
               "MR_small_RLE.dcm", "liver_1frame.dcm", "examples_overlay.dcm", "ExplVR_BigEnd.dcm"]
TEXT_VRS = {"LO", "SH", "ST", "LT", "UT", "UC", "PN", "AE", "UR", "DA", "DT", "TM", "AS"}


def read(name: str = "CT_small.dcm") -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(name), force=True)


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def identified() -> Dataset:
    """CT_small with a patient Jane Doe, descriptions naming people, and a local code naming one."""
    ds = read()
    ds.PatientName = "Doe^Jane"
    ds.StudyDescription = "CHEST PA Doe 01/02/1970 MRN 12345678"
    ds.ProtocolName = "T2 AX FLAIR 3mm"
    ds.ImageComments = "seen by Dr Jones"
    ds.AnatomicRegionSequence = Sequence([code("L1", "99LOCAL", "John Smith's lesion"),
                                          code("51185008", "SCT", "Chest of Jane Doe")])
    return ds


# ----------------------------------------------------------------------------- unlisted attributes
def test_unknown_public_attribute_holding_a_name_is_removed_by_default():
    ds = read()
    ds.add_new(UNKNOWN_TAG, "LO", "Smith^John")  # explicit VR: it reads back as LO, not UN
    item = Dataset()
    item.add_new(UNKNOWN_TAG, "PN", "Roe^Richard")
    ds.ReferencedSeriesSequence = Sequence([item])
    assert keyword_for_tag(UNKNOWN_TAG) == ""
    out, summary = deidentify_bytes(to_bytes(ds), check_pixels=False)
    assert b"Smith" not in out and b"Roe" not in out
    clean = pydicom.dcmread(io.BytesIO(out))
    assert UNKNOWN_TAG not in clean and UNKNOWN_TAG not in clean.ReferencedSeriesSequence[0]


def test_known_unlisted_text_is_kept_by_default_and_removed_by_the_option():
    def with_unlisted_text() -> Dataset:
        ds = read()
        ds.PositionReferenceIndicator = "SMITH^JOHN"  # LO, not in Table E.1-1
        ds.ContentLabel = "SMITH"  # CS: cannot hold free text, kept either way
        return ds

    kept, strict = with_unlisted_text(), with_unlisted_text()
    Deidentifier().deidentify_dataset(kept)
    Deidentifier(remove_unlisted=True).deidentify_dataset(strict)
    assert kept.PositionReferenceIndicator == "SMITH^JOHN" and kept.Manufacturer  # K: the table's default
    assert "PositionReferenceIndicator" not in strict and "Manufacturer" not in strict
    assert strict.ContentLabel == "SMITH" and strict.Rows == kept.Rows


@pytest.mark.parametrize("name", PIXEL_FILES)
def test_remove_unlisted_keeps_what_the_image_needs_and_no_unlisted_text(name):
    with open(get_testdata_file(name), "rb") as fh:
        data = fh.read()
    out, _ = deidentify_bytes(data, check_pixels=False, remove_unlisted=True)
    ds = pydicom.dcmread(io.BytesIO(out))
    for keyword in ("SOPClassUID", "Rows", "Columns", "BitsAllocated", "PhotometricInterpretation", "PixelData"):
        assert keyword in ds, keyword
    assert ds.file_meta.TransferSyntaxUID == pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID
    allowed = {"DeidentificationMethod", "CodeMeaning",  # written by the de-identifier itself
               "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion"}  # a code names a concept
    for elem in ds.iterall():
        if action_for(elem.tag) is None and elem.keyword not in allowed:
            assert elem.VR not in TEXT_VRS and (not elem.VR.startswith("O") or elem.keyword in KEEP_BINARY), elem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before, after = read_image(data), read_image(out)
    assert np.array_equal(before.pixels, after.pixels)
    assert (before.meta.window_center, before.meta.window_width, before.meta.photometric_interpretation) == (
        after.meta.window_center, after.meta.window_width, after.meta.photometric_interpretation)


# ----------------------------------------------------------------------------- Clean Descriptors Option
def test_code_meaning_survives_the_basic_profile_and_is_cleaned_with_the_option():
    basic, option = identified(), identified()
    Deidentifier().deidentify_dataset(basic)
    summary = Deidentifier(clean_descriptors=True).deidentify_dataset(option)
    assert basic.AnatomicRegionSequence[0].CodeMeaning == "John Smith's lesion"  # K: kept verbatim
    local, standard = option.AnatomicRegionSequence
    assert local.CodeMeaning == "* lesion" and (local.CodeValue, local.CodingSchemeDesignator) == ("L1", "99LOCAL")
    assert "Jane" not in standard.CodeMeaning and "thoracic" in standard.CodeMeaning.lower()  # the SCT meaning
    assert summary.cleaned >= 2 and "cleaned" in summary.describe()


def test_descriptors_are_kept_cleaned_instead_of_removed():
    basic, option = identified(), identified()
    Deidentifier().deidentify_dataset(basic)
    Deidentifier(clean_descriptors=True).deidentify_dataset(option)
    assert "StudyDescription" not in basic and "ProtocolName" not in basic  # X / X-D in the Basic Profile
    assert option.StudyDescription == "CHEST PA *"  # the patient's name, the date, the number: gone
    assert option.ProtocolName == "T2 AX FLAIR 3mm"
    assert option.ImageComments == "seen by Dr *"
    text = str(option)
    assert "Doe" not in text and "Jones" not in text and "Smith" not in text and "1970" not in text


def test_the_option_is_recorded_in_the_deidentification_method():
    ds = identified()
    Deidentifier(clean_descriptors=True).deidentify_dataset(ds)
    codes = [(c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning) for c in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM", "Basic Application Confidentiality Profile"),
                     ("113105", "DCM", "Clean Descriptors Option")]
    assert "Clean Descriptors Option" in ds.DeidentificationMethod


def test_option_table_rows_are_rows_of_the_basic_table():
    basic = {r["tag"]: r["action"] for r in csv.DictReader(
        line for line in PROFILE_TABLE.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))}
    rows = list(csv.DictReader(
        line for line in CLEAN_DESCRIPTORS_TABLE.read_text(encoding="utf-8").splitlines() if not line.startswith("#")))
    assert len(rows) >= 100 and len(clean_descriptor_tags()) == len(rows)
    for row in rows:
        if row["source"] == "E.1-1":
            assert basic[row["tag"]] == row["basic"], row
            assert row["keyword"] == keyword_for_tag(int(row["tag"], 16)), row
    for keyword in ("StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments", "CodeMeaning"):
        assert tag_for_keyword(keyword) in clean_descriptor_tags(), keyword


def test_cli_flags_apply_both_options(tmp_path, capsys):
    src = tmp_path / "in.dcm"
    identified().save_as(src)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    code_ = command.run(parser.parse_args([str(src), str(tmp_path / "out.dcm"), "--no-pixel-check",
                                           "--clean-descriptors", "--remove-unlisted"]))
    assert code_ == 0
    out = capsys.readouterr().out
    assert "Clean Descriptors Option" in out and "unlisted attributes removed" in out and "cleaned" in out
    ds = pydicom.dcmread(tmp_path / "out.dcm")
    assert ds.StudyDescription == "CHEST PA *" and "Manufacturer" not in ds
    assert ds.DeidentificationMethodCodeSequence[-1].CodeValue == "113105"


def test_the_app_export_applies_both_options():
    from medcnn.app import state

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no Streamlit runtime here: the cache warns and runs the function
        out, summary = state.deidentified_upload("test-deid-options", to_bytes(identified()))
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.StudyDescription == "CHEST PA *" and "Manufacturer" not in ds and summary.cleaned


@pytest.mark.parametrize("name", ["badVR.dcm", "rtplan.dcm", "reportsi.dcm", "nested_priv_SQ.dcm"])
def test_both_options_handle_odd_and_non_image_objects(name):
    with open(get_testdata_file(name), "rb") as fh:
        data = fh.read()
    out, summary = deidentify_bytes(data, check_pixels=False, clean_descriptors=True, remove_unlisted=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # badVR.dcm keeps an invalid IS value, which pydicom warns about
        ds = pydicom.dcmread(io.BytesIO(out))
        assert ds.PatientIdentityRemoved == "YES" and summary.files == 1
        assert not any(elem.tag.is_private for elem in ds.iterall())
