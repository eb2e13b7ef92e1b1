"""The Streamlit app's library side: the only package that imports streamlit.

``state`` owns caching (models, predictions, explanations) and card resolution for the pages,
``display`` the page helpers, ``batch`` the batch page, ``cards`` the model-card page.
"""
from __future__ import annotations

