"""The server's upload rules (:mod:`medcnn.app.server`), in process.

Streamlit's own upload route (``create_upload_routes`` of Streamlit 1.67's Starlette server) is
driven through ASGI with a stand-in runtime whose uploaded-file manager carries the guard, so a
Streamlit upgrade that stores uploads by another path than ``uploaded_file_mgr.add_file`` fails
here. Also: the per-session cap, the spool threshold that keeps multipart parts in memory, and the
upload size in ``.streamlit/config.toml``. The same rules in a real ``streamlit run`` server:
``test_server_browser.py``.
"""
from __future__ import annotations

import asyncio
import tomllib
import uuid
from types import SimpleNamespace

import pytest

pytest.importorskip("streamlit")
from starlette.applications import Starlette  # noqa: E402
from starlette.formparsers import MultiPartParser  # noqa: E402
from starlette.requests import Request  # noqa: E402
from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager  # noqa: E402
from streamlit.runtime.state.session_state import SessionState  # noqa: E402
from streamlit.web.server.starlette import starlette_routes  # noqa: E402

from browser_helpers import REPO  # noqa: E402
from medcnn.app import auth, server  # noqa: E402
from medcnn.privacy import hash_password  # noqa: E402

HASH = hash_password("a test password", params=(10, 8, 1))
BOUNDARY = "medcnnBoundary7f3a"


def multipart(data: bytes, name: str = "x.bin") -> bytes:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def asgi(app, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP request through an ASGI app; returns (status, body)."""
    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
               (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8501)}
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)] or [b""]
    sent: list[dict] = []

    async def receive() -> dict:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


class FakeRuntime:
    """What the upload route and the guard use of Streamlit's ``Runtime``: sessions (each with
    Streamlit's own ``SessionState``, which has item access but no ``get``) and the manager."""

    def __init__(self) -> None:
        self.uploaded_file_mgr = MemoryUploadedFileManager("/_stcore/upload_file")
        self.states: dict[str, dict] = {}

    def is_active_session(self, session_id: str) -> bool:
        return session_id in self.states

    def get_app_session(self, session_id: str):
        if session_id not in self.states:
            return None
        state = SessionState()
        for key, value in self.states[session_id].items():
            state[key] = value
        return SimpleNamespace(session_state=state)


@pytest.fixture
def route(monkeypatch):
    """(runtime, app): Streamlit's upload routes over a guarded manager, XSRF off, sign-in on."""
    monkeypatch.setattr(starlette_routes, "is_xsrf_enabled", lambda: False)
    monkeypatch.setenv(auth.PASSWORD_HASH_KEY, HASH)
    monkeypatch.setenv(server.SESSION_UPLOAD_ENV, "3")
    rt = FakeRuntime()
    assert isinstance(server.install_upload_guard(rt), server.UploadGuard)
    return rt, Starlette(routes=starlette_routes.create_upload_routes(rt, rt.uploaded_file_mgr, ""))


def signed_in_state() -> dict:
    return {auth._SESSION_USER: auth.PASSWORD_USER, auth._SESSION_CONFIG: auth.auth_config().fingerprint}


def put(app, session: str, data: bytes, file_id: str | None = None) -> int:
    return asgi(app, "PUT", f"/_stcore/upload_file/{session}/{file_id or uuid.uuid4()}", multipart(data))[0]


def test_upload_route_refuses_a_signed_out_session_and_keeps_nothing(route):
    rt, app = route
    rt.states["s-out"] = {}  # a session showing the sign-in form
    mgr = rt.uploaded_file_mgr
    assert put(app, "s-out", b"\x01" * 300_000) == 403
    assert put(app, "s-out", b"\x02" * 1000) == 403
    assert "s-out" not in mgr.file_storage
    assert mgr.get_stats() == {}  # Streamlit's own byte count (served by /_stcore/metrics): nothing held
    guard = mgr.__dict__["add_file"]
    assert guard.counters == {"refused_signed_out": 2, "refused_over_cap": 0, "refused_bytes": 301_000}
    assert server.install_upload_guard(rt) is guard  # installed once


def test_upload_route_stores_a_signed_in_session_file(route):
    rt, app = route
    rt.states["s-in"] = signed_in_state()
    assert put(app, "s-in", b"\x03" * 5000, "f1") == 204
    assert [len(f.data) for f in rt.uploaded_file_mgr.get_files("s-in", ["f1"])] == [5000]


def test_a_session_signed_in_under_an_old_password_counts_as_signed_out(route):
    rt, app = route
    rt.states["s-old"] = {auth._SESSION_USER: auth.PASSWORD_USER, auth._SESSION_CONFIG: "an older fingerprint"}
    assert put(app, "s-old", b"\x04" * 100) == 403


def test_per_session_cap_counts_what_the_session_holds(route):
    rt, app = route
    rt.states["a"] = signed_in_state()
    rt.states["b"] = signed_in_state()
    mb = 2**20
    assert put(app, "a", b"\x05" * (2 * mb), "one") == 204
    assert put(app, "a", b"\x06" * (2 * mb), "two") == 413  # 4 MB > the 3 MB cap
    assert put(app, "a", b"\x07" * (3 * mb), "one") == 204  # replaces "one": 3 MB held
    assert put(app, "b", b"\x08" * (2 * mb), "one") == 204  # the cap is per session
    assert {k: sorted(v) for k, v in rt.uploaded_file_mgr.file_storage.items()} == {"a": ["one"], "b": ["one"]}
    assert rt.uploaded_file_mgr.__dict__["add_file"].counters["refused_over_cap"] == 1


def test_sign_in_off_lets_every_session_upload(route, monkeypatch):
    monkeypatch.delenv(auth.PASSWORD_HASH_KEY)
    rt, app = route
    rt.states["open"] = {}
    assert put(app, "open", b"\x09" * 100) == 204


@pytest.mark.parametrize("raw", ["0", "-5", "ten", "1.5"])
def test_malformed_session_cap_is_refused_with_the_variable_named(monkeypatch, raw):
    monkeypatch.setenv(server.SESSION_UPLOAD_ENV, raw)
    with pytest.raises(ValueError, match=server.SESSION_UPLOAD_ENV):
        server.session_upload_cap()


def test_session_cap_default_and_setting(monkeypatch):
    monkeypatch.delenv(server.SESSION_UPLOAD_ENV, raising=False)
    assert server.session_upload_cap() == 512 * 2**20
    monkeypatch.setenv(server.SESSION_UPLOAD_ENV, "64")
    assert server.session_upload_cap() == 64 * 2**20


def parse(body: bytes):
    async def run():
        chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]

        async def receive():
            chunk = chunks.pop(0) if chunks else b""
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        scope = {"type": "http", "method": "PUT", "path": "/", "query_string": b"",
                 "headers": [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]}
        form = await Request(scope, receive).form()
        return form["file"]

    return asyncio.run(run())


