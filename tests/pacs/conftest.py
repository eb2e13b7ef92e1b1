"""Fixtures of the PACS tests: a real Orthanc (Debian's, with its DICOMweb plugin) and a test study.

The study has known fake identifiers (:data:`FAKES`), so the tests can check they go nowhere, and
holds a DX chest film built from a real one in ../shared/data/dicom_samples (skipped when absent),
pydicom's CT_small, and a non-image instance (a Basic Text SR). Orthanc is skipped with its reason
when it is not installed.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "app"))
from orthanc import missing_reason, orthanc_server  # noqa: E402

REAL_FILM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"  # RSNA chest PA, CR, JPEG baseline
FAKES = {"PatientName": "ZZPACSNAME^QQPERSON", "PatientID": "PACSID4471902", "AccessionNumber": "PACSACC66120",
         "PatientBirthDate": "19020304", "InstitutionName": "ZZPACS LEAK HOSPITAL"}
STUDY_DATE = "20190412"
DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


def _stamp(ds: Dataset, study_uid: str, series_uid: str, number: int) -> Dataset:
    for key, value in FAKES.items():
        setattr(ds, key, value)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study_uid, series_uid, number
    ds.StudyDate, ds.StudyTime, ds.StudyID = STUDY_DATE, "101500", "1"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def ct_instance(study_uid: str) -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    return _bytes(_stamp(ds, study_uid, generate_uid(), 2))


def dx_from_film(film: Path, study_uid: str, size: int = 256) -> bytes:
    """A DX (for presentation) chest image, uncompressed, with the pixels of a real CR film (downscaled)."""
    from PIL import Image

    src = pydicom.dcmread(film)
    pixels = np.asarray(Image.fromarray(src.pixel_array.astype(np.uint8)).resize((size, size)), dtype=np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = DX_PRESENTATION
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "CHEST", "PA"
    ds.PresentationIntentType, ds.ImageType = "FOR PRESENTATION", ["ORIGINAL", "PRIMARY"]
    ds.PatientSex, ds.PatientAge = "F", "045Y"
    ds.SeriesDescription, ds.StudyDescription = "CHEST PA", "CHEST XRAY"
    ds.Manufacturer = "TestVendor"
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    return _bytes(_stamp(ds, study_uid, generate_uid(), 1))


def text_sr(study_uid: str) -> bytes:
    """A non-image instance: a minimal Basic Text SR."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.Modality, ds.ValueType, ds.ContinuityOfContent = "SR", "CONTAINER", "SEPARATE"
    ds.CompletionFlag, ds.VerificationFlag, ds.InstanceNumber = "COMPLETE", "UNVERIFIED", 1
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "18748-4", "LN", "Diagnostic imaging report"
    ds.ConceptNameCodeSequence = [concept]
    ds.ContentDate, ds.ContentTime = STUDY_DATE, "101600"
    return _bytes(_stamp(ds, study_uid, generate_uid(), 3))


@pytest.fixture(scope="session")
def orthanc():
    """One Orthanc for the session (tests that stop it start their own)."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    with orthanc_server() as server:
        yield server


@pytest.fixture(scope="session")
def film(shared_data) -> Path:
    path = shared_data / "dicom_samples" / REAL_FILM
    if not path.is_file():
        pytest.skip(f"the real chest film {path} is absent")
    return path


@pytest.fixture
def study(orthanc, film):
    """A fresh study (DX chest, CT slice, text SR) on a cleared Orthanc: ``{"uid", "dx", "ct", "sr"}`` (SOP UIDs)."""
    orthanc.clear()
    uid = generate_uid()
    out = {"uid": uid}
    for name, data in (("dx", dx_from_film(film, uid)), ("ct", ct_instance(uid)), ("sr", text_sr(uid))):
        orthanc.upload(data)
        out[name] = str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)
    return out


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """The app tests' tiny seeded models (cxr_pneumonia for CR/DX, ct_covid for CT)."""
    from test_pages import make_weights

    return make_weights(tmp_path_factory.mktemp("pacs_weights"))
