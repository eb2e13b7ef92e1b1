"""Run Debian's Orthanc (with its DICOMweb plugin) on free localhost ports for the PACS tests.

Not a test module: :func:`orthanc_server` is used by ``conftest.py`` (fixtures) and the browser and
leak tests. Orthanc gets a temporary storage folder and a generated JSON configuration: remote
access off, HTTP authentication on with one test user, the DICOMweb plugin at ``/dicom-web``, and a
DICOM port that accepts C-STORE from any AE title.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

USER, PASSWORD = "medcnn-test", "orthanc-test-password"
AE_TITLE = "ORTHANCTEST"
_PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/lib/x86_64-linux-gnu/orthanc",
                "/usr/local/share/orthanc/plugins")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
                                            if Path(p).is_file()), None)


def dicomweb_plugin() -> str | None:
    """Path of libOrthancDicomWeb.so (Debian: /usr/share/orthanc/plugins), or None."""
    for folder in _PLUGIN_DIRS:
        found = sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else []
        if found:
            return str(found[0])
    return None


def missing_reason() -> str | None:
    """Why Orthanc cannot be started here, or None when it can."""
    if orthanc_binary() is None:
        return "Orthanc is not installed (apt-get install -y orthanc orthanc-dicomweb)"
    if dicomweb_plugin() is None:
        return "Orthanc's DICOMweb plugin is not installed (apt-get install -y orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    """A running Orthanc: its URLs, ports and process."""

    http_port: int
    dicom_port: int
    process: subprocess.Popen
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (USER, PASSWORD)

    def upload(self, data: bytes) -> dict:
        """POST one DICOM file to /instances (Orthanc's REST API); returns Orthanc's answer."""
        r = requests.post(f"{self.url}/instances", data=data, auth=self.auth, timeout=30)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def clear(self) -> None:
        """Delete every patient (a clean PACS for the next test)."""
        for pid in requests.get(f"{self.url}/patients", auth=self.auth, timeout=30).json():
            requests.delete(f"{self.url}/patients/{pid}", auth=self.auth, timeout=30)


@contextmanager
def orthanc_server(timeout: float = 60) -> Iterator[Orthanc]:
    """Start Orthanc on free 127.0.0.1 ports; yield it once it answers; always stop it and delete its storage."""
    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    folder = Path(tempfile.mkdtemp(prefix="orthanc-test-"))
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "medcnn-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": AE_TITLE, "DicomCheckCalledAet": False,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [dicomweb_plugin()], "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Ssl": False},
        "DicomAlwaysAllowStore": True, "DicomModalities": {}, "HttpDescribeErrors": False,
        "StableAge": 1, "SaveJobs": False, "ConcurrentJobs": 1, "HttpThreadsCount": 8,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    proc = subprocess.Popen([orthanc_binary(), str(folder / "orthanc.json")], cwd=folder, stdout=log,
                            stderr=subprocess.STDOUT)
    server = Orthanc(http_port, dicom_port, proc, folder)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with status {proc.returncode}: "
                                   + (folder / "orthanc.log").read_text(errors="replace")[-2000:])
            try:
                if requests.get(f"{server.url}/system", auth=server.auth, timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not answer within {timeout:g} s")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