def test_spool_threshold_keeps_a_5_mb_part_in_memory(monkeypatch):
    monkeypatch.setattr(MultiPartParser, "spool_max_size", 2**20)  # Starlette's default; restored after
    body = multipart(b"\x0a" * (5 * 2**20))
    assert parse(body).file._rolled  # Starlette's default (1 MiB): the part went to a temp file
    assert server.raise_spool_threshold(100) == 101 * 2**20
    upload = parse(body)
    assert not upload.file._rolled and len(upload.file._file.getvalue()) == 5 * 2**20
    assert server.raise_spool_threshold(10) == 101 * 2**20  # never lowered


def test_streamlit_framing_margin_is_the_one_the_spool_threshold_adds():
    assert server.MULTIPART_MARGIN_BYTES == starlette_routes._MAX_UPLOAD_MULTIPART_OVERHEAD_BYTES


def test_config_upload_size_is_the_largest_single_study():
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] == 100
    assert server.DEFAULT_SESSION_UPLOAD_MB >= cfg["server"]["maxUploadSize"]


def test_harden_server_is_a_no_op_under_apptest(monkeypatch, caplog):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(MultiPartParser, "spool_max_size", 2**20)
    monkeypatch.setattr(server, "_WARNED", [])
    at = AppTest.from_string(
        "import streamlit as st\nfrom medcnn.app.server import harden_server\nst.write(repr(harden_server()))")
    with caplog.at_level("WARNING", logger="medcnn.app.server"):
        at.run()
    assert not at.exception and at.markdown[0].value == "None"
    assert MultiPartParser.spool_max_size == 2**20
    assert not [r for r in caplog.records if r.name == "medcnn.app.server"]  # no "not guarded" warning


def test_harden_server_is_a_no_op_without_a_running_server(monkeypatch):
    from streamlit import runtime

    monkeypatch.setattr(MultiPartParser, "spool_max_size", 2**20)
    monkeypatch.setattr(server, "_WARNED", [])
    monkeypatch.setattr(runtime, "exists", lambda: False)
    assert server.harden_server() is None
    monkeypatch.setattr(runtime, "exists", lambda: True)  # a runtime whose manager is not the in-memory one
    monkeypatch.setattr(runtime, "get_instance", lambda: SimpleNamespace(uploaded_file_mgr=object()))
    assert server.harden_server() is None
    assert MultiPartParser.spool_max_size == 2**20
