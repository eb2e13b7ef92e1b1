"""In a real browser: a deep link opened first on a fresh server shows the same navigation as ``/``."""
from __future__ import annotations

import pytest

from medcnn.app.nav import PAGES
from browser_helpers import chromium_page, require_browser, streamlit_server
from test_pages import make_weights

pytestmark = pytest.mark.browser

SIDEBAR_LINKS = '[data-testid="stSidebar"] [data-testid="stPageLink"]'


def link_texts(page) -> list[str]:
    page.wait_for_selector(SIDEBAR_LINKS, timeout=60_000)
    page.wait_for_timeout(500)
    return [t.strip() for t in page.locator(SIDEBAR_LINKS).all_inner_texts()]


def test_deep_link_before_the_router_shows_the_same_navigation(tmp_path):
    require_browser()
    titles = [p.title for p in PAGES]
    with streamlit_server(make_weights(tmp_path / "w")) as url, chromium_page() as page:
        page.goto(f"{url}/Analyze")  # the first request this server gets is a deep link
        deep = link_texts(page)
        assert page.locator('[data-testid="stSidebarNav"]').count() == 0  # no file-name navigation
        page.goto(url)
        home = link_texts(page)
    assert [t for t in deep if t] and all(any(title in t for t in deep) for title in titles), deep
    assert len(deep) == len(home) == len(titles)
