"""The app's "Open from PACS" and "Send to PACS" against a real Orthanc (AppTest, in process).

Analyze: search by patient ID -> pick the DX image -> the same result as an upload -> confirm with
the reviewer's name -> sent once into the study; the audit database names the image by the SHA-256
of its SOP Instance UID. Case review: a whole study becomes the case set. Errors: wrong credentials
and an empty search leave the page usable.
"""
from __future__ import annotations

import hashlib
import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import FAKES
from medcnn.pacs.client import DicomWebClient
from medcnn.pacs.config import PacsConfig

sys.path.insert(0, str(Path(__file__).parents[1] / "app"))
from test_pages import page, weights_env  # noqa: E402


@pytest.fixture
def pacs_env(orthanc, tiny_weights, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDCNN_PACS_URL", orthanc.dicomweb)
    monkeypatch.setenv("MEDCNN_PACS_USER", orthanc.auth[0])
    monkeypatch.setenv("MEDCNN_PACS_PASSWORD", orthanc.auth[1])
    monkeypatch.setenv("MEDCNN_AUDIT_DB", str(tmp_path / "audit.db"))
    with weights_env(tiny_weights):
        yield tmp_path / "audit.db"


def by_key(items, key):
    return next(w for w in items if w.key == key)


def search(at, patient_id: str):
    by_key(at.text_input, "analyze_pacs_patient").set_value(patient_id)
    by_key(at.button, "analyze_pacs_search").click()
    at.run()
    assert not at.exception, at.exception
    return at


def test_open_from_pacs_analyse_confirm_and_send_once(orthanc, study, pacs_env):
    at = search(page("pages/1_Analyze.py"), FAKES["PatientID"])
    study_box = by_key(at.selectbox, "analyze_pacs_study")
    assert FAKES["PatientID"] in study_box.options[0]  # shown where needed to pick the study
    image_box = by_key(at.selectbox, "analyze_pacs_instance")
    assert len(image_box.options) == 2  # the DX and the CT; the text SR is no image
    dx = next(i for i, text in enumerate(image_box.options) if "DX" in text)  # options as shown
    image_box.set_value(dx)
    at.run()
    by_key(at.button, "analyze_pacs_open").click()
    at.run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Decision:" in text and "cxr_pneumonia" in " ".join(c.value for c in at.caption)
    key = hashlib.sha256(study["dx"].encode()).hexdigest()
    send = by_key(at.button, f"analyze_pacs_send_{key[:12]}")
    assert send.disabled  # no reviewer, no confirmation
    by_key(at.text_input, f"analyze_pacs_reviewer_{key[:12]}").set_value("Dr Ada Reviewer")
    by_key(at.checkbox, f"analyze_pacs_confirm_{key[:12]}").check()
    at.run()
    by_key(at.button, f"analyze_pacs_send_{key[:12]}").click()
    at.run()
    assert not at.exception, at.exception
    assert any("Sent to the PACS: structured report, overlay capture, PDF report" in s.value for s in at.success)
    assert by_key(at.button, f"analyze_pacs_send_{key[:12]}").disabled  # sent once: the button is off now
    client = DicomWebClient(PacsConfig(orthanc.dicomweb, user=orthanc.auth[0], password=orthanc.auth[1]))
    assert len(client.series(study["uid"])) == 4  # the three sources + one result series
    rows = sqlite3.connect(pacs_env).execute("select image from audit where image != ''").fetchall()
    assert rows and {r[0] for r in rows} == {key}  # the SHA-256 of the SOP Instance UID, nothing else
    sends = sqlite3.connect(pacs_env).execute("select image from audit where action = 'export to PACS'").fetchall()
    assert sends == [(key,)]  # the confirmed send is in the audit trail, once


def test_wrong_credentials_and_empty_results_leave_the_page_usable(orthanc, study, pacs_env, monkeypatch):
    at = search(page("pages/1_Analyze.py"), "NOSUCHPATIENT")
    assert any("No study matches" in i.value for i in at.info)
    monkeypatch.setenv("MEDCNN_PACS_PASSWORD", "wrong-password")
    at = search(page("pages/1_Analyze.py"), FAKES["PatientID"])
    assert any("refused the credentials" in e.value for e in at.error)
    assert at.file_uploader  # the upload path is still there


def test_insecure_tls_without_consent_is_refused_on_the_page(pacs_env, monkeypatch):
    monkeypatch.setenv("MEDCNN_PACS_URL", "https://pacs.invalid/dicom-web")
    monkeypatch.setenv("MEDCNN_PACS_VERIFY_TLS", "false")
    at = page("pages/1_Analyze.py")
    assert any("refusing to turn TLS verification off" in e.value for e in at.error)


def review_search(patient_id: str):
    """Case review with the PACS search for ``patient_id`` done."""
    at = page("pages/5_Case_review.py")
    by_key(at.text_input, "review_pacs_patient").set_value(patient_id)
    by_key(at.button, "review_pacs_search").click()
    at.run()
    return at


def test_case_review_takes_a_whole_study(orthanc, study, pacs_env):
    at = review_search(FAKES["PatientID"])
    by_key(at.button, "review_pacs_take").click()
    at.run()
    assert not at.exception, at.exception
    titles = " ".join(m.value for m in at.markdown)
    dx_key = hashlib.sha256(study["dx"].encode()).hexdigest()
    assert "Case 1 of 2" in titles and "Decision:" in titles
    assert dx_key[:8] in titles or hashlib.sha256(study["ct"].encode()).hexdigest()[:8] in titles


def test_case_review_adds_studies_one_after_the_other_into_one_set(orthanc, study, pacs_env):
    at = review_search(FAKES["PatientID"])
    by_key(at.button, "review_pacs_take").click()
    at.run()
    assert "Case 1 of 2" in " ".join(m.value for m in at.markdown)
    by_key(at.button, "review_pacs_add").click()  # a second study (here the same one again) joins the set
    at.run()
    assert not at.exception, at.exception
    titles = " ".join(m.value for m in at.markdown)
    assert "Case 3 of 4" in titles and "Decision:" in titles  # the first added case is shown


def test_forget_this_image_drops_an_image_opened_from_the_pacs(orthanc, study, pacs_env):
    at = search(page("pages/1_Analyze.py"), FAKES["PatientID"])
    image_box = by_key(at.selectbox, "analyze_pacs_instance")
    image_box.set_value(next(i for i, text in enumerate(image_box.options) if "DX" in text))
    at.run()
    by_key(at.button, "analyze_pacs_open").click()
    at.run()
    assert "Decision:" in " ".join(m.value for m in at.markdown) and "pacs_image" in at.session_state
    by_key(at.button, "forget_image").click()
    at.run()
    assert not at.exception, at.exception
    assert "pacs_image" not in at.session_state  # its bytes and UIDs are gone from the session
    assert "Decision:" not in " ".join(m.value for m in at.markdown)
    assert any("forgotten" in s.value for s in at.success)
