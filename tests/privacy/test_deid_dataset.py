"""De-identification of pydicom's bundled DICOM files against the Basic Profile table."""
from __future__ import annotations

import csv
import io
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medcnn.io import UnsupportedImageError, read_image
from medcnn.privacy import DeidentificationError, Deidentifier, deidentify_bytes, deidentify_dataset
from medcnn.privacy.profile import PROFILE_TABLE

KEY = b"k" * 32
# The test's own reading of the table, independent of medcnn.privacy.profile's lookup.
_ROWS = {r["tag"]: r["action"] for r in csv.DictReader(
    line for line in PROFILE_TABLE.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))}
_ADDED = {"PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
          "LongitudinalTemporalInformationModified"}
_TYPE1_ENHANCED = {"ContentDate", "ContentTime", "AcquisitionDateTime", "DeviceSerialNumber"}
FILES = ["CT_small.dcm", "MR_small.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_dcmtk.dcm", "rtplan.dcm",
         "reportsi.dcm", "liver_1frame.dcm", "examples_overlay.dcm", "nested_priv_SQ.dcm", "priv_SQ.dcm",
         "ExplVR_BigEnd.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "rtstruct.dcm"]
PIXEL_FILES = ["CT_small.dcm", "MR_small.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm",
               "MR_small_RLE.dcm", "liver_1frame.dcm", "examples_overlay.dcm", "ExplVR_BigEnd.dcm"]


def table_code(tag: int) -> str | None:
    """The table's code for ``tag``: exact row, else its repeating-group / group-length pattern."""
    hexed = f"{tag:08X}"
    if hexed in _ROWS:
        return _ROWS[hexed]
    group, element = tag >> 16, tag & 0xFFFF
    if (group & 0xFF00) == 0x5000:
        return _ROWS["50xxxxxx"]
    if (group & 0xFF00) == 0x6000:
        return _ROWS.get(f"60xx{element:04X}", _ROWS["60xxxxxx"])
    if element == 0:
        return _ROWS["xxxx0000"]
    return None


def expected(elem, *, enhanced: bool, top: bool) -> str:
    """The single action the profile prescribes for ``elem``: X, Z, D, U or K."""
    if elem.tag.is_private or elem.VR == "UN":
        return "X"
    code = table_code(int(elem.tag))
    if code is None:
        return "K"
    if "/" in code:
        if enhanced and top and elem.keyword in _TYPE1_ENHANCED:
            return "D"
        return code.split("/")[0]
    return code


def _empty(value) -> bool:
    return value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0)


def check_against_table(before: Dataset, after: Dataset, deid: Deidentifier, *, enhanced: bool,
                        top: bool = True) -> int:
    """Assert every element of ``before`` was treated as the table says; returns elements checked."""
    checked = 0
    for elem in before:
        action = expected(elem, enhanced=enhanced, top=top)
        where = f"{elem.tag} {elem.keyword or '(private)'}"
        checked += 1
        if action == "X":
            assert elem.tag not in after, f"{where} should be removed"
            continue
        assert elem.tag in after, f"{where} should be present ({action})"
        new = after[elem.tag]
        if action == "Z":
            assert _empty(new.value), f"{where} should be empty"
        elif action == "D":
            assert not _empty(new.value), f"{where} should hold a dummy value"
            if elem.VR == "SQ":
                assert len(new.value) == 1 and len(new.value[0]) == 0
        elif action == "U":
            olds = list(elem.value) if elem.VM > 1 else [elem.value]
            news = list(new.value) if new.VM > 1 else [new.value]
            assert [n or "" for n in news] == [deid.new_uid(v or "") for v in olds], where
            assert all(n != o for n, o in zip(news, olds) if not str(o).startswith("1.2.840.10008.")), where
        elif elem.VR == "SQ":
            assert len(new.value) == len(elem.value), where
            for a, b in zip(elem.value, new.value):
                checked += check_against_table(a, b, deid, enhanced=enhanced, top=False)
        elif elem.keyword not in _ADDED:
            assert new.value == elem.value, f"{where} should be kept unchanged"
    return checked


