"""What a visitor can make this server store, and what touches its disk (see SECURITY.md).

Streamlit 1.67 serves the app with Starlette (under uvicorn, in the app's own process). A file
upload is a multipart ``PUT /_stcore/upload_file/<session id>/<file id>`` that any browser session
can send once it knows its session id and XSRF cookie, both of which a signed-out page has. Left
alone, Streamlit stores such a file in its uploaded-file manager (process memory) until the session
ends, whether or not the page ever drew an uploader, and Starlette's multipart parser writes every
part over 1 MiB to an unnamed temporary file in ``/tmp`` while it parses it. Four rules close that.
Rules 1 to 3 are installed once per process by :func:`harden_server`, which ``app.py`` and every
page's :func:`medcnn.app.nav.page_setup` call (idempotent; a no-op without a running server, e.g.
under ``AppTest``); rule 4 runs at the start of every page run:

1. **Only a signed-in session stores uploads.** The runtime's uploaded-file manager gets a guard
   on ``add_file``: the upload route calls exactly that method of exactly that object after it has
   parsed the body (``create_upload_routes`` in ``streamlit/web/server/starlette/starlette_routes.py``;
   ``tests/app/test_server.py`` drives that route to pin it). While sign-in is on, a file for a
   session that is not signed in (:func:`signed_in`) is refused with HTTP 403, counted
   (:attr:`UploadGuard.counters`) and logged as a warning with its size only; nothing of it is
   kept. While sign-in is off every session may upload.
2. **A per-session cap.** A session holds at most ``MEDCNN_MAX_SESSION_UPLOAD_MB`` (default
   :data:`DEFAULT_SESSION_UPLOAD_MB`) of uploads at once; a file that would pass it gets HTTP 413.
   The largest single file is Streamlit's ``server.maxUploadSize`` (``.streamlit/config.toml``).
3. **Uploads stay in memory.** Starlette's ``MultiPartParser.spool_max_size`` (1 MiB) is raised to
   the largest body the upload route accepts (``server.maxUploadSize`` plus the route's 1 MiB
   framing margin), so a part is never rolled over to a temporary file (strace shows no file
   opened; SECURITY.md).
4. **Sign-out drops the session's files.** :func:`drop_files_after_sign_out` (in ``page_setup``,
   before the sign-in gate) notices a session that was signed in and no longer is, and removes its
   uploads and its ``/media/`` files at once: images, and the downloads, which Streamlit would
   otherwise keep serving until one more script run of any session.

Why these sizes (MB as Streamlit counts them, 2**20 bytes): the largest single study the pages
read is a digital chest radiograph of 4300 x 4300 pixels at 16 bits, 35 MB uncompressed, or a
multi-frame CT of 190 slices of 512 x 512 at 16 bits (95 MB); so ``maxUploadSize = 100``, down
from 200.
Batch and Case review take several files and several ZIPs at once, so a large batch is split
into ZIPs of at most 100 MB each; what one session may hold in total is the separate cap of rule
2: 512 MB covers 50 such radiographs at 10 MB or a case review of 100 cases at 5 MB.

What none of this does (a reverse proxy must, SECURITY.md): a signed-out visitor can still make
the server *parse* one body of up to ``maxUploadSize`` per request before rule 1 refuses it (it
is then freed); and ``/_stcore/metrics`` answers anyone. Between the server's start and the first
page run (the first visitor's first page load) no rule is installed yet.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

__all__ = ["DEFAULT_SESSION_UPLOAD_MB", "MULTIPART_MARGIN_BYTES", "SESSION_UPLOAD_ENV", "UploadGuard",
           "drop_files_after_sign_out", "harden_server", "install_upload_guard", "raise_spool_threshold",
           "session_upload_cap", "sign_in_required", "signed_in"]

SESSION_UPLOAD_ENV = "MEDCNN_MAX_SESSION_UPLOAD_MB"
#: Default per-session cap on stored uploads, in MB (2**20 bytes): module docstring.
DEFAULT_SESSION_UPLOAD_MB = 512
#: The framing margin Streamlit's upload route allows over ``maxUploadSize`` while it streams the
#: body (``_MAX_UPLOAD_MULTIPART_OVERHEAD_BYTES``, 1 MiB in 1.67).
MULTIPART_MARGIN_BYTES = 2**20
_HAD_USER = "medcnn_server_had_user"  # session state: this session was signed in on an earlier run
_LOG = logging.getLogger(__name__)
_INSTALL = threading.Lock()
_WARNED: list[bool] = []  # the "not guarded" warning is logged once per process


def session_upload_cap() -> int:
    """The per-session cap in bytes, from ``MEDCNN_MAX_SESSION_UPLOAD_MB``.

    Raises:
        ValueError: the variable is set but not a whole number of at least 1.
    """
    raw = os.environ.get(SESSION_UPLOAD_ENV, "").strip()
    if not raw:
        return DEFAULT_SESSION_UPLOAD_MB * 2**20
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{SESSION_UPLOAD_ENV} must be a whole number of MB, at least 1 (got {raw!r})")
    return int(raw) * 2**20


def sign_in_required() -> bool:
    """Whether the server asks for sign-in (a misconfigured sign-in counts as required: closed)."""
    from medcnn.app.auth import auth_config
    from medcnn.privacy import PasswordHashError

    try:
        return auth_config().mode != "off"
    except PasswordHashError:
        return True


def signed_in(state: Any) -> bool:
    """Whether a session's state says it is signed in, by the rule of :func:`medcnn.app.auth.require_sign_in`.

    Works on ``st.session_state`` and on a session's ``SessionState`` read from another thread (the
    server's; reads of its dicts are atomic under the GIL).

    Args:
        state: the session's state.

    Returns:
        ``True`` for a password user whose configuration fingerprint is current, or an OIDC user who
        passed the allow-list; ``False`` otherwise (also when sign-in is misconfigured).
    """
    from medcnn.app import auth
    from medcnn.privacy import PasswordHashError

    try:
        cfg = auth.auth_config()
    except PasswordHashError:
        return False
    return auth.signed_in(lambda key: _get(state, key), cfg)


def _get(state: Any, key: str) -> Any:
    """``state[key]`` or ``None``: Streamlit's own ``SessionState`` has item access but no ``get``."""
    try:
        return state[key]
    except KeyError:
        return None


