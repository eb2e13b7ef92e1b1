"""A real ``streamlit run app.py`` with sign-in on: what a visitor can make it store, what touches disk.

Chromium (Playwright) opens the page, the session id is read from the page's own websocket
messages (``NewSession``) and the XSRF cookie from the browser, and uploads are sent straight to
``PUT /_stcore/upload_file/<session>/<file id>`` with ``requests``, as an outside reviewer did:

* a signed-out session's 20 MB uploads are refused (403) and Streamlit's metrics show no upload
  bytes held (before the fix: 204, and the bytes stayed in memory until the session ended);
* ``server.maxUploadSize`` is in effect (a body announced at 150 MB is refused at once);
* a signed-in session's uploads are stored up to its cap (``MEDCNN_MAX_SESSION_UPLOAD_MB``), and
  a 5 MB upload opens no file (strace on the server; skipped without strace);
* after sign-out, the session's ``/media/`` image and download URLs answer 404;
* ``/_stcore/metrics`` answers without sign-in and names no user, image or file (SECURITY.md).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from browser_helpers import OVERLAY_LOADED_JS, chromium_page, require_browser, streamlit_server, upload_and_wait
from test_pages import make_weights, png_bytes

pytestmark = pytest.mark.browser
requests = pytest.importorskip("requests")

PASSWORD = "an upload-limits test password"
SESSION_CAP_MB = 12
MB = 2**20
PASSWORD_FIELD = '[data-testid="stForm"] input[type="password"]'
IDLE_JS = """() => !document.querySelector('[data-testid^="stStatusWidgetRunning"]')"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A server that asks for :data:`PASSWORD`, with a small per-session upload cap; yields its URL."""
    from medcnn.privacy import hash_password

    require_browser()
    tmp = tmp_path_factory.mktemp("server_limits")
    env = {"MEDCNN_PASSWORD_HASH": hash_password(PASSWORD, params=(10, 8, 1)),
           "MEDCNN_AUDIT_DB": str(tmp / "audit.sqlite"), "MEDCNN_MAX_SESSION_UPLOAD_MB": str(SESSION_CAP_MB)}
    with streamlit_server(make_weights(tmp / "weights"), env=env) as url:
        yield url


def server_pid(url: str) -> int:
    """The pid of the ``streamlit run`` process listening on ``url``'s port."""
    port = str(urlparse(url).port)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(args) and port.encode() in args:
            return int(entry.name)
    raise AssertionError(f"no streamlit process for port {port}")


class Visitor:
    """A browser page on the server, with its session id and XSRF cookie."""

    def __init__(self, page, url: str) -> None:
        self.page, self.url, self.session = page, url, None
        page.on("websocket", lambda ws: ws.on("framereceived", self._frame))

    def _frame(self, payload) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if isinstance(payload, (bytes, bytearray)):
            msg = ForwardMsg()
            try:
                msg.ParseFromString(bytes(payload))
            except Exception:  # noqa: BLE001 - not a ForwardMsg
                return
            if msg.HasField("new_session") and msg.new_session.initialize.session_id:
                self.session = msg.new_session.initialize.session_id

    def open(self, path: str = "") -> None:
        self.page.goto(f"{self.url}/{path}")
        self.page.locator(PASSWORD_FIELD).wait_for(timeout=90_000)
        self.page.wait_for_function(IDLE_JS, timeout=60_000)
        assert self.session, "no NewSession message seen on the websocket"

    @property
    def xsrf(self) -> str:
        cookies = {c["name"]: c["value"] for c in self.page.context.cookies()}
        return cookies["_streamlit_xsrf"]

    def put(self, data: bytes, name: str = "study.dcm") -> int:
        """PUT one file to this session's upload endpoint; returns the HTTP status."""
        r = requests.put(f"{self.url}/_stcore/upload_file/{self.session}/{uuid.uuid4()}",
                         files={"file": (name, data, "application/octet-stream")},
                         headers={"X-Xsrftoken": self.xsrf}, cookies={"_streamlit_xsrf": self.xsrf}, timeout=120)
        return r.status_code

    def sign_in(self) -> None:
        self.page.locator(PASSWORD_FIELD).fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("button", name="Sign out").wait_for(timeout=90_000)
        self.page.wait_for_function(IDLE_JS, timeout=60_000)


def held_upload_bytes(url: str) -> int:
    """Bytes Streamlit's uploaded-file manager holds, as ``/_stcore/metrics`` reports them (0: none).

    Streamlit caches this metric family for 5 s, so the value is read once that has passed.
    """
    time.sleep(5.5)
    text = requests.get(f"{url}/_stcore/metrics", timeout=30).text
    lines = [ln for ln in text.splitlines() if "UploadedFileManager" in ln and not ln.startswith("#")]
    return sum(int(float(ln.rsplit(" ", 1)[1])) for ln in lines)


