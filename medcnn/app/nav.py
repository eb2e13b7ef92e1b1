"""The app's navigation, defined once: the router (``app.py``) and every page draw it from here.

Streamlit starts an app in its file-based multipage mode and switches to the ``st.navigation``
router only once ``app.py`` has run on that server. A deep link (a bookmarked ``/Analyze``)
opened before anyone opened ``/`` therefore runs the page script directly, and Streamlit's own
sidebar would list the ``pages/`` file names. So the built-in sidebar navigation is switched
off (``client.showSidebarNavigation = false`` in ``.streamlit/config.toml``), the router keeps
its menu hidden, and every page calls :func:`sidebar_links`: the same "Home, Analyze, ..."
links on every entry URL, in either mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

__all__ = ["PAGES", "PageSpec", "link", "page_setup", "router_pages", "sidebar_links"]


@dataclass(frozen=True)
class PageSpec:
    """One page: its script (relative to ``app.py``), title, icon and URL path."""

    script: str
    title: str
    icon: str
    url_path: str | None = None  # None: the default page, served at "/"


PAGES: tuple[PageSpec, ...] = (
    PageSpec("pages/0_Home.py", "Home", ":material/home:"),
    PageSpec("pages/1_Analyze.py", "Analyze", ":material/biotech:", "Analyze"),
    PageSpec("pages/5_Case_review.py", "Case review", ":material/co_present:", "Case_review"),
    PageSpec("pages/2_Batch.py", "Batch", ":material/stacks:", "Batch"),
    PageSpec("pages/3_Model_card.py", "Model card", ":material/description:", "Model_card"),
    PageSpec("pages/4_Recalibrate.py", "Recalibrate", ":material/tune:", "Recalibrate"),
)


def router_pages() -> list:
    """``st.Page`` objects for ``st.navigation`` in ``app.py`` (the first is the default page)."""
    return [st.Page(p.script, title=p.title, icon=p.icon, url_path=p.url_path, default=p.url_path is None)
            for p in PAGES]


def link(script: str, label: str, icon: str) -> None:
    """``st.page_link``; where Streamlit knows no pages to link to (a page script run as the entry
    script, as ``AppTest`` does) the entry is drawn as bold text instead of failing the page."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.page_link(script, label=label, icon=icon)
    except StreamlitAPIException:
        st.markdown(f"{icon} **{label}**")


def sidebar_links() -> None:
    """The same navigation links at the top of the sidebar, on every page."""
    with st.sidebar:
        for p in PAGES:
            link(p.script, p.title, p.icon)
        st.divider()


def page_setup(title: str, icon: str) -> None:
    """What every page does first: page config, the server's upload rules, the sign-in gate (when
    configured), the links.

    The upload rules (:func:`medcnn.app.server.harden_server`) are installed here as well as in
    ``app.py`` because a deep link opened before anyone opened ``/`` runs the page script without
    the router. A session that has just signed out loses its uploads and ``/media/`` files here,
    before the gate draws the sign-in form (:func:`medcnn.app.server.drop_files_after_sign_out`).

    Args:
        title: Browser tab title (" · medcnn" is appended unless it is the app's name).
        icon: Tab icon.
    """
    from medcnn.app.auth import require_sign_in
    from medcnn.app.server import drop_files_after_sign_out, harden_server

    st.set_page_config(page_title=title if title == "medcnn" else f"{title} · medcnn", page_icon=icon,
                       layout="wide")
    harden_server()
    drop_files_after_sign_out()
    require_sign_in()
    sidebar_links()

