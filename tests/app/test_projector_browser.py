"""Real-browser checks of what a clinician reads (Debian chromium + Playwright, shipped weights).

* Projector sizes (1280x720, 1920x1080): every column of Home's models table and of the Case review
  findings table (incl. ``call``) is visible, not cut.
* One image through every page: the same decision, probability wording and caution on Analyze, Case
  review, the Batch table (its CSV) and in the downloaded PDF.

Skips with the reason when chromium, Playwright, the shipped weights or the shared chest X-rays are
missing. Screenshots are kept under ``$TMPDIR/medcnn_screenshots`` (docs/ holds chosen ones).
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from browser_helpers import chromium_page, require_browser, shipped_weights, streamlit_server

SIZES = ((1280, 720), (1920, 1080))
SHARED = Path(os.environ.get("MEDCNN_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))

# Each header cell of the first static table (st.table) under ``scope`` inside the table's box and the viewport.
TABLE_HEADERS_JS = """scope => {
  const t = document.querySelector(scope + ' [data-testid="stTable"] table');
  const box = t.closest('[data-testid="stTable"]').getBoundingClientRect();
  return [...t.querySelectorAll('thead th')].map(th => { const r = th.getBoundingClientRect();
    return {text: th.innerText.trim(), left: r.left, right: r.right, boxLeft: box.left, boxRight: box.right,
            width: r.width, view: window.innerWidth}; });
}"""




def whole(heads: list[dict], first: str) -> list[dict]:
    """Assert every header cell lies inside its table's box and the viewport (no column cut)."""
    assert heads and heads[0]["text"] == first, heads
    for h in heads:
        assert h["width"] > 0 and h["boxLeft"] - 1 <= h["left"] and h["right"] <= h["boxRight"] + 1, h
        assert h["right"] <= h["view"], h
    return heads


def keep(page, name: str) -> Path:
    folder = Path(tempfile.gettempdir()) / "medcnn_screenshots"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def real_cxr() -> tuple[str, bytes]:
    xrays = sorted((SHARED / "rsna_cxr_pneumonia" / "test" / "PNEUMONIA").glob("*.jpg"))
    if not xrays:
        pytest.skip(f"no chest X-ray under {SHARED / 'rsna_cxr_pneumonia'} (shared data absent)")
    return "film.jpg", xrays[0].read_bytes()


@pytest.fixture(scope="module")
def url():
    require_browser()
    weights = shipped_weights()
    if weights is None:
        pytest.skip("the shipped weights (weights/*.pt) are absent: the findings table needs cxr_findings")
    with streamlit_server(weights) as u:
        yield u


def idle(page, timeout: float = 120_000) -> None:
    page.wait_for_timeout(400)
    page.wait_for_function("() => !document.querySelector('[data-testid^=\"stStatusWidgetRunning\"]')",
                           timeout=timeout)


def load_review(page, url: str, name: str, data: bytes) -> None:
    page.goto(f"{url}/Case_review")
    page.get_by_text("Load a set of cases").wait_for(timeout=90_000)
    page.locator('input[type="file"]').first.set_input_files(files=[{"name": name, "mimeType": "image/jpeg",
                                                                       "buffer": data}])
    page.locator(".st-key-review_decision").get_by_text("Decision:").wait_for(timeout=120_000)
    idle(page)


@pytest.mark.browser
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_tables_are_whole_on_a_projector(url, size):
    width, height = size
    with chromium_page(width, height) as page:
        page.goto(url)
        page.locator('[data-testid="stTable"] thead th').first.wait_for(timeout=90_000)
        idle(page)
        whole(page.evaluate(TABLE_HEADERS_JS, "body"), "model")
        keep(page, f"home_{width}x{height}")

        name, data = real_cxr()
        load_review(page, url, name, data)
        page.locator('.st-key-review_findings [data-testid="stTable"]').wait_for(timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll('.st-key-review_image img')]"
                               ".every(i => i.complete)", timeout=60_000)
        heads = whole(page.evaluate(TABLE_HEADERS_JS, ".st-key-review_findings"), "finding")
        assert [h["text"] for h in heads] == ["finding", "P", "operating point", "call"]
        keep(page, f"review_{width}x{height}")


def csv_rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))


@pytest.mark.browser
def test_one_image_reads_the_same_on_every_page(url, tmp_path):
    from pypdf import PdfReader

    name, data = real_cxr()
    with chromium_page(1400, 1000) as page:
        # Batch: the table's rows as its CSV
        page.goto(f"{url}/Batch")
        page.locator('input[type="file"]').first.set_input_files(
            files=[{"name": name, "mimeType": "image/jpeg", "buffer": data}])
        page.get_by_text("Download CSV").wait_for(timeout=120_000)
        idle(page)
        with page.expect_download() as dl:
            page.get_by_text("Download CSV").click()
        row = csv_rows(Path(dl.value.path()).read_bytes())[0]
        decision, probability, caution = row["decision"], row["probability"], row["caution"]
        assert decision and probability

        # Analyze: the decision line, the gate's box, and the PDF
        page.goto(f"{url}/Analyze")
        page.get_by_text("Upload an image to start").wait_for(timeout=90_000)
        page.locator('input[type="file"]').first.set_input_files(
            files=[{"name": name, "mimeType": "image/jpeg", "buffer": data}])
        page.get_by_text("Decision:").first.wait_for(timeout=120_000)
        page.get_by_text("Download PDF report").wait_for(timeout=120_000)
        idle(page)
        analyze = page.inner_text('[data-testid="stMain"]')
        keep(page, "analyze_1400x1000")
        with page.expect_download() as dl:
            page.get_by_text("Download PDF report").click()
        pdf = PdfReader(io.BytesIO(Path(dl.value.path()).read_bytes()))
        paper = " ".join(" ".join(p.extract_text() for p in pdf.pages).split())

        # Case review
        load_review(page, url, name, data)
        review = page.inner_text('[data-testid="stMain"]')

    said = probability.split(";")[0].split(" (")[0]  # "k of n findings at or above ..." / "P(X) = 0.123"
    for where, text in (("Analyze", analyze), ("Case review", review), ("PDF", paper)):
        flat = " ".join(text.split())
        assert f"Decision: {decision}" in flat, (where, decision)
        assert said in flat, (where, said)
        if caution:
            assert " ".join(caution.split(".")[0].split()) in flat, (where, caution)
        else:
            assert "Caution: this image is unusual" not in flat and "Not analysed:" not in flat, where
