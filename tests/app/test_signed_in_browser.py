"""In a real browser, signed in, on the shipped default model: real films whose decision names
several findings run the whole Analyze page.

Such a film (the reported ``d9863bc6...``, which called Effusion and Pneumothorax at the earlier
operating points) once made the audit database refuse the decision, and the page showed a traceback
with server paths instead of the map and the exports. Here each film must show its decision, its overlay and the export
buttons, with no error and no traceback, and the audit database must hold one analysis row per
film whose decision is the list of called findings.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from browser_helpers import REPO, chromium_page, require_browser, shipped_weights, streamlit_server, upload_and_wait

pytestmark = pytest.mark.browser

PASSWORD = "a signed-in browser-test password"
#: Real RSNA test films (NIH pixels) that the shipped cxr_findings calls with 2 or 3 findings at its
#: operating points (checked in the test with the library's own decision).
FILMS = ("test/OTHER/02c2331d-b3fa-4d55-bf86-f0efbd589c86.jpg",
         "test/PNEUMONIA/0ad9934b-bf35-497d-8082-1ecbc955d6de.jpg",
         "test/PNEUMONIA/17faf806-5b26-418b-8d5d-a1ff45539ea7.jpg")


def test_signed_in_multi_finding_films_show_map_and_exports_and_are_audited(shared_data, tmp_path):
    from medcnn.privacy.audit_db import decided_labels, read_audit

    require_browser()
    weights = shipped_weights()
    if weights is None:
        pytest.skip("the shipped weights are not in weights/")
    films = [shared_data / "rsna_cxr_pneumonia" / f for f in FILMS]
    from medcnn.inference import Predictor
    from medcnn.io import read_image

    predictor = Predictor(weights / "cxr_findings.json", device="cpu")
    expected = [predictor.predict(read_image(f), keep_steps=False).decided for f in films]
    made = subprocess.run([sys.executable, "-m", "medcnn", "hash-password"], input=PASSWORD + "\n",
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert made.returncode == 0, made.stderr
    db = tmp_path / "audit.sqlite"
    env = {"MEDCNN_PASSWORD_HASH": made.stdout.strip(), "MEDCNN_AUDIT_DB": str(db)}
    with streamlit_server(weights, env=env) as url, chromium_page() as page:
        page.goto(f"{url}/Analyze")
        page.locator('[data-testid="stForm"] input[type="password"]').fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.locator('[data-testid="stFileUploader"]').first.wait_for(timeout=90_000)
        for film in films:
            upload_and_wait(page, Path(film).name, film.read_bytes(), "image/jpeg", timeout=120_000)
            page.get_by_role("button", name="Download PDF report").wait_for(timeout=60_000)
            body = page.inner_text('[data-testid="stMain"]')
            assert "findings at or above their operating points" in body, body[:500]
            assert "Traceback" not in body and "could not be recorded" not in body, body[:800]
            assert page.locator('[data-testid="stException"]').count() == 0
            assert str(REPO) not in page.content()  # no server paths
    rows = [r for r in read_audit(db) if r["action"] == "analysis"]
    assert len(rows) == len(FILMS) and {r["model"] for r in rows} == {"cxr_findings"}
    called = [decided_labels(r["decision"]) for r in rows]
    assert called == expected  # the library's decision, stored as a list of labels, not a text
    assert all(len(c) >= 2 for c in called), f"choose films that call several findings: {called}"
