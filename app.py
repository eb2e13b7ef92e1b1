"""medcnn web app entry point: ``streamlit run app.py``.

A router only: it names the pages (so the sidebar reads "Home", "Analyze", ... rather
than file names) and runs the chosen one. Each page is a thin script under ``pages/``
that calls the library (``medcnn.app.state``, ``app_display``, ``app_batch``,
``app_cards``, ``report``). Weights are read from ``$MEDCNN_WEIGHTS_DIR`` (default
``weights/``). URLs: ``/`` (Home), ``/Analyze``, ``/Batch``, ``/Model_card``.

Streamlit 1.67 switches to this router the first time ``app.py`` runs on a server. A deep
link (e.g. a bookmarked ``/Analyze``) opened before anyone has opened ``/`` since the
server started runs the page script directly, and the sidebar shows the ``pages/`` file
names (first entry "app") until then; the page itself works the same either way.
"""
import streamlit as st

PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon="🩻", default=True),
    st.Page("pages/1_Analyze.py", title="Analyze", icon="🔬", url_path="Analyze"),
    st.Page("pages/2_Batch.py", title="Batch", icon="🗂️", url_path="Batch"),
    st.Page("pages/3_Model_card.py", title="Model card", icon="📋", url_path="Model_card"),
    st.Page("pages/4_Recalibrate.py", title="Recalibrate", icon="🎯", url_path="Recalibrate"),
]

st.navigation(PAGES).run()
