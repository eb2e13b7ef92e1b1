"""Shared helpers of the real-browser tests and benchmarks: ``streamlit run app.py`` on a free
localhost port, driven by Debian's chromium through Playwright.

Used by ``test_browser.py``, ``test_nav_browser.py``, ``test_review_browser.py``,
``test_auth_browser.py``, ``test_leaks.py`` and ``benchmarks/bench_app_latency.py`` /
``bench_soak.py``. Not a test module (no ``test_`` prefix): pytest collects nothing here.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SHIPPED = ("cxr_findings", "cxr_pneumonia", "ct_covid")

# The overlay image of the current run is in the page and decoded (not a stale element).
OVERLAY_LOADED_JS = """() => {
  const imgs = [...document.querySelectorAll('[data-testid="stImage"]')]
    .filter(e => !e.closest('[data-stale="true"]') && e.innerText.includes('overlay'));
  return imgs.length > 0 && imgs.every(e => { const i = e.querySelector('img');
    return i && i.complete && i.naturalWidth > 0; });
}"""


def require_browser() -> None:
    """Skip the calling test, with the reason, when Debian's chromium or Playwright is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (install Debian's chromium: apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shipped_weights() -> Path | None:
    """``<repo>/weights`` when both shipped models are there, else None."""
    folder = REPO / "weights"
    ok = all((folder / f"{n}.json").is_file() and (folder / f"{n}.pt").is_file() for n in SHIPPED)
    return folder if ok else None


@contextmanager
def streamlit_server(weights_dir: Path, port: int | None = None, timeout: float = 90,
                     env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Run ``streamlit run app.py`` on a free localhost port; yield its URL; always stop it.

    Args:
        weights_dir: The server's ``MEDCNN_WEIGHTS_DIR``.
        port: Port to listen on (default: a free one).
        timeout: Seconds to wait for the health endpoint.
        env: Extra environment variables of the server (on top of this process's).
    """
    port = port or free_port()
    env = {**os.environ, "MEDCNN_WEIGHTS_DIR": str(weights_dir), **(env or {})}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"streamlit exited with {proc.returncode}: {log.read()[-2000:].decode(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer on {url} within {timeout} s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    """A Playwright page in Debian's chromium (headless)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def open_analyze(page, url: str) -> None:
    page.goto(f"{url}/Analyze")
    page.get_by_text("Upload an image to start").wait_for(timeout=90_000)


def upload_and_wait(page, name: str, data: bytes, mime: str, timeout: float = 60_000) -> dict[str, float]:
    """Upload a file on the Analyze page; wait until the probabilities and the overlay of
    *this* file are visible (its fingerprint is in the explanation caption).

    Returns:
        ``{"total": s from the upload call, "after_upload": s from the upload's HTTP response}``.
    """
    fingerprint = hashlib.sha256(data).hexdigest()[:8]
    marks: dict[str, float] = {}

    def on_response(response) -> None:
        if "/_stcore/upload_file" in response.url and response.request.method == "PUT":
            marks.setdefault("uploaded", time.perf_counter())

    page.on("response", on_response)
    t0 = time.perf_counter()
    page.locator('input[type="file"]').first.set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.get_by_text(f"(image {fingerprint})").wait_for(timeout=timeout)
    page.get_by_text("Decision:").first.wait_for(timeout=timeout)
    page.wait_for_function(OVERLAY_LOADED_JS, timeout=timeout)
    t1 = time.perf_counter()
    page.remove_listener("response", on_response)
    return {"total": t1 - t0, "after_upload": t1 - marks.get("uploaded", t0)}


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """Full-page PNG under ``tmp_path`` and a copy under ``$TMPDIR/medcnn_screenshots``."""
    path = tmp_path / f"{name}.png"
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": 2400})  # Streamlit scrolls inside
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    keep = Path(tempfile.gettempdir()) / "medcnn_screenshots"
    keep.mkdir(exist_ok=True)
    shutil.copy(path, keep / path.name)
    return path