def raw(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as fh:
        return fh.read()


def read(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file(name), force=True)


@pytest.mark.parametrize("name", FILES)
def test_every_attribute_is_treated_as_the_table_says(name):
    before, after = read(name), read(name)
    deid = Deidentifier(key=KEY)
    summary = deid.deidentify_dataset(after)
    enhanced = "SharedFunctionalGroupsSequence" in before
    assert check_against_table(before, after, deid, enhanced=enhanced) >= len(before)
    assert summary.files == 1 and summary.removed + summary.emptied + summary.uids_replaced > 0


@pytest.mark.parametrize("name", FILES)
def test_deidentification_attributes_are_set(name):
    out, _ = deidentify_bytes(raw(name), check_pixels=False)
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.PatientIdentityRemoved == "YES"
    assert "Basic Profile" in " ".join(ds.DeidentificationMethod)
    code = ds.DeidentificationMethodCodeSequence[-1]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == (
        "113100", "DCM", "Basic Application Confidentiality Profile")
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    if "SOPInstanceUID" in ds:
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert not any(elem.tag.is_private for elem in ds.iterall())


@pytest.mark.parametrize("name", PIXEL_FILES)
def test_pixels_are_untouched_and_render_identically(name):
    data = raw(name)
    out, _ = deidentify_bytes(data, check_pixels=False)
    original, cleaned = pydicom.dcmread(io.BytesIO(data)), pydicom.dcmread(io.BytesIO(out))
    assert cleaned.PixelData == original.PixelData  # byte-identical (compressed ones too)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = read_image(data), read_image(out)
    assert np.array_equal(a.pixels, b.pixels)
    assert (a.meta.window_center, a.meta.window_width, a.meta.photometric_interpretation) == (
        b.meta.window_center, b.meta.window_width, b.meta.photometric_interpretation)


def test_recursion_into_sequences_private_tags_and_uids():
    ds = read("CT_small.dcm")
    deep = Dataset()
    deep.ReferencedSOPInstanceUID = "1.2.3.4.5.7"  # U, two levels down
    deep.PersonName = "Deep^Person"  # D
    deep.InstitutionName = "Deep Hospital"  # X/Z/D -> X
    deep.add_new(0x00111010, "LO", "PRIVATE CREATOR")
    deep.add_new(0x00111001, "LO", "private inside a sequence")
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    item.PatientName = "Nested^Name"
    item.ReferencedInstanceSequence = Sequence([deep])  # not in the table: kept, cleaned
    item.ContentSequence = Sequence([Dataset()])  # D: replaced by one empty item
    item.ContentSequence[0].PersonName = "Report^Author"
    ds.ReferencedSeriesSequence = Sequence([item])  # not in the table: kept, cleaned item by item
    deid = Deidentifier(key=KEY)
    summary = deid.deidentify_dataset(ds)
    out = ds.ReferencedSeriesSequence[0]
    assert not out.PatientName  # Z inside a kept sequence
    assert out.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # a standard UID, kept
    assert out.ReferencedSOPInstanceUID == deid.new_uid("1.2.3.4.5.6") != "1.2.3.4.5.6"
    assert len(out.ContentSequence) == 1 and len(out.ContentSequence[0]) == 0  # D on a sequence
    inner = out.ReferencedInstanceSequence[0]
    assert inner.ReferencedSOPInstanceUID == deid.new_uid("1.2.3.4.5.7")
    assert inner.PersonName == "ANONYMOUS" and "InstitutionName" not in inner
    assert not any(elem.tag.is_private for elem in ds.iterall())
    assert summary.private_removed >= 2
    text = str(ds)
    assert "Nested" not in text and "Deep" not in text and "Report" not in text and "private" not in text


def test_uid_mapping_is_consistent_within_a_run_and_differs_between_runs():
    a, b = read("CT_small.dcm"), read("CT_small.dcm")
    b.SOPInstanceUID = a.SOPInstanceUID + ".2"  # a second image of the same series
    originals = {k: a.data_element(k).value for k in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")}
    run = Deidentifier()
    run.deidentify_dataset(a)
    run.deidentify_dataset(b)
    for keyword, old in originals.items():
        assert a.data_element(keyword).value == b.data_element(keyword).value != old
    assert a.SOPInstanceUID != b.SOPInstanceUID
    other = read("CT_small.dcm")
    Deidentifier().deidentify_dataset(other)
    assert other.StudyInstanceUID != a.StudyInstanceUID  # a new run has a new key
    for uid in (a.StudyInstanceUID, a.SOPInstanceUID):
        assert pydicom.uid.UID(uid).is_valid and len(uid) <= 64


def test_enhanced_objects_keep_their_type1_dates_as_dummies():
    ds = read("liver_1frame.dcm")
    assert "SharedFunctionalGroupsSequence" in ds and "ContentDate" in ds
    original = ds.ContentDate
    deidentify_dataset(ds)
    assert ds.ContentDate == "19000101" != original


def test_summary_and_warnings_hold_no_values(recwarn):
    data = raw("CT_small.dcm")
    name = str(pydicom.dcmread(io.BytesIO(data)).PatientName)
    out, summary = deidentify_bytes(data)
    assert name and name not in repr(summary) and name.encode() not in out
    assert not [w for w in recwarn if name in str(w.message)]


def test_values_quoted_by_pydicom_warnings_do_not_leak(recwarn):
    deidentify_bytes(raw("badVR.dcm"), check_pixels=False)
    assert not [w for w in recwarn if "1.2.123" in str(w.message)]


@pytest.mark.parametrize("data, match", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "PNG image: only DICOM"),
    (b"hello, world" * 20, "not a DICOM file"),
    (b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x7f", "truncated or corrupt"),
])
def test_non_dicom_input_is_rejected_with_a_clear_message(data, match):
    with pytest.raises(UnsupportedImageError, match=match):
        deidentify_bytes(data)


def test_dicomdir_is_refused_with_what_to_do():
    path = get_testdata_file("DICOMDIR")
    if path is None:
        pytest.skip("pydicom's DICOMDIR test file is not installed")
    with pytest.raises(DeidentificationError, match="create a new DICOMDIR"):
        deidentify_bytes(open(path, "rb").read())


def test_input_bytes_are_not_modified():
    data = raw("MR_small.dcm")
    copy = bytes(data)
    deidentify_bytes(data, check_pixels=False)
    assert data == copy


def test_real_dicom_samples_follow_the_table_and_keep_their_pixels(dicom_samples):
    paths = sorted(dicom_samples.glob("*.dcm"))
    assert len(paths) >= 20
    warnings.simplefilter("ignore")  # some samples are deliberately malformed (restored after the test)
    for path in paths:
        data = path.read_bytes()
        before, after = (pydicom.dcmread(io.BytesIO(data), force=True) for _ in range(2))
        deid = Deidentifier(key=KEY)
        deid.deidentify_dataset(after)
        check_against_table(before, after, deid, enhanced="SharedFunctionalGroupsSequence" in before)
        out, _ = Deidentifier().deidentify_bytes(data, check_pixels=False)
        assert pydicom.dcmread(io.BytesIO(out)).PixelData == before.PixelData, path.name
        try:
            original = read_image(data).pixels
        except UnsupportedImageError:
            continue  # no decoder here: the byte-identical Pixel Data above is the check
        assert np.array_equal(original, read_image(out).pixels), path.name
