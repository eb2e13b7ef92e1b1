"""In a real browser, with sign-in on: a signed-out session gets the sign-in form and nothing else.

``streamlit run app.py`` with ``MEDCNN_PASSWORD_HASH`` set (the hash made by
``python -m medcnn hash-password`` from standard input, as an operator makes it) and the audit
database in a temp folder, driven by Debian's chromium through Playwright. Every page is opened
by its URL, the first one before anything else on that server (a deep link runs the page script
without the router) and all of them again once the router has run. Each must show the sign-in
form and no file uploader (neither Streamlit's widget nor any ``input[type=file]``) and no model
output. A wrong password shows the error and still no uploader; the right one shows the uploader
on Analyze.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from browser_helpers import REPO, chromium_page, require_browser, streamlit_server
from medcnn.app.nav import PAGES
from test_pages import make_weights

pytestmark = pytest.mark.browser

PASSWORD = "a browser-test password"
UPLOADER = '[data-testid="stFileUploader"]'
FILE_INPUT = 'input[type="file"]'
# What any page shows once it runs past the sign-in: model output, images, charts, page links.
OUTPUT = ('[data-testid="stImage"], [data-testid="stVegaLiteChart"], [data-testid="stArrowVegaLiteChart"], '
          '[data-testid="stDataFrame"], [data-testid="stTable"], [data-testid="stPageLink"], '
          '[data-testid="stDownloadButton"]')
OUTPUT_TEXT = ("Decision:", "probability", "overlay", "Device:", "Upload an image", "What it does not do",
               "cxr_pneumonia", "ct_covid")
# The page's script run is over: Streamlit's running indicator is gone.
IDLE_JS = """() => !document.querySelector('[data-testid^="stStatusWidgetRunning"]')"""


def page_url(url: str, path: str | None) -> str:
    return f"{url}/{path}" if path else url


@pytest.fixture(scope="module")
def signed_in_server(tmp_path_factory) -> Iterator[str]:
    """A server that asks for :data:`PASSWORD`; yields its URL."""
    require_browser()
    made = subprocess.run([sys.executable, "-m", "medcnn", "hash-password"], input=PASSWORD + "\n",
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert made.returncode == 0, made.stderr
    password_hash = made.stdout.strip()
    assert password_hash.startswith("scrypt:") and PASSWORD not in password_hash
    tmp = tmp_path_factory.mktemp("auth_browser")
    env = {"MEDCNN_PASSWORD_HASH": password_hash, "MEDCNN_AUDIT_DB": str(tmp / "audit.sqlite")}
    with streamlit_server(make_weights(tmp / "weights"), env=env) as url:
        yield url


def wait_for_sign_in(page) -> None:
    """The sign-in form is on the page and the script run has ended."""
    page.locator('[data-testid="stForm"] input[type="password"]').wait_for(timeout=90_000)
    page.get_by_role("button", name="Sign in").wait_for(timeout=30_000)
    page.wait_for_function(IDLE_JS, timeout=60_000)
    page.wait_for_timeout(500)  # anything a page would draw after the form has had time to arrive


def assert_signed_out(page, where: str) -> None:
    """Only the sign-in form: no uploader, no file input, no model output, no navigation."""
    assert page.locator(UPLOADER).count() == 0, f"{where}: a file uploader is shown"
    assert page.locator(FILE_INPUT).count() == 0, f"{where}: a file input is in the page"
    assert page.locator(OUTPUT).count() == 0, f"{where}: page content past the sign-in is shown"
    body = page.inner_text('[data-testid="stMain"]')
    assert "Sign in" in body and "asks for a password" in body, f"{where}: no sign-in form: {body[:300]!r}"
    shown = [t for t in OUTPUT_TEXT if t in page.inner_text("body")]
    assert not shown, f"{where}: shows {shown}"
    assert "Traceback" not in body, f"{where}: {body[:500]!r}"


def sign_in(page, password: str) -> None:
    page.locator('[data-testid="stForm"] input[type="password"]').fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_every_page_signed_out_shows_only_the_sign_in_form(signed_in_server):
    # the fresh server's first request is a deep link (file-based mode, no router yet); then every
    # page by its URL, again, once "/" has run the router
    first = next(p for p in PAGES if p.title == "Analyze")
    visits = [first] + [p for p in PAGES if p.url_path is None] + list(PAGES)
    assert {p.title for p in visits} == {"Home", "Analyze", "Batch", "Model card", "Recalibrate", "Case review"}
    with chromium_page() as page:
        for n, spec in enumerate(visits):
            page.goto(page_url(signed_in_server, spec.url_path))  # a new page load: a new session
            wait_for_sign_in(page)
            assert_signed_out(page, f"{spec.title} (visit {n}, /{spec.url_path or ''})")


def test_wrong_password_keeps_the_uploader_away_right_password_shows_it(signed_in_server):
    with chromium_page() as page:
        page.goto(f"{signed_in_server}/Analyze")
        wait_for_sign_in(page)
        sign_in(page, "not the password")
        page.get_by_text("Wrong password.").wait_for(timeout=60_000)
        page.wait_for_function(IDLE_JS, timeout=60_000)
        page.wait_for_timeout(500)
        assert page.locator(UPLOADER).count() == 0 and page.locator(FILE_INPUT).count() == 0
        assert page.locator('[data-testid="stForm"] input[type="password"]').is_visible()
        assert "not the password" not in page.content()

        sign_in(page, PASSWORD)
        page.get_by_text("Upload an image to start").wait_for(timeout=90_000)
        # the uploader is drawn before that text, but its widget can mount a moment after it
        page.locator(UPLOADER).first.wait_for(timeout=60_000)
        page.wait_for_function(IDLE_JS, timeout=60_000)
        assert page.locator(UPLOADER).count() == 1 and page.locator(FILE_INPUT).count() >= 1
        assert page.get_by_role("button", name="Sign out").is_visible()
        assert page.locator(OUTPUT).count() > 0  # the selector of what the signed-out pages lack works
        assert "Wrong password." not in page.inner_text("body") and PASSWORD not in page.content()
