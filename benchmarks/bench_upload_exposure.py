"""What a visitor can make a running server store, and what touches disk during an upload.

Starts ``streamlit run app.py`` (sign-in on) from ``--app-dir`` (default: this repository; give a
checkout of an older commit to measure it the same way), opens the page in chromium and sends
uploads straight to ``PUT /_stcore/upload_file/<session>/<file id>``, as in
``tests/app/test_server_browser.py`` (whose client helpers it uses). Prints one JSON object:

* signed out: the status of each ``--puts`` x ``--mb`` MB upload, the server's RSS before and
  after (VmRSS), and the upload bytes Streamlit reports holding (``/_stcore/metrics``);
* signed in: one 5 MB upload under ``strace -f -e trace=open,openat,creat,write``: the files
  opened with ``O_TMPFILE`` or ``O_CREAT`` and the bytes written to them.

Usage::

    python benchmarks/bench_upload_exposure.py                       # this checkout
    git worktree add /tmp/base <commit> && \\
      python benchmarks/bench_upload_exposure.py --app-dir /tmp/base  # a baseline
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "app"))

from browser_helpers import chromium_page, free_port  # noqa: E402
from test_pages import make_weights  # noqa: E402
from test_server_browser import MB, PASSWORD, Visitor, held_upload_bytes, strace_calls  # noqa: E402


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def written_to_new_files(lines: list[str]) -> tuple[int, int]:
    """(files opened with O_TMPFILE/O_CREAT, bytes written to them) from strace lines."""
    fds: set[tuple[str, str]] = set()
    written = 0
    for ln in lines:
        pid = ln.split()[0]
        opened = re.search(r"open(?:at)?\(.*(O_TMPFILE|O_CREAT).*\)\s+=\s+(\d+)", ln)
        if opened:
            fds.add((pid, opened.group(2)))
            continue
        wrote = re.match(r"(\d+)\s+write\((\d+),.*\)\s+=\s+(\d+)", ln)
        if wrote and (wrote.group(1), wrote.group(2)) in fds:
            written += int(wrote.group(3))
    return len(fds), written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app-dir", type=Path, default=REPO)
    parser.add_argument("--puts", type=int, default=5)
    parser.add_argument("--mb", type=int, default=50)
    args = parser.parse_args()
    from medcnn.privacy import hash_password

    tmp = Path(tempfile.mkdtemp(prefix="bench_upload_"))
    port = free_port()
    env = {**os.environ, "MEDCNN_WEIGHTS_DIR": str(make_weights(tmp / "weights")),
           "MEDCNN_PASSWORD_HASH": hash_password(PASSWORD, params=(10, 8, 1)),
           "MEDCNN_AUDIT_DB": str(tmp / "audit.sqlite")}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
           "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    server = subprocess.Popen(cmd, cwd=args.app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    result: dict = {"app_dir": str(args.app_dir)}
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.3)
        with chromium_page() as page:
            visitor = Visitor(page, url)
            visitor.open()
            before = rss_mb(server.pid)
            statuses = [visitor.put(os.urandom(args.mb * MB)) for _ in range(args.puts)]
            time.sleep(2)
            result["signed_out"] = {"puts": f"{args.puts} x {args.mb} MB", "statuses": statuses,
                                    "rss_before_mb": round(before), "rss_after_mb": round(rss_mb(server.pid)),
                                    "held_upload_bytes": held_upload_bytes(url)}
        with chromium_page() as page:
            visitor = Visitor(page, url)
            visitor.open()
            visitor.sign_in()
            statuses = []
            log = strace_calls(server.pid, lambda: statuses.append(visitor.put(os.urandom(5 * MB))),
                               trace="open,openat,creat,write")
            files, written = written_to_new_files(log)
            result["signed_in_5mb"] = {"status": statuses[0], "new_files": files, "bytes_written_to_them": written}
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
