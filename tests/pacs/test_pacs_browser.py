"""Real browser (Debian chromium via Playwright) against a real Orthanc: on the Analyze page,
"Open from PACS" -> search -> open the DX film -> result -> reviewer's name + confirmation -> Send to PACS;
the result series is then in the study on the server."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from conftest import FAKES
from medcnn.pacs.client import DicomWebClient
from medcnn.pacs.config import PacsConfig

sys.path.insert(0, str(Path(__file__).parents[1] / "app"))
from browser_helpers import chromium_page, open_analyze, require_browser, streamlit_server  # noqa: E402


@pytest.mark.browser
def test_open_from_pacs_result_confirm_send(orthanc, study, tiny_weights):
    require_browser()
    env = {"MEDCNN_PACS_URL": orthanc.dicomweb, "MEDCNN_PACS_USER": orthanc.auth[0],
           "MEDCNN_PACS_PASSWORD": orthanc.auth[1], "MEDCNN_AUDIT_DB": "off"}
    with streamlit_server(tiny_weights, env=env) as url, chromium_page() as page:
        open_analyze(page, url)
        page.get_by_text("Open from PACS").click()
        page.get_by_label("Patient ID").fill(FAKES["PatientID"])
        page.get_by_label("Patient ID").press("Enter")
        page.get_by_role("button", name="Search the PACS").click()
        box = page.get_by_role("combobox", name="Image")
        box.wait_for()
        page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")
        box.click()
        page.get_by_role("option", name=re.compile("DX")).click()
        page.get_by_role("button", name="Open this image").click()
        page.get_by_text("Decision:").first.wait_for(timeout=120_000)
        page.get_by_text("cxr_pneumonia").first.wait_for()  # the DX film went to the chest X-ray model
        send = page.get_by_role("button", name="Send to PACS")
        send.wait_for()
        assert send.is_disabled()
        page.get_by_label("Reviewer (your name, recorded in the report)").fill("Dr Ada Reviewer")
        page.get_by_label("Reviewer (your name, recorded in the report)").press("Enter")
        page.get_by_text("I have reviewed this result and confirm sending it to the PACS").click()
        page.wait_for_function("() => [...document.querySelectorAll('button')].some("
                               "b => b.innerText.includes('Send to PACS') && !b.disabled)")
        send.click()
        page.get_by_text("Sent to the PACS: structured report, overlay capture, PDF report").wait_for(timeout=120_000)
        assert page.get_by_role("button", name="Send to PACS").is_disabled()
    client = DicomWebClient(PacsConfig(orthanc.dicomweb, user=orthanc.auth[0], password=orthanc.auth[1]))
    assert len(client.series(study["uid"])) == 4
