"""Soak test: several browser sessions upload to one ``streamlit run`` server for minutes.

Claim measured: the app stays correct (no failed upload) and its memory stays bounded when
several sessions analyse images at once.

Method: ``streamlit run app.py`` on a free localhost port (``tests/app/browser_helpers.py``'s
``streamlit_server``) with the shipped weights; one headless Debian chromium with ``--contexts``
independent browser contexts (separate Streamlit sessions), driven by Playwright's async API.
Each context opens the Analyze page and uploads, one after another, chest X-ray JPEGs of
``../shared/data/rsna_cxr_pneumonia/test``, each made unique by bytes appended after its JPEG
end-of-image marker (so no cache hit, pixels unchanged), until ``--uploads`` uploads in total or
``--time-limit`` seconds. One upload's time runs from the file-input call to the moment the
decision and the decoded overlay of *that* file are in the page. A failure is an upload that
does not reach that state within 120 s, or a page showing an error or a traceback.

Memory: resident set size of the server process (psutil if installed, else ``VmRSS`` of
``/proc/PID/status``) once warm (after the first ``--contexts * 2`` uploads), after the last
upload, and after ``--idle`` seconds idle. The baseline of the ratio is the warm RSS.

Threads: the server's compute policy (:mod:`medcnn.app.compute`: torch intra-op threads per
computation and compute slots, from ``MEDCNN_TORCH_THREADS`` / ``MEDCNN_MAX_CONCURRENT`` in the
environment this script runs in) is read from the Analyze page's sidebar ("Device: CPU (2 threads,
1 compute slot)"); the load is ``--contexts`` sessions, whose model calls wait for a slot.

Usage::

    python benchmarks/bench_soak.py [--uploads 200] [--contexts 4] [--time-limit 900] [--idle 30]
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "app"))

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, OVERLAY_LOADED_JS, shipped_weights, streamlit_server  # noqa: E402

SHARED = Path(os.environ.get("MEDCNN_SHARED_DATA", REPO.parent / "shared" / "data"))


def server_pid(port: int) -> int | None:
    """PID of the ``streamlit run`` process listening on ``port`` (found by its command line)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(cmd) and str(port).encode() in cmd:
            return int(proc.name)
    return None


def rss_mib(pid: int) -> float:
    """Resident set size in MiB (psutil when installed, else /proc/PID/status VmRSS)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        text = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def os_threads(pid: int) -> int:
    return int(re.search(r"Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def unique_jpeg(data: bytes, n: int) -> bytes:
    """The same JPEG with ``n`` appended after its end-of-image marker (decoders ignore it)."""
    return data + b"\x00medcnn-soak-" + str(n).encode()


async def upload_once(page, data: bytes, timeout_ms: float = 120_000) -> float:
    fingerprint = hashlib.sha256(data).hexdigest()[:8]
    t0 = time.perf_counter()
    await page.locator('input[type="file"]').first.set_input_files(
        files=[{"name": "cxr.jpg", "mimeType": "image/jpeg", "buffer": data}])
    await page.get_by_text(f"(image {fingerprint})").wait_for(timeout=timeout_ms)
    await page.get_by_text("Decision:").first.wait_for(timeout=timeout_ms)
    await page.wait_for_function(OVERLAY_LOADED_JS, timeout=timeout_ms)
    seconds = time.perf_counter() - t0
    body = await page.inner_text("body")
    if "Traceback" in body or "Error while" in body:
        raise RuntimeError("the page shows an error")
    return seconds


async def soak(url: str, pid: int, images: list[bytes], args: argparse.Namespace) -> dict:
    from playwright.async_api import async_playwright

    times: list[float] = []
    failures: list[str] = []
    counter = iter(range(10**9))
    deadline = time.monotonic() + args.time_limit
    warm: dict[str, float] = {}
    warm_after = args.contexts * 2
    device: list[str] = []

    async def session(browser, index: int) -> None:
        context = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await context.new_page()
        page.set_default_timeout(120_000)
        await page.goto(f"{url}/Analyze")
        await page.get_by_text("Upload an image to start").wait_for(timeout=120_000)
        if not device:
            found = re.search(r"Device: ([^\n]+)", await page.inner_text("body"))
            device.append(found.group(1) if found else "unknown")
        while time.monotonic() < deadline:
            n = next(counter)
            if n >= args.uploads:
                break
            data = unique_jpeg(images[n % len(images)], n)
            try:
                times.append(await upload_once(page, data))
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                failures.append(f"upload {n} (context {index}): {type(e).__name__}: {str(e)[:120]}")
                await page.goto(f"{url}/Analyze")
            if len(times) == warm_after and not warm:
                warm["rss_mib"] = rss_mib(pid)
                warm["threads"] = os_threads(pid)
        await context.close()

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        t0 = time.perf_counter()
        await asyncio.gather(*(session(browser, i) for i in range(args.contexts)))
        wall = time.perf_counter() - t0
        await browser.close()
    after = rss_mib(pid)
    after_threads = os_threads(pid)
    await asyncio.sleep(args.idle)
    idle = rss_mib(pid)
    q = statistics.quantiles(times, n=20) if len(times) >= 2 else [float("nan")] * 19
    return {
        "uploads_done": len(times), "failures": len(failures), "failure_details": failures[:10],
        "wall_s": round(wall, 1), "uploads_per_min": round(60 * len(times) / wall, 1),
        "p50_s": round(statistics.median(times), 2) if times else None, "p95_s": round(q[18], 2),
        "max_s": round(max(times), 2) if times else None,
        "rss_warm_mib": round(warm.get("rss_mib", float("nan")), 1), "rss_after_mib": round(after, 1),
        "rss_after_idle_mib": round(idle, 1),
        "idle_vs_warm": round(idle / warm["rss_mib"], 3) if warm else None,
        "os_threads_warm": warm.get("threads"), "os_threads_after": after_threads,
        "server_device": device[0] if device else None, "contexts": args.contexts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--contexts", type=int, default=4)
    parser.add_argument("--time-limit", type=float, default=900.0, help="seconds of uploading at most")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle before the last RSS reading")
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: install Debian's chromium", file=sys.stderr)
        return 2
    weights = args.weights or shipped_weights()
    if weights is None:
        print("shipped weights not found in weights/ (give --weights DIR)", file=sys.stderr)
        return 2
    jpgs = sorted((SHARED / "rsna_cxr_pneumonia" / "test").rglob("*.jpg"))[:24]
    if not jpgs:
        print(f"no chest X-ray JPEGs under {SHARED / 'rsna_cxr_pneumonia' / 'test'}", file=sys.stderr)
        return 2
    images = [p.read_bytes() for p in jpgs]
    port_holder: dict[str, int] = {}
    from browser_helpers import free_port

    port = free_port()
    port_holder["port"] = port
    with streamlit_server(weights, port=port) as url:
        pid = server_pid(port)
        if pid is None:
            print("could not find the server process", file=sys.stderr)
            return 2
        result = asyncio.run(soak(url, pid, images, args))
    result.update(torch_threads_here=_torch_threads(), cpu_count=os.cpu_count(),
                  omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    print(json.dumps(result, indent=2))
    return 0 if result["failures"] == 0 else 1


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    sys.exit(main())
