"""The PACS path against a real Orthanc: find -> analyse -> send -> read back, and every failure mode.

Each test starts from the ``study`` fixture (a DX chest film, a CT slice and a text SR with known
fake identifiers on a cleared Orthanc) and the tiny seeded models of the app tests.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from conftest import FAKES, STUDY_DATE
from medcnn.__main__ import main
from medcnn.pacs.analysis import PredictorCache, analyze_instance
from medcnn.pacs.client import DicomWebClient
from medcnn.pacs.config import PacsConfig
from medcnn.pacs.errors import NotAnImageError, PacsAuthError, PacsUnreachableError
from medcnn.models.card import file_sha256
from medcnn.pacs.objects import ENCAPSULATED_PDF
from medcnn.pacs.send import ConfirmationRequired, Sender
from orthanc import orthanc_server

REPO = Path(__file__).resolve().parents[2]
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
PASSWORD_VAR = "MEDCNN_TEST_PACS_PASSWORD"


def client_for(orthanc, password: str | None = None) -> DicomWebClient:
    return DicomWebClient(PacsConfig(orthanc.dicomweb, user=orthanc.auth[0], password=password or orthanc.auth[1],
                                     timeout_s=30))


def cli(orthanc, *action: str, password: str | None = None) -> tuple[int, str, str]:
    """Run ``python -m medcnn dicomweb --url .. --user .. --password-env VAR ACTION...`` in process."""
    os.environ[PASSWORD_VAR] = password or orthanc.auth[1]
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["dicomweb", "--url", orthanc.dicomweb, "--user", orthanc.auth[0], "--password-env",
                         PASSWORD_VAR, *action])
    finally:
        os.environ.pop(PASSWORD_VAR, None)
    return code, out.getvalue(), err.getvalue()


def series_of(client: DicomWebClient, study_uid: str) -> dict[str, list]:
    return {s.series_uid: client.instances(study_uid, s.series_uid) for s in client.series(study_uid)}


def sr_items(ds) -> dict[str, list]:
    """Concept meaning -> content items (depth first) of an SR."""
    found: dict[str, list] = {}

    def walk(seq):
        for item in seq:
            found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(item)
            walk(item.get("ContentSequence", []))

    walk(ds.ContentSequence)
    return found


def test_search_by_patient_accession_date_and_modality(orthanc, study):
    client = client_for(orthanc)
    assert [s.study_uid for s in client.search_studies(patient_id=FAKES["PatientID"])] == [study["uid"]]
    assert [s.study_uid for s in client.search_studies(accession=FAKES["AccessionNumber"])] == [study["uid"]]
    assert [s.study_uid for s in client.search_studies(date_from="2019-04-01", date_to="2019-04-30",
                                                       modality="DX")] == [study["uid"]]
    assert client.search_studies(date_from="2020-01-01") == []
    assert client.search_studies(patient_id="NOSUCHPATIENT") == []
    found = client.search_studies(patient_id=FAKES["PatientID"])[0]
    assert found.date == f"{STUDY_DATE[:4]}-{STUDY_DATE[4:6]}-{STUDY_DATE[6:]}" and set(found.modalities) >= {"DX", "CT"}
    assert FAKES["PatientID"] not in repr(found) and "ZZPACSNAME" not in repr(found)  # shown to pick, never logged
    with pytest.raises(ValueError, match="modality must be one of CR, DX, CT"):
        client.search_studies(modality="MR")


def test_analyse_send_and_read_back_through_qido_and_wado(orthanc, study, tiny_weights):
    code, out, err = cli(orthanc, "analyze", "--study", study["uid"], "--weights-dir", str(tiny_weights), "--send",
                         "--confirmed-by", "Dr Ada Reviewer", "--json")
    assert code == 0, err
    results = {r["sop_instance_uid"]: r for r in json.loads(out)["results"]}
    assert set(results) == {study["dx"], study["ct"], study["sr"]}
    assert results[study["sr"]]["decision"] == "skipped" and results[study["sr"]]["sent"] == []
    dx = results[study["dx"]]
    assert dx["decision"] in ("NORMAL", "PNEUMONIA") and set(dx["probabilities"]) == {"NORMAL", "PNEUMONIA"}
    assert dx["ood"]["level"] == "ok"
    assert [s["sop_class_uid"] for s in dx["sent"]] == [SR_CLASS, SC_CLASS, ENCAPSULATED_PDF]
    assert len({s["series_instance_uid"] for s in dx["sent"]}) == 1  # one new series per analysed instance

    client = client_for(orthanc)
    stored = series_of(client, study["uid"])
    new_series = dx["sent"][0]["series_instance_uid"]
    assert new_series in stored and len(stored) == 3 + 2  # the 3 sources' series + one per analysed image
    assert {i.sop_uid for i in stored[new_series]} == {s["sop_instance_uid"] for s in dx["sent"]}
    uids = [s["sop_instance_uid"] for r in results.values() for s in r["sent"]]
    assert len(uids) == len(set(uids)) and not set(uids) & {study["dx"], study["ct"], study["sr"]}

    sr = pydicom.dcmread(io.BytesIO(client.retrieve(study["uid"], new_series, dx["sent"][0]["sop_instance_uid"])))
    assert sr.StudyInstanceUID == study["uid"] and sr.PatientID == FAKES["PatientID"]
    assert sr.Manufacturer == "medcnn" and sr.SoftwareVersions.startswith("medcnn ")
    items = sr_items(sr)
    assert items["Algorithm Name"][0].TextValue == "cxr_pneumonia"
    assert items["Model weights SHA-256"][0].TextValue == file_sha256(tiny_weights / "cxr_pneumonia.pt")
    assert items["Person Observer Name"][0].PersonName == "Dr Ada Reviewer^"
    assert "confirmed by Dr Ada Reviewer" in items["Reviewer confirmation"][0].TextValue
    assert items["Out-of-distribution verdict"][0].TextValue.startswith("ok")
    assert items["Explanation method"][0].TextValue.startswith("Grad-CAM")
    finding = items["PNEUMONIA"][0]  # the presented finding: the positive label against the threshold
    props = {p.ConceptNameCodeSequence[0].CodeMeaning: float(p.MeasuredValueSequence[0].NumericValue)
             for p in finding.ContentSequence}
    assert props["Probability"] == pytest.approx(dx["probabilities"]["PNEUMONIA"], abs=1e-6)
    assert props["Operating point"] == pytest.approx(0.5)
    above = finding.ConceptCodeSequence[0].CodeMeaning
    assert above == ("At or above operating point" if dx["decision"] == "PNEUMONIA" else "Below operating point")
    ref = items["Source image for image processing operation"][0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == study["dx"]
    assert sr.VerificationFlag == "VERIFIED"

    sc = pydicom.dcmread(io.BytesIO(client.retrieve(study["uid"], new_series, dx["sent"][1]["sop_instance_uid"])))
    assert sc.BurnedInAnnotation == "YES" and sc.pixel_array.ndim == 3 and sc.StudyInstanceUID == study["uid"]
    pdf = pydicom.dcmread(io.BytesIO(client.retrieve(study["uid"], new_series, dx["sent"][2]["sop_instance_uid"])))
    assert bytes(pdf.EncapsulatedDocument).startswith(b"%PDF") and pdf.MIMETypeOfEncapsulatedDocument == "application/pdf"


def test_an_image_no_model_reads_gets_a_report_saying_so(orthanc, study, tiny_weights):
    client = client_for(orthanc)
    inst = next(i for i in client.instances(study["uid"]) if i.sop_uid == study["ct"])
    analysis = analyze_instance(client.retrieve(inst.study_uid, inst.series_uid, inst.sop_uid), PredictorCache("cpu"),
                                model="cxr_pneumonia", weights_dir=tiny_weights)
    assert analysis.decision == "not analysed" and "accepts DICOM modalities CR, DX" in analysis.reason
    receipt = Sender(client).send(analysis, "Dr Ada Reviewer")
    assert [o["sop_class_uid"] for o in receipt.objects] == [SR_CLASS]
    sr = pydicom.dcmread(io.BytesIO(client.retrieve(study["uid"], receipt.objects[0]["series_instance_uid"],
                                                    receipt.objects[0]["sop_instance_uid"])))
    items = sr_items(sr)
    assert items["Analysis status"][0].TextValue.startswith("not analysed: model 'cxr_pneumonia' accepts")
    assert not {"Probability", "Explanation method"} & set(items)


def test_sent_once_even_if_confirmed_twice(orthanc, study, tiny_weights):
    client = client_for(orthanc)
    inst = next(i for i in client.instances(study["uid"]) if i.sop_uid == study["dx"])
    analysis = analyze_instance(client.retrieve(inst.study_uid, inst.series_uid, inst.sop_uid), PredictorCache("cpu"),
                                weights_dir=tiny_weights)
    sender = Sender(client)
    with pytest.raises(ConfirmationRequired):
        sender.send(analysis, "   ")
    assert len(client.series(study["uid"])) == 3  # nothing sent without a reviewer
    first = sender.send(analysis, "Dr Ada Reviewer")
    second = sender.send(analysis, "Dr Ada Reviewer")
    assert not first.repeated and second.repeated and second.objects == first.objects
    assert len(client.series(study["uid"])) == 4


def test_nothing_is_sent_without_send_and_confirmed_by(orthanc, study, tiny_weights):
    code, _, err = cli(orthanc, "analyze", "--study", study["uid"], "--weights-dir", str(tiny_weights), "--send")
    assert code == 2 and "both --send and --confirmed-by" in err
    code, _, err = cli(orthanc, "analyze", "--study", study["uid"], "--weights-dir", str(tiny_weights),
                       "--confirmed-by", "Dr Ada Reviewer")
    assert code == 2 and "both --send and --confirmed-by" in err
    code, out, _ = cli(orthanc, "analyze", "--study", study["uid"], "--weights-dir", str(tiny_weights), "--json")
    assert code == 0 and all(r["sent"] == [] for r in json.loads(out)["results"])
    assert len(client_for(orthanc).series(study["uid"])) == 3


def test_cstore_to_the_dicom_port(orthanc, study, tiny_weights):
    code, out, err = cli(orthanc, "analyze", "--study", study["uid"], "--series",
                         next(i.series_uid for i in client_for(orthanc).instances(study["uid"]) if i.sop_uid == study["dx"]),
                         "--weights-dir", str(tiny_weights), "--send", "--confirmed-by", "Dr Ada Reviewer",
                         "--cstore", f"ORTHANCTEST@127.0.0.1:{orthanc.dicom_port}", "--json")
    assert code == 0, err
    sent = json.loads(out)["results"][0]["sent"]
    stored = series_of(client_for(orthanc), study["uid"])
    assert {i.sop_uid for i in stored[sent[0]["series_instance_uid"]]} == {s["sop_instance_uid"] for s in sent}


def test_wrong_credentials_are_a_clear_error(orthanc, study):
    with pytest.raises(PacsAuthError, match=r"refused the credentials \(HTTP 401\)"):
        client_for(orthanc, password="wrong").search_studies()
    code, _, err = cli(orthanc, "analyze", "--study", study["uid"], password="wrong")
    assert code == 2 and "refused the credentials" in err and "wrong" not in err


def test_a_non_image_instance_is_not_analysed(orthanc, study):
    client = client_for(orthanc)
    inst = next(i for i in client.instances(study["uid"]) if i.sop_uid == study["sr"])
    assert not inst.has_pixels
    with pytest.raises(NotAnImageError, match="no image"):
        analyze_instance(client.retrieve(inst.study_uid, inst.series_uid, inst.sop_uid), PredictorCache("cpu"))


def test_server_going_away_between_find_and_retrieve():
    with orthanc_server() as server:
        server.upload(Path(get_testdata_file("CT_small.dcm")).read_bytes())
        client = client_for(server)
        inst = client.instances(client.search_studies()[0].study_uid)[0]
        server.stop()
        with pytest.raises(PacsUnreachableError, match="cannot be reached"):
            client.retrieve(inst.study_uid, inst.series_uid, inst.sop_uid)


def test_compressed_original_is_retrieved_as_stored(orthanc, shared_data):
    """Orthanc cannot transcode JPEG 2000; transfer-syntax=* still gets the original, which medcnn decodes."""
    from medcnn.io import read_image

    path = shared_data / "dicom_samples" / "RG1_J2KI.dcm"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    orthanc.clear()
    orthanc.upload(path.read_bytes())
    client = client_for(orthanc)
    inst = client.instances(client.search_studies()[0].study_uid)[0]
    data = client.retrieve(inst.study_uid, inst.series_uid, inst.sop_uid)
    assert pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
    assert read_image(data).meta.rows == 1955


def test_command_line_exactly_as_documented(orthanc, study, tiny_weights):
    """The independent check's call, in a fresh process: one JSON result per instance."""
    env = {**os.environ, PASSWORD_VAR: orthanc.auth[1], "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "medcnn", "dicomweb", "--url", orthanc.dicomweb, "--user",
                           orthanc.auth[0], "--password-env", PASSWORD_VAR, "analyze", "--study", study["uid"],
                           "--model", str(tiny_weights / "cxr_pneumonia.json"), "--json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert {r["sop_instance_uid"] for r in results} == {study["dx"], study["ct"], study["sr"]}
    for r in results:
        assert {"sop_instance_uid", "decision", "probabilities", "ood", "sent"} <= set(r)
    by_uid = {r["sop_instance_uid"]: r for r in results}
    assert by_uid[study["ct"]]["decision"] == "not analysed"  # a CXR model does not read CT
    for text in FAKES.values():
        assert text not in proc.stdout + proc.stderr
