"""The DICOM objects sent back to the PACS: a Comprehensive SR, a Secondary Capture, an Encapsulated PDF.

All three go into ONE new series of the SOURCE study (new Series and SOP Instance UIDs; the Patient
and Study modules copied from the source image; Manufacturer ``medcnn`` and the package version):

1. :func:`build_sr`: a Comprehensive SR (PS3.3 A.35.3) made with ``highdicom``, rooted in an
   "Imaging Measurement Report" container: observer context (the reviewer as Person Observer, the
   tool as Device Observer), the algorithm (model card name, version, SHA-256 of its weights), one
   qualitative finding per presented finding (at or above / below its operating point, with the
   probability and the operating point as numeric properties), the out-of-distribution verdict,
   the explanation method, the reviewer's confirmation, and an IMAGE reference to the source
   instance. The reviewer also signs it as Verifying Observer. An image that is not analysed gets
   the same report with its status and reason and no finding.
2. :func:`build_sc`: the overlay as an RGB Secondary Capture with a burned-in legend (model,
   finding, method, "research tool, not for diagnosis"); Burned In Annotation = YES.
3. :func:`build_pdf`: the PDF report (:func:`medcnn.visualize.report.build_report`) as an
   Encapsulated PDF (PS3.3 A.45.1).

:func:`check_object` reads each object back with pydicom (and the SR with highdicom) and checks the
UIDs, study membership and the required attributes before anything is sent.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medcnn.notices import quiet
from medcnn.models.card import file_sha256
from medcnn.pacs.analysis import MANUFACTURER, InstanceAnalysis, presented_findings
from medcnn.visualize.presentation import caveat

__all__ = ["DicomObjectError", "ENCAPSULATED_PDF", "RESEARCH_NOTE", "ResultSet", "build_pdf", "build_results",
           "build_sc", "build_sr", "check_object", "software_version"]

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
RESEARCH_NOTE = "research tool, not for diagnosis"
SERIES_NUMBER = 9901
_SCHEME = "99MEDCNN"  # private coding scheme (PS3.16 8.2: 99 prefix) for concepts DCM does not have

# Patient (C.7.1.1), Patient Study (C.7.2.2) and General Study (C.7.2.1) attributes copied to the PDF.
_PATIENT_STUDY = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
                  "OtherPatientIDsSequence", "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID",
                  "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                  "StudyDescription", "SpecificCharacterSet")


class DicomObjectError(ValueError):
    """A built object failed its check (missing attribute, wrong study, reused UID)."""


def software_version() -> str:
    from medcnn import __version__

    return f"medcnn {__version__}"


def _code(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value[:16], scheme_designator=_SCHEME, meaning=meaning[:64])


def _sr_content(analysis: InstanceAnalysis, reviewer: str, confirmed_at: datetime) -> Any:
    import highdicom.sr as sr
    from pydicom.sr.codedict import codes

    R = sr.RelationshipTypeValues
    items: list[Any] = [
        sr.PnameContentItem(codes.DCM.PersonObserverName, _pname(reviewer), relationship_type=R.HAS_OBS_CONTEXT),
        sr.TextContentItem(codes.DCM.DeviceObserverName, MANUFACTURER, relationship_type=R.HAS_OBS_CONTEXT),
    ]
    card = analysis.card
    if card is not None:
        items += [sr.TextContentItem(codes.DCM.AlgorithmName, card.name, relationship_type=R.CONTAINS),
                  sr.TextContentItem(codes.DCM.AlgorithmVersion, software_version(), relationship_type=R.CONTAINS),
                  sr.TextContentItem(_code("weights-sha256", "Model weights SHA-256"),
                                     file_sha256(card.weights_path), relationship_type=R.CONTAINS)]
    status = "analysed" if analysis.analysed else f"not analysed: {analysis.reason or 'no model read it'}"
    items.append(sr.TextContentItem(_code("analysis-status", "Analysis status"), status[:1024],
                                    relationship_type=R.CONTAINS))
    if analysis.prediction is not None:
        ood = analysis.prediction.ood
        verdict = ood.level + (f": {'; '.join(ood.reasons)}" if ood.reasons else "")
        items.append(sr.TextContentItem(_code("ood-verdict", "Out-of-distribution verdict"), verdict[:1024],
                                        relationship_type=R.CONTAINS))
        said = caveat(card, analysis.prediction, analysis.meta)
        if said:  # what the card says beside a result on this kind of input
            items.append(sr.TextContentItem(_code("model-caveat", "Model caveat for this input"), said[:1024],
                                            relationship_type=R.CONTAINS))
    if analysis.analysed:
        items.append(sr.TextContentItem(_code("explain-method", "Explanation method"),
                                        f"{analysis.method_label} (target {analysis.target})",
                                        relationship_type=R.CONTAINS))
        above, below = _code("above-op", "At or above operating point"), _code("below-op", "Below operating point")
        unit = sr.CodedConcept("1", "UCUM", "no units")
        for row in presented_findings(analysis):
            finding = sr.CodeContentItem(_code(row["name"], row["name"]), above if row["above"] else below,
                                         relationship_type=R.CONTAINS)
            finding.ContentSequence = sr.ContentSequence([
                sr.NumContentItem(_code("probability", "Probability"), float(row["probability"]), unit,
                                  relationship_type=R.HAS_PROPERTIES),
                sr.NumContentItem(_code("operating-point", "Operating point"), float(row["threshold"]), unit,
                                  relationship_type=R.HAS_PROPERTIES)])
            items.append(finding)
    items.append(sr.TextContentItem(_code("confirmation", "Reviewer confirmation"),
                                    f"confirmed by {reviewer} on {confirmed_at:%Y-%m-%d %H:%M} UTC"
                                    if reviewer else "not confirmed by a reviewer", relationship_type=R.CONTAINS))
    if analysis.sop_class_uid and analysis.sop_instance_uid:
        items.append(sr.ImageContentItem(codes.DCM.SourceImageForImageProcessingOperation, analysis.sop_class_uid,
                                         analysis.sop_instance_uid, relationship_type=R.CONTAINS))
    root = sr.ContainerContentItem(codes.DCM.ImagingMeasurementReport)
    root.ContentSequence = sr.ContentSequence(items)
    return root


def _pname(name: str) -> str:
    """A free-text reviewer name as a PN value (no ``\\`` or ``=`` separators)."""
    clean = " ".join(str(name).replace("\\", " ").replace("=", " ").split())[:63] or "unknown"
    return clean if "^" in clean else clean + "^"  # one component: the whole name as family name


def build_sr(analysis: InstanceAnalysis, series_uid: str, reviewer: str, confirmed_at: datetime,
             instance_number: int = 1) -> Dataset:
    """The Comprehensive SR of one analysis (see the module docstring)."""
    import highdicom.sr as sr

    report = sr.ComprehensiveSR(
        evidence=[analysis.source], content=_sr_content(analysis, reviewer, confirmed_at),
        series_instance_uid=series_uid, series_number=SERIES_NUMBER, sop_instance_uid=generate_uid(),
        instance_number=instance_number, manufacturer=MANUFACTURER, is_complete=True,
        is_verified=bool(reviewer), verifying_observer_name=_pname(reviewer) if reviewer else None,
        verifying_organization="medcnn reviewer" if reviewer else None)
    report.SoftwareVersions = software_version()
    report.SeriesDescription = "medcnn result (research, not for diagnosis)"
    return report


def legend_lines(analysis: InstanceAnalysis) -> list[str]:
    """The burned-in legend: model, finding, method, the research note."""
    rows = {r["name"]: r for r in presented_findings(analysis)}
    row = rows.get(analysis.target or "")
    finding = (f"{analysis.target}: p = {row['probability']:.3f} {'>=' if row['above'] else '<'} "
               f"operating point {row['threshold']:.3f}") if row else f"{analysis.target}"
    return [f"medcnn model {analysis.card.name}", f"finding {finding}", f"method {analysis.method_label}",
            RESEARCH_NOTE.upper()]


def _with_legend(rgb: np.ndarray, lines: list[str], min_width: int = 512) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(np.ascontiguousarray(rgb.astype(np.uint8)))
    if img.width < min_width:
        img = img.resize((min_width, round(img.height * min_width / img.width)), Image.Resampling.BILINEAR)
    font = ImageFont.load_default(size=max(12, img.width // 40))
    line_h = int(font.size * 1.4)
    canvas = Image.new("RGB", (img.width, img.height + line_h * len(lines) + 8), (0, 0, 0))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(lines):
        draw.text((6, img.height + 4 + i * line_h), text, fill=(255, 255, 0) if i == len(lines) - 1 else (255, 255, 255),
                  font=font)
    return np.asarray(canvas)


def build_sc(analysis: InstanceAnalysis, series_uid: str, instance_number: int = 2) -> Dataset:
    """The overlay with its burned-in legend as an RGB Secondary Capture (copies Patient/Study)."""
    from highdicom.sc import SCImage

    pixels = _with_legend(analysis.overlay, legend_lines(analysis))
    sc = SCImage.from_ref_dataset(
        ref_dataset=analysis.source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid, series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=instance_number, manufacturer=MANUFACTURER,
        patient_orientation=("L", "F"), transfer_syntax_uid=ExplicitVRLittleEndian)
    sc.BurnedInAnnotation = "YES"
    sc.SoftwareVersions = software_version()
    sc.SeriesDescription = "medcnn result (research, not for diagnosis)"
    sc.ImageComments = f"medcnn {analysis.method_label} overlay; {RESEARCH_NOTE}"
    return sc


def build_pdf(analysis: InstanceAnalysis, series_uid: str, created: datetime, instance_number: int = 3) -> Dataset:
    """The PDF report (:func:`medcnn.visualize.report.build_report`) as an Encapsulated PDF."""
    from medcnn.visualize.report import build_report

    pred, exp = analysis.prediction, analysis.explanation
    if analysis.analysed and exp is not None:
        pdf = build_report(analysis.card, pred, analysis.display, analysis.overlay, method=analysis.method_label,
                           method_params=exp.params, explanation_seconds=exp.seconds, target=analysis.target,
                           meta=analysis.meta, created=created)
    else:
        pdf = build_report(analysis.card, pred, analysis.display, None, meta=analysis.meta, created=created)
    src = analysis.source
    ds = Dataset()
    for keyword in _PATIENT_STUDY:
        if keyword in src:
            ds[keyword] = src[keyword]
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "medcnn result (research, not for diagnosis)"
    ds.InstanceNumber = instance_number
    ds.Manufacturer = MANUFACTURER
    ds.SoftwareVersions = software_version()
    ds.ContentDate, ds.ContentTime = created.strftime("%Y%m%d"), created.strftime("%H%M%S")
    ds.AcquisitionDateTime = created.strftime("%Y%m%d%H%M%S")
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "medcnn analysis report (research tool, not for diagnosis)"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = analysis.sop_class_uid, analysis.sop_instance_uid
    ds.SourceInstanceSequence = [ref]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def check_object(ds: Dataset, source: Dataset) -> Dataset:
    """Write ``ds`` as Part 10, read it back, and check it belongs to the source's study as a new object.

    Returns:
        The dataset read back.

    Raises:
        DicomObjectError: it does not serialise, or a required attribute is missing or wrong.
    """
    from medcnn.pacs.client import dataset_bytes

    try:
        back = pydicom.dcmread(io.BytesIO(dataset_bytes(ds)))
    except Exception as e:  # noqa: BLE001 - any writer/reader failure means the object is unusable
        raise DicomObjectError(f"the {type(ds).__name__} object does not serialise: {type(e).__name__}") from None
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                    "Manufacturer", "SoftwareVersions", "PatientID"):
        if keyword not in back and keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID",
                                               "SeriesInstanceUID", "Modality", "Manufacturer"):
            raise DicomObjectError(f"the result object lacks {keyword}")
    if back.StudyInstanceUID != source.StudyInstanceUID:
        raise DicomObjectError("the result object is not in the source image's study")
    if back.get("PatientID", "") != source.get("PatientID", ""):
        raise DicomObjectError("the result object's Patient module differs from the source image's")
    if back.SeriesInstanceUID == source.get("SeriesInstanceUID") or back.SOPInstanceUID == source.get("SOPInstanceUID"):
        raise DicomObjectError("the result object reuses a UID of the source image")
    if back.SOPClassUID == ENCAPSULATED_PDF and not bytes(back.EncapsulatedDocument).startswith(b"%PDF"):
        raise DicomObjectError("the Encapsulated PDF holds no PDF")
    if str(back.Modality) == "SR":
        from highdicom.sr import ComprehensiveSR

        try:
            ComprehensiveSR.from_dataset(back)
        except (AttributeError, ValueError, TypeError) as e:
            raise DicomObjectError(f"the structured report does not parse with highdicom: {e}") from None
    elif "PixelData" in back:
        if back.pixel_array.shape[:2] != (back.Rows, back.Columns):
            raise DicomObjectError("the secondary capture's pixels do not match Rows x Columns")
    return back


@dataclass
class ResultSet:
    """The objects of one analysis, checked and ready to send (SR first)."""

    analysis: InstanceAnalysis
    series_uid: str
    objects: list[Dataset]

    def summary(self) -> list[dict[str, str]]:
        """``[{"sop_class_uid", "sop_instance_uid", "series_instance_uid"}]`` per object."""
        return [{"sop_class_uid": str(ds.SOPClassUID), "sop_instance_uid": str(ds.SOPInstanceUID),
                 "series_instance_uid": str(ds.SeriesInstanceUID)} for ds in self.objects]


def build_results(analysis: InstanceAnalysis, reviewer: str, created: datetime | None = None) -> ResultSet:
    """SR + SC + PDF of an analysed image, or the SR (with PDF when a model ran) of one not analysed; each checked.

    Raises:
        DicomObjectError: an object failed :func:`check_object`.
    """
    created = created or datetime.now(timezone.utc)
    series_uid = generate_uid()
    # highdicom's person-name warnings quote the source's Patient's Name: never let them reach a log
    with quiet(Warning, reason="highdicom's person-name warnings quote the Patient's Name"):
        objects = [build_sr(analysis, series_uid, reviewer, created)]
        if analysis.analysed and analysis.overlay is not None:
            objects.append(build_sc(analysis, series_uid))
        if analysis.card is not None and analysis.display is not None:
            objects.append(build_pdf(analysis, series_uid, created))
        for ds in objects:
            check_object(ds, analysis.source)
    return ResultSet(analysis, series_uid, objects)
