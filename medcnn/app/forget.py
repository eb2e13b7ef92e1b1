""""Forget this image": drop an upload and everything derived from it from this server process.

What is achievable, given how Streamlit holds data:

* **The uploaded bytes** live in Streamlit's uploaded-file manager for as long as the
  ``st.file_uploader`` widget holds the file. The only way for the app to release them is to
  reset the widget, by giving it a new key: :func:`uploader_key` returns ``"upload_<n>"``, and
  :func:`forget_upload` increments ``n``, so on the next run the old widget (and its file) is
  orphaned and Streamlit deletes it at the end of that run.
* **Derived results** (decoded pixels, the analysis records with their predictions, explanations
  and sanity checks, the de-identified copy) are cache entries in :mod:`medcnn.app.state`, shared by every
  session of the process and keyed by the image hash *plus* the options (model, frame, window,
  method, target). Streamlit can clear one entry only when it is given every argument of that
  entry; an upload may have produced many (every method, target, frame and window tried), and
  custom windows cannot be enumerated. So :func:`forget_upload` clears those per-image caches
  entirely: other sessions' results are recomputed on their next rerun (one prediction and one
  explanation each), nobody's results are wrong, and no entry of the forgotten image survives.
  The model cache holds no image data and is kept.
* **This session's state** that names the image (its hash, the sanity-check result, the frame
  slider) is removed.

Not reachable from the app: copies the browser keeps (its own memory, downloads the user made),
and memory the Python allocator has freed but not yet returned to the operating system. With
bounded ``ttl=`` / ``max_entries=`` on the caches, everything else ages out on its own too.

Page use (Analyze)::

    forgotten_notice()
    upload = st.file_uploader(..., key=uploader_key())
    ...
    forget_button(key)
"""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

__all__ = ["PER_IMAGE_CACHES", "SESSION_KEYS", "forget_button", "forget_upload", "forgotten_notice", "uploader_key"]

#: The cached functions of :mod:`medcnn.app.state` that hold per-image results (the decoded image; the
#: analysis record with its prediction, maps and sanity checks; the de-identified copy).
PER_IMAGE_CACHES = ("read_upload", "analyze_upload", "deidentified_upload")
#: Session-state entries of the Analyze page that refer to the current image, the one opened from
#: a PACS included (``medcnn.app.pacs``'s ``pacs_image``: its bytes and UIDs, in memory only).
SESSION_KEYS = ("audited_upload", "frame_of", "frame", "sanity_result", "pacs_image")
_GENERATION = "medcnn_upload_generation"


def uploader_key(base: str = "upload") -> str:
    """The file uploader's widget key for this session; changes each time an upload is forgotten."""
    return f"{base}_{int(st.session_state.get(_GENERATION, 0))}"


def _caches() -> list[tuple[str, Callable[[], None]]]:
    from medcnn.app import state

    found = []
    for name in PER_IMAGE_CACHES:
        clear = getattr(getattr(state, name, None), "clear", None)
        if callable(clear):
            found.append((name, clear))
    return found


def forget_upload(key: str, *, base: str = "upload") -> list[str]:
    """Forget the upload whose SHA-256 is ``key``: reset the uploader, clear derived caches and state.

    Safe as a button callback (``on_click=forget_upload, args=(key,)``).

    Args:
        key: the upload's hex SHA-256 (:func:`medcnn.app.state.digest`).
        base: the uploader's base key (as given to :func:`uploader_key`).

    Returns:
        the names of the caches cleared.
    """
    state = st.session_state
    state.pop(uploader_key(base), None)
    state[_GENERATION] = int(state.get(_GENERATION, 0)) + 1
    for name in SESSION_KEYS:
        state.pop(name, None)
    cleared = []
    for name, clear in _caches():
        clear()
        cleared.append(name)
    state["medcnn_forgotten"] = key[:8]  # shown once as a confirmation (a hash prefix, not a name)
    return cleared


def forget_button(key: str, *, base: str = "upload", widget_key: str = "forget_image") -> None:
    """Draw the "Forget this image" button (and, after a click, a one-line confirmation)."""
    st.button("Forget this image", key=widget_key, on_click=forget_upload, args=(key,), kwargs={"base": base},
              help="Removes the upload and every result computed from it from this server's memory "
                   "(caches are shared, so other users' results are recomputed once).")


def forgotten_notice() -> None:
    """Show the confirmation left by :func:`forget_upload`, once."""
    short = st.session_state.pop("medcnn_forgotten", None)
    if short:
        st.success(f"Image {short} forgotten: the upload and its results were removed from this server's memory.")