class UploadGuard:
    """Wraps an uploaded-file manager's ``add_file``: rules 1 and 2 of the module docstring.

    Args:
        manager: Streamlit's ``MemoryUploadedFileManager`` (its ``file_storage`` and ``add_file``).
        add_file: the manager's original ``add_file``.
        may_store: ``session_id -> bool``: whether that session may store uploads now.
        cap: per-session cap in bytes.
    """

    def __init__(self, manager: Any, add_file: Any, may_store: Any, cap: int) -> None:
        self.manager, self._add_file, self._may_store, self.cap = manager, add_file, may_store, cap
        self._lock = threading.Lock()
        self.counters = {"refused_signed_out": 0, "refused_over_cap": 0, "refused_bytes": 0}

    def _refuse(self, kind: str, size: int, status: int, detail: str) -> None:
        from starlette.exceptions import HTTPException

        with self._lock:
            self.counters[kind] += 1
            self.counters["refused_bytes"] += size
        _LOG.warning("Upload of %d bytes refused: %s.", size,
                     "session not signed in" if kind == "refused_signed_out" else "over the per-session cap")
        raise HTTPException(status_code=status, detail=detail)

    def __call__(self, session_id: str, file: Any) -> None:
        size = len(file.data)
        if not self._may_store(session_id):
            self._refuse("refused_signed_out", size, 403, "Sign in first: this server keeps no uploads "
                                                          "of a session that is not signed in.")
        held = dict(self.manager.file_storage.get(session_id, {}))
        held.pop(file.file_id, None)  # a re-upload under the same id replaces the old file
        total = sum(len(f.data) for f in held.values()) + size
        if total > self.cap:
            self._refuse("refused_over_cap", size, 413,
                         f"This session already holds {(total - size) / 2**20:.0f} MB of uploads; the limit is "
                         f"{self.cap / 2**20:.0f} MB. Remove files or forget images first.")
        self._add_file(session_id, file)


