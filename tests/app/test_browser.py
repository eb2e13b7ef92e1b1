"""Real-browser test: ``streamlit run app.py`` driven by Debian's chromium through Playwright.

Skips with a reason when /usr/bin/chromium or Playwright is missing (``.ci/run`` installs
chromium). Uses the shipped weights when both exist, else tiny models in a temp folder.
The server and browser helpers are in ``browser_helpers.py`` (shared with the other browser
tests and the benchmarks).
"""
from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser_helpers import (chromium_page, open_analyze, require_browser, screenshot, shipped_weights,
                             streamlit_server, upload_and_wait)

# ----------------------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def app_url(tmp_path_factory) -> Iterator[str]:
    require_browser()
    weights = shipped_weights()
    if weights is None:
        sys.path.insert(0, str(Path(__file__).parent))
        from test_pages import make_weights

        weights = make_weights(tmp_path_factory.mktemp("browser_weights"))
    with streamlit_server(weights) as url:
        yield url


@pytest.mark.browser
def test_browser_upload_chest_xray_and_dicom(app_url, shared_data, tmp_path):
    from pydicom.data import get_testdata_file

    xrays = sorted((shared_data / "rsna_cxr_pneumonia" / "test").rglob("*.jpg"))
    if not xrays:
        pytest.skip(f"no chest X-ray JPEGs under {shared_data / 'rsna_cxr_pneumonia' / 'test'}")
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    with chromium_page() as page:
        page.goto(app_url)
        page.get_by_text("What it does not do").wait_for(timeout=90_000)
        assert page.get_by_text("not a medical device").first.is_visible()
        links = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink"]').all_inner_texts()
        # a Material icon's ligature name ("home") is its own line before the label: keep the label
        labels = [n.strip().splitlines()[-1].strip() for n in links]
        assert labels == ["Home", "Analyze", "Case review", "Batch", "Model card", "Recalibrate"], links
        screenshot(page, tmp_path, "landing")

        open_analyze(page, app_url)
        upload_and_wait(page, xrays[0].name, xrays[0].read_bytes(), "image/jpeg")
        body = page.inner_text("body")
        assert "Decision:" in body and "auto-chosen for PNG/JPEG" in body and "Grad-CAM overlay" in body
        if "cxr_findings" in body:  # the shipped default: a findings table against per-finding operating points
            assert "findings at or above their operating points" in body and "finding " in body, body
        else:  # the tiny stand-in models (no shipped weights)
            assert "cxr_pneumonia" in body and "threshold" in body
        page.get_by_text("Download PDF report").wait_for(state="visible")
        screenshot(page, tmp_path, "analyze_cxr")

        # DICOM, no extension. pydicom's CT_small is a small-field axial slice of the upper chest (both
        # lung apices beside the spine): the CT model reads it through its input contract.
        page.locator('input[type="file"]').first.set_input_files(
            files=[{"name": "CT_small", "mimeType": "application/octet-stream", "buffer": ct}])
        page.get_by_text("auto-chosen for CT").first.wait_for(timeout=90_000)
        page.get_by_text("P(COVID) =").first.wait_for(timeout=90_000)
        body = page.inner_text("body")
        assert "ct_covid" in body and "Decision: not analysed" not in body
        assert "pattern" in body and "on this slice" in body  # the card's words, not a finding about the patient
        for identifier in ("CompressedSamples", "CT1"):
            assert identifier not in page.content(), f"patient identifier {identifier!r} shown"
        screenshot(page, tmp_path, "analyze_ct_dicom")
        with page.expect_download(timeout=60_000) as download:
            page.get_by_text("Download PDF report").click()
        pdf = Path(download.value.path()).read_bytes()
        text = "".join(p.extract_text() for p in pytest.importorskip("pypdf").PdfReader(io.BytesIO(pdf)).pages)
        assert "ct_covid" in text and "not a medical device" in text and "P(COVID)" in text
        assert "CompressedSamples" not in text and b"CompressedSamples" not in pdf

        page.locator('input[type="file"]').first.set_input_files(
            files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"just text"}])
        page.get_by_text("is not an image").first.wait_for(timeout=60_000)
        assert "Traceback" not in page.inner_text("body")
        screenshot(page, tmp_path, "analyze_error")
