"""Real-browser test of the Case review page at projector sizes (Debian chromium + Playwright).

Skips with a reason when /usr/bin/chromium or Playwright is missing. The server runs
``app.py`` when its router lists the page (at ``/Case_review``), else the page script itself. Uses the shipped
weights when both exist, else tiny models in a temp folder; the case set is real chest
X-rays from ../shared/data when present (synthetic images otherwise), CT_small.dcm and one
text file (a case with an error).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from browser_helpers import chromium_page, require_browser, shipped_weights, streamlit_server

SIZES = ((1920, 1080), (1280, 720))
IMAGE = ".st-key-review_image img"

# The case image of the current run is decoded and not stale.
IMAGE_LOADED_JS = """() => {
  const imgs = [...document.querySelectorAll('.st-key-review_image img')]
    .filter(i => !i.closest('[data-stale="true"]'));
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
}"""

# No script run in progress (Streamlit's running indicator is gone) and the case image is loaded.
IDLE_JS = """() => !document.querySelector('[data-testid^="stStatusWidgetRunning"]')
  && [...document.querySelectorAll('.st-key-review_image img')].every(i => i.complete)"""

LAYOUT_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const r = document.querySelector('.st-key-review_image img').getBoundingClientRect();
  return {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
          innerHeight: window.innerHeight, mainScroll: main ? main.scrollWidth : 0,
          mainClient: main ? main.clientWidth : 0,
          top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height};
}"""


@contextmanager
def review_server(weights_dir: Path, timeout: float = 90) -> Iterator[str]:
    """``streamlit run app.py`` (the router names the page); yields the Case review page's URL."""
    with streamlit_server(weights_dir, timeout=timeout) as url:
        yield f"{url}/Case_review"


@pytest.fixture(scope="module")
def review_url(tmp_path_factory) -> Iterator[str]:
    require_browser()
    weights = shipped_weights()
    if weights is None:
        from test_pages import make_weights

        weights = make_weights(tmp_path_factory.mktemp("review_browser_weights"))
    with review_server(weights) as url:
        yield url


def case_files(shared: Path) -> list[dict]:
    """Playwright file payloads: two chest X-rays, CT_small.dcm, a text file."""
    from pydicom.data import get_testdata_file

    from test_pages import png_bytes

    xrays = sorted((shared / "rsna_cxr_pneumonia" / "test").rglob("*.jpg"))[:2]
    images = [(p.name, p.read_bytes(), "image/jpeg") for p in xrays]
    images += [(f"synthetic{i}.png", png_bytes(256, seed=8100 + i), "image/png") for i in range(2 - len(images))]
    images.append(("Patient_Name.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes(), "application/dicom"))
    images.append(("notes.txt", b"minutes of the meeting", "text/plain"))
    return [{"name": n, "mimeType": m, "buffer": d} for n, d, m in images]


def counter(page) -> str:
    return page.locator(".st-key-review_counter h3").inner_text().strip()


def wait_case(page, number: int, total: int, data: bytes | None = None, timeout: float = 90_000) -> None:
    text = f"Case {number} of {total}" + (f" · image {hashlib.sha256(data).hexdigest()[:8]}" if data else "")
    page.wait_for_function("t => { const h = document.querySelector('.st-key-review_counter h3');"
                           " return h && h.innerText.includes(t) && !h.closest('[data-stale=\"true\"]'); }",
                           arg=text, timeout=timeout)


def settle(page, timeout: float = 90_000) -> None:
    """Wait until the page's script run has finished (widgets are not re-rendered under the test)."""
    page.wait_for_timeout(300)
    page.wait_for_function(IDLE_JS, timeout=timeout)


def keep(path: Path) -> Path:
    """Copy a screenshot to ``$TMPDIR/medcnn_screenshots`` (kept after the test)."""
    folder = Path(tempfile.gettempdir()) / "medcnn_screenshots"
    folder.mkdir(exist_ok=True)
    return Path(shutil.copy(path, folder / path.name))


@pytest.mark.browser
@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_case_view_fits_the_screen_and_keys_step(review_url, tmp_path, size):
    # the same location tests/conftest.py reads (not imported: "conftest" names several modules)
    shared = Path(os.environ.get("MEDCNN_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    files = case_files(shared)
    width, height = size
    with chromium_page(width, height) as page:
        page.goto(review_url)
        page.get_by_text("Load a set of cases").wait_for(timeout=90_000)
        page.locator('input[type="file"]').first.set_input_files(files=files)
        wait_case(page, 1, 4, files[0]["buffer"])
        page.wait_for_function(IMAGE_LOADED_JS, timeout=90_000)
        page.get_by_text("Decision:").first.wait_for()
        page.wait_for_timeout(800)  # layout settles (chart, fonts)
        shot = tmp_path / f"review_case_{width}x{height}.png"
        page.screenshot(path=str(shot))  # the viewport: what the projector shows
        keep(shot)
        m = page.evaluate(LAYOUT_JS)
        assert m["scrollWidth"] <= m["innerWidth"], m  # no horizontal scroll
        assert m["mainScroll"] <= m["mainClient"], m
        assert m["top"] >= 0 and m["left"] >= 0 and m["bottom"] <= m["innerHeight"] and m["right"] <= m["innerWidth"], m
        assert m["height"] >= 0.45 * height, m  # a large image, not a thumbnail
        body = page.inner_text("body")
        assert "Traceback" not in body and "not a medical device" in body
        html = page.content()
        for name in [Path(f["name"]).stem for f in files] + ["notes.txt"]:
            assert name not in html, f"file name {name!r} in the page"

        page.mouse.click(width // 2, height - 5)  # focus the page, not a widget
        page.keyboard.press("ArrowRight")
        wait_case(page, 2, 4, files[1]["buffer"])
        page.wait_for_function(IMAGE_LOADED_JS, timeout=90_000)
        page.keyboard.press("ArrowRight")
        wait_case(page, 3, 4, files[2]["buffer"])
        page.wait_for_function(IMAGE_LOADED_JS, timeout=90_000)
        assert "ct_covid" in page.inner_text("body")
        for identifier in ("CompressedSamples", "CT1"):
            assert identifier not in page.content()
        page.keyboard.press("ArrowLeft")
        wait_case(page, 2, 4, files[1]["buffer"])
        settle(page)

        slider = page.locator('.st-key-review_opacity input[type="range"]')
        slider.focus()
        assert page.evaluate("document.activeElement.type") == "range"
        page.keyboard.press("ArrowRight")  # a focused slider keeps its arrow keys
        page.locator(".st-key-review_opacity").get_by_text("0.65").wait_for()
        settle(page)
        assert counter(page).startswith("Case 2 of 4")

        page.mouse.click(width // 2, height - 5)
        page.keyboard.press("PageDown")
        wait_case(page, 3, 4)
        page.keyboard.press("PageDown")
        wait_case(page, 4, 4)
        page.get_by_text("not an image").first.wait_for()
        assert "Traceback" not in page.inner_text("body")
        shot = tmp_path / f"review_error_{width}x{height}.png"
        page.screenshot(path=str(shot))
        keep(shot)