def _may_store(runtime: Any) -> Any:
    def may_store(session_id: str) -> bool:
        if not sign_in_required():
            return True
        session = runtime.get_app_session(session_id)
        return session is not None and signed_in(session.session_state)

    return may_store


def raise_spool_threshold(max_upload_mb: int) -> int:
    """Keep every upload route body in memory: Starlette spools a part over ``spool_max_size`` to disk.

    Args:
        max_upload_mb: Streamlit's ``server.maxUploadSize`` (MB).

    Returns:
        the threshold now in effect, in bytes (never lowered).
    """
    from starlette.formparsers import MultiPartParser

    wanted = max_upload_mb * 2**20 + MULTIPART_MARGIN_BYTES
    if MultiPartParser.spool_max_size < wanted:
        MultiPartParser.spool_max_size = wanted
    return MultiPartParser.spool_max_size


def harden_server() -> UploadGuard | None:
    """Install rules 1 to 3 of the module docstring in this process, once.

    Returns:
        the upload guard, or ``None`` when no Streamlit server runs in this process (scripts, and
        ``AppTest``, whose stand-in runtime is a mock) or its uploaded-file manager is not
        Streamlit's in-memory one.

    Raises:
        ValueError: ``MEDCNN_MAX_SESSION_UPLOAD_MB`` is malformed.
    """
    from streamlit import config, runtime

    if not runtime.exists() or config.get_option("global.appTest"):
        return None
    guard = install_upload_guard(runtime.get_instance())
    if guard is not None:
        raise_spool_threshold(int(config.get_option("server.maxUploadSize")))
    return guard


def install_upload_guard(rt: Any) -> UploadGuard | None:
    """Put an :class:`UploadGuard` on ``rt.uploaded_file_mgr`` (once; later calls return the same one).

    Args:
        rt: the Streamlit ``Runtime`` (its ``uploaded_file_mgr`` and ``get_app_session``).

    Returns:
        the guard, or ``None`` when the manager is not Streamlit's in-memory one (then a warning
        is logged: uploads are not guarded).
    """
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager

    manager = rt.uploaded_file_mgr
    with _INSTALL:
        guard = vars(manager).get("add_file") if isinstance(manager, MemoryUploadedFileManager) else None
        if isinstance(guard, UploadGuard):
            return guard
        if not isinstance(manager, MemoryUploadedFileManager):
            if not _WARNED:
                _WARNED.append(True)
                _LOG.warning("Streamlit's uploaded-file manager is %s, not the in-memory one: uploads are not "
                             "guarded.", type(manager).__name__)
            return None
        guard = UploadGuard(manager, manager.add_file, _may_store(rt), session_upload_cap())
        manager.add_file = guard  # the upload route calls manager.add_file(...) on this very object
        return guard


def drop_files_after_sign_out() -> bool:
    """On the first run after this session stopped being signed in, drop its uploads and media files.

    Call at the start of every page run, before the sign-in gate (:func:`medcnn.app.nav.page_setup`).
    By then Streamlit has dropped the session's references to its ``/media/`` files (it does at the
    start of every full run), so they are orphans unless another session shows the same file. One
    sweep deletes orphaned images and marks orphaned downloads; a second deletes marked downloads.
    Streamlit itself sweeps at the end of every run of every session, so the extra sweep only
    shortens how long an orphaned download lives; it never removes a file a session still shows.

    Returns:
        whether this run dropped files.
    """
    import streamlit as st
    from streamlit import runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    state = st.session_state
    if signed_in(state):
        state[_HAD_USER] = True
        return False
    if not state.get(_HAD_USER):
        return False
    del state[_HAD_USER]
    if not runtime.exists():
        return False
    ctx = get_script_run_ctx()
    rt = runtime.get_instance()
    if ctx is not None:
        rt.uploaded_file_mgr.remove_session_files(ctx.session_id)
        rt.media_file_mgr.clear_session_refs(ctx.session_id)
    rt.media_file_mgr.remove_orphaned_files()
    rt.media_file_mgr.remove_orphaned_files()
    return True
