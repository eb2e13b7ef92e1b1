"""Analyze with sign-in on, on a multi-label model whose decision names several findings.

A decision such as "Effusion, Pneumothorax" once made the audit database refuse the row (a comma is
not in a label name) and the page stopped with a traceback before the map and the exports. The
designed model here calls two findings on every image, so the whole signed-in page must run: the
findings, the overlay, the exports, and one audit row whose decision is the list of findings.
"""
from __future__ import annotations

import json

import pytest

import test_findings_app as designed
from test_pages import REPO, make_weights, png_bytes, weights_env

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

PASSWORD = "an app-test password"
#: Effusion (0.6 >= 0.5) and Nodule (0.4 >= 0.2) are called, Pneumothorax (0.3 < 0.5) is not.
TWO_CALLED = {**designed.DESIGN, "Effusion": (0.6, 1.5, 0.5, True)}


@pytest.fixture()
def signed_in_env(tmp_path, monkeypatch):
    from medcnn.privacy import hash_password

    monkeypatch.setattr(designed, "DESIGN", TWO_CALLED)
    folder = make_weights(tmp_path / "weights")
    designed.save_findings_model(folder)
    for key in ("MEDCNN_AUDIT_LOG", "MEDCNN_USERS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MEDCNN_PASSWORD_HASH", hash_password(PASSWORD, params=(10, 8, 1)))
    monkeypatch.setenv("MEDCNN_AUDIT_DB", str(tmp_path / "audit.sqlite"))
    with weights_env(folder):
        yield tmp_path / "audit.sqlite"


def test_signed_in_multi_finding_decision_runs_the_whole_page_and_is_audited_as_a_list(signed_in_env):
    from medcnn.privacy.audit_db import decided_labels, read_audit

    at = AppTest.from_file(str(REPO / "pages" / "1_Analyze.py"), default_timeout=120).run()
    at.text_input(key="medcnn_sign_in_password").input(PASSWORD)
    at.button[0].click()
    at = at.run()
    assert not at.exception
    at.selectbox(key="model_choice").set_value("cxr_findings").run()
    at.file_uploader[0].set_value(("chest.png", png_bytes(), "image/png"))
    at = at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]  # the audit row was written
    decision = next(m.value for m in at.markdown if m.value.startswith("**Decision:"))
    assert "2 of 3 findings at or above their operating points" in decision
    assert any("overlay" in c for img in at.image for c in img.captions)  # the page ran past the audit
    assert any(b.label == "Download PDF report" for b in at.get("download_button"))
    rows = [r for r in read_audit(signed_in_env) if r["action"] == "analysis"]
    assert len(rows) == 1 and rows[0]["user"] == "password user" and rows[0]["model"] == "cxr_findings"
    assert decided_labels(rows[0]["decision"]) == ["Nodule", "Effusion"]  # by relative probability
    assert json.loads(rows[0]["decision"]) == ["Nodule", "Effusion"]


def test_signed_in_multi_finding_analysis_leaves_no_identifier_behind(signed_in_env, tmp_path, monkeypatch):
    """The leak check of ``test_leaks`` with sign-in on and a decision naming several findings: a CR
    DICOM with planted identifiers; no identifier or pixel slice in any new file, the audit rows,
    the logs or the page."""
    import hashlib
    import io
    import logging
    import tempfile
    from pathlib import Path

    import pydicom

    from medcnn.privacy.audit_db import read_audit
    from test_leaks import fake_identified_dicom, needles, read_files, search, snapshot, changed_files

    monkeypatch.setenv("MEDCNN_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    ds = pydicom.dcmread(io.BytesIO(fake_identified_dicom()))
    ds.Modality, ds.BodyPartExamined, ds.PatientAge = "CR", "CHEST", "045Y"  # an adult chest film
    buf = io.BytesIO()
    ds.save_as(buf)
    data = buf.getvalue()
    what = needles(data)
    roots = [REPO, Path(tempfile.gettempdir())]
    before = snapshot(roots, skip=(tmp_path,))
    records = io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        at = AppTest.from_file(str(REPO / "pages" / "1_Analyze.py"), default_timeout=120).run()
        at.text_input(key="medcnn_sign_in_password").input(PASSWORD)
        at.button[0].click()
        at = at.run()
        at.selectbox(key="model_choice").set_value("cxr_findings").run()
        at.file_uploader[0].set_value(("ZZLEAKNAME_LEAKID7741993.dcm", data, "application/dicom"))
        at = at.run()
        assert not at.exception, at.exception
        rendered = "\n".join(str(e.value) for e in [*at.markdown, *at.caption, *at.warning, *at.info, *at.error])
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    assert "2 of 3 findings at or above their operating points" in rendered
    rows = read_audit(signed_in_env)
    key = hashlib.sha256(data).hexdigest()
    analyses = [r for r in rows if r["action"] == "analysis"]
    assert len(analyses) == 1 and analyses[0]["image"] == key and analyses[0]["decision"] == '["Nodule", "Effusion"]'
    blobs = read_files(changed_files(before, snapshot(roots, skip=(tmp_path,))))
    blobs.update({"audit database": signed_in_env.read_bytes(), "json log": (tmp_path / "audit.jsonl").read_bytes(),
                  "log records": records.getvalue().encode(), "rendered page": rendered.encode(),
                  "audit rows": repr(rows).encode()})
    assert not search(blobs, what), search(blobs, what)
