"""Every entry URL shows the same navigation: the router and each page draw medcnn.app.nav.PAGES."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from medcnn.app.nav import PAGES
from test_pages import page, weights  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]


def sidebar_labels(at) -> list[str]:
    return [link.proto.label for link in at.sidebar.get("page_link")]


def test_every_page_script_is_listed_once_and_exists():
    scripts = [p.script for p in PAGES]
    assert len(set(scripts)) == len(scripts)
    assert sorted(scripts) == sorted(str(p.relative_to(REPO)) for p in (REPO / "pages").glob("*.py"))
    assert [p.url_path for p in PAGES].count(None) == 1  # one default page, served at /


def test_builtin_file_name_navigation_is_off():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showSidebarNavigation"] is False


@pytest.mark.parametrize("script", [p.script for p in PAGES if p.script != "pages/5_Case_review.py"]
                         + ["pages/5_Case_review.py"])
def test_a_page_opened_directly_shows_the_same_links(weights, script):  # noqa: F811
    if not (REPO / script).is_file():
        pytest.fail(f"{script} is listed in the navigation but missing")
    at = page(script)
    # AppTest runs the page itself as the entry script, where Streamlit knows no other page to link
    # to: the same entries are then drawn as text (a real server always enters through app.py, and
    # the browser test checks the links of a deep link there).
    shown = sidebar_labels(at) + [m.value.split("**")[1] for m in at.sidebar.markdown if m.value.count("**") == 2]
    assert shown == [p.title for p in PAGES]


def test_the_router_and_every_page_it_runs_show_all_links(weights):  # noqa: F811
    at = page("app.py")
    assert sidebar_labels(at) == [p.title for p in PAGES]
    for spec in PAGES[1:]:
        at.switch_page(spec.script)
        at.run()
        assert not at.exception, (spec.script, at.exception)
        assert sidebar_labels(at) == [p.title for p in PAGES], spec.script