def test_signed_out_session_cannot_store_uploads(server):
    with chromium_page() as page:
        visitor = Visitor(page, server)
        visitor.open()
        statuses = [visitor.put(os.urandom(20 * MB)) for _ in range(3)]
        assert statuses == [403, 403, 403]
        assert held_upload_bytes(server) == 0


def test_upload_size_limit_is_in_effect(server):
    with chromium_page() as page:
        visitor = Visitor(page, server)
        visitor.open()
        parts = urlparse(server)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        try:  # a body announced at 150 MB (over maxUploadSize = 100) is refused before it is sent
            conn.putrequest("PUT", f"/_stcore/upload_file/{visitor.session}/{uuid.uuid4()}")
            for header, value in (("Content-Type", "multipart/form-data; boundary=x"),
                                  ("Content-Length", str(150 * MB)), ("X-Xsrftoken", visitor.xsrf),
                                  ("Cookie", f"_streamlit_xsrf={visitor.xsrf}")):
                conn.putheader(header, value)
            conn.endheaders()
            assert conn.getresponse().status == 413
        finally:
            conn.close()


def strace_calls(pid: int, action, trace: str = "open,openat,creat") -> list[str]:
    """Run ``action()`` while strace watches ``pid`` (every thread); return the ``trace`` calls seen."""
    folder = Path(tempfile.mkdtemp())
    log, messages = folder / "strace.log", folder / "strace.err"
    with messages.open("wb") as err:
        proc = subprocess.Popen(["strace", "-f", "-e", f"trace={trace}", "-o", str(log), "-p", str(pid)], stderr=err)
    try:
        deadline = time.monotonic() + 30
        while "attached" not in messages.read_text(errors="replace"):  # "Process <tid> attached"
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"strace cannot attach here: {messages.read_text(errors='replace')[-300:]}")
            time.sleep(0.2)
        time.sleep(1.0)  # every thread of the server attached
        action()
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    lines = log.read_text(errors="replace").splitlines()
    shutil.rmtree(folder, ignore_errors=True)
    return lines


def test_signed_in_uploads_are_capped_per_session_and_never_opened_as_files(server):
    with chromium_page() as page:
        visitor = Visitor(page, server)
        visitor.open()
        visitor.sign_in()
        statuses = []
        if shutil.which("strace"):
            opened = strace_calls(server_pid(server), lambda: statuses.append(visitor.put(os.urandom(5 * MB))))
            # a file made or written for the upload (reads, e.g. of the config, are not; the checkout
            # itself may live under the temp folder)
            to_files = [ln for ln in opened if "O_TMPFILE" in ln or "O_CREAT" in ln
                        or (f'"{tempfile.gettempdir()}' in ln and ("O_WRONLY" in ln or "O_RDWR" in ln))]
            assert not to_files, "\n".join(to_files[:10])
        else:
            statuses.append(visitor.put(os.urandom(5 * MB)))
        statuses.append(visitor.put(os.urandom(5 * MB)))  # 10 MB held
        statuses.append(visitor.put(os.urandom(5 * MB)))  # would be 15 MB > 12 MB
        assert statuses == [204, 204, 413]
        assert held_upload_bytes(server) == 10 * MB
        page.get_by_role("button", name="Sign out").click()  # sign-out drops the session's uploads
        page.locator(PASSWORD_FIELD).wait_for(timeout=90_000)
        page.wait_for_function(IDLE_JS, timeout=60_000)
        assert held_upload_bytes(server) == 0


def test_sign_out_removes_media_and_downloads_and_metrics_name_no_one(server):
    image = png_bytes(96, seed=3)
    with chromium_page() as page:
        visitor = Visitor(page, server)
        visitor.open("Analyze")
        visitor.sign_in()
        page.locator('[data-testid="stFileUploader"]').first.wait_for(timeout=90_000)
        upload_and_wait(page, "film.png", image, "image/png", timeout=120_000)
        page.wait_for_function(OVERLAY_LOADED_JS, timeout=60_000)
        srcs = page.eval_on_selector_all('[data-testid="stImage"] img', "els => els.map(e => e.src)")
        media = sorted({s for s in srcs if "/media/" in s})
        assert media, srcs
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Download overlay PNG").click()
        png_url = download.value.url
        assert "/media/" in png_url
        page.wait_for_function(IDLE_JS, timeout=60_000)
        urls = media + [png_url]
        assert [requests.get(u, timeout=30).status_code for u in urls] == [200] * len(urls)

        page.get_by_role("button", name="Sign out").click()
        page.locator(PASSWORD_FIELD).wait_for(timeout=90_000)
        page.wait_for_function(IDLE_JS, timeout=60_000)
        assert [requests.get(u, timeout=30).status_code for u in urls] == [404] * len(urls)

        metrics = requests.get(f"{server}/_stcore/metrics", timeout=30)  # no cookie, no session
        assert metrics.status_code == 200 and "cache_memory_bytes" in metrics.text
        for secret in ("password user", "film.png", hashlib.sha256(image).hexdigest()[:8], PASSWORD):
            assert secret not in metrics.text
