"""medcnn web app entry point: ``streamlit run app.py``.

A router only: it runs the chosen page of :data:`medcnn.app.nav.PAGES` (the one list of pages,
also drawn as the sidebar links by every page, so a deep link shows the same navigation as
``/``). Each page is a thin script under ``pages/`` that calls the library (``medcnn.app``).
Weights are read from ``$MEDCNN_WEIGHTS_DIR`` (default ``weights/`` in the working directory).
URLs: ``/`` (Home), ``/Analyze``, ``/Case_review``, ``/Batch``, ``/Model_card``, ``/Recalibrate``.
"""
import streamlit as st

from medcnn.app.compute import limit_malloc_arenas
from medcnn.app.nav import router_pages
from medcnn.app.server import harden_server

limit_malloc_arenas()  # server memory stays flat under many sessions (glibc; see medcnn.app.compute)
harden_server()  # uploads: signed-in sessions only, capped per session, kept in memory (medcnn.app.server)

st.navigation(router_pages(), position="hidden").run()
