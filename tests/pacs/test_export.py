"""``python -m medcnn export-dicom FILE --out DIR``: the three result objects beside a local DICOM."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from conftest import ct_instance
from medcnn.__main__ import main


def test_export_dicom_writes_sr_sc_and_pdf_in_the_files_study(tmp_path, tiny_weights):
    source = tmp_path / "patient_name_in_file_name.dcm"
    source.write_bytes(ct_instance(generate_uid()))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export-dicom", str(source), "--out", str(tmp_path / "out"), "--weights-dir", str(tiny_weights),
                     "--confirmed-by", "Dr Ada Reviewer", "--json"])
    assert code == 0
    result = json.loads(out.getvalue())
    files = sorted(Path(f).name.split("_")[0] for f in result["files"])
    assert files == ["pdf", "sc", "sr"] and not any("patient_name" in f for f in result["files"])
    src = pydicom.dcmread(source)
    for f in result["files"]:
        ds = pydicom.dcmread(f)
        assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
        assert ds.SeriesInstanceUID == result["sent"][0]["series_instance_uid"] != src.SeriesInstanceUID
        assert ds.Manufacturer == "medcnn"
    sr = pydicom.dcmread(next(f for f in result["files"] if Path(f).name.startswith("sr")))
    said = {item.ConceptNameCodeSequence[0].CodeMeaning: getattr(item, "TextValue", None) for item in sr.ContentSequence}
    # the tiny CT card's caveat for scanner DICOM travels with the result
    assert said["Model caveat for this input"] == "Scanner DICOM: this output was not validated on scanner slices."


def test_export_dicom_refuses_a_non_dicom(tmp_path, png):
    image = png(tmp_path / "x.png")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["export-dicom", str(image), "--out", str(tmp_path / "out")])
    assert code == 2 and "needs a DICOM file" in err.getvalue()
