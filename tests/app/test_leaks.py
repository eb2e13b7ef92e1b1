"""Nothing left behind: a DICOM with known fake identifiers goes through the Analyze page, and the
identifiers (and a distinctive slice of the upload's bytes) appear in no new file of the repository
or the temp folder, not in the audit database or JSON log, and not in any captured log or output.

Two variants: AppTest (in process; logging captured with caplog plus a DEBUG handler on the root
and ``streamlit`` loggers, and capsys), and a real ``streamlit run`` server driven through
Playwright (its whole log output searched). Also: "Forget this image" (:mod:`medcnn.app.forget`)
resets the uploader and drops the derived cache entries.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
from pathlib import Path

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_pages import REPO, TIMEOUT, make_weights, page, upload, weights_env  # noqa: E402

from streamlit.testing.v1 import AppTest  # noqa: E402

CT_SMALL = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
FAKES = {
    "PatientName": "ZZLEAKNAME^QQFAKEPERSON",
    "PatientID": "LEAKID7741993",
    "OtherPatientIDs": "LEAKOTHER5521",
    "PatientBirthDate": "19011231",
    "InstitutionName": "ZZLEAK INSTITUTE HOSPITAL",
    "AccessionNumber": "LEAKACC88123",
}
MAX_READ = 64 * 2**20


def fake_identified_dicom() -> bytes:
    ds = pydicom.dcmread(CT_SMALL)
    for keyword, value in FAKES.items():
        setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def needles(data: bytes) -> dict[str, bytes]:
    """What must not appear: each identifier (as stored, and the name's parts) and a pixel slice."""
    found = {k: v.encode() for k, v in FAKES.items()}
    found["PatientName family"] = b"ZZLEAKNAME"
    found["PatientName given"] = b"QQFAKEPERSON"
    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = ds.PixelData
    found["pixel bytes"] = bytes(pixels[len(pixels) // 2: len(pixels) // 2 + 48])
    assert data.count(found["pixel bytes"]) == 1  # distinctive
    return found


def snapshot(roots: list[Path], skip: tuple[Path, ...] = ()) -> dict[Path, tuple[float, int]]:
    """path -> (mtime, size) of every file under ``roots`` (.venv and .git skipped)."""
    out: dict[Path, tuple[float, int]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in (".venv", ".git")
                           and not any(Path(dirpath, d) == s for s in skip)]
            for name in filenames:
                p = Path(dirpath, name)
                try:
                    st = p.lstat()
                except OSError:
                    continue
                out[p] = (st.st_mtime, st.st_size)
    return out


def changed_files(before: dict[Path, tuple[float, int]], after: dict[Path, tuple[float, int]]) -> list[Path]:
    return [p for p, sig in after.items() if before.get(p) != sig]


def search(blobs: dict[str, bytes], what: dict[str, bytes]) -> list[str]:
    """Every (blob, needle) pair where the needle occurs."""
    hits = []
    for where, blob in blobs.items():
        for name, needle in what.items():
            if needle in blob or (name != "pixel bytes" and needle.lower() in blob.lower()):
                hits.append(f"{name} found in {where}")
    return hits


def read_files(paths: list[Path]) -> dict[str, bytes]:
    blobs = {}
    for p in paths:
        try:
            if p.is_file() and not p.is_symlink():
                with p.open("rb") as f:
                    blobs[str(p)] = f.read(MAX_READ)
        except OSError:
            continue
    return blobs


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = make_weights(tmp_path_factory.mktemp("leak_weights"))
    with weights_env(folder):
        yield folder


@pytest.fixture
def audit_env(tmp_path, monkeypatch):
    db, log = tmp_path / "audit.sqlite", tmp_path / "audit.jsonl"
    monkeypatch.setenv("MEDCNN_AUDIT_DB", str(db))
    monkeypatch.setenv("MEDCNN_AUDIT_LOG", str(log))
    return db, log


def test_analyze_page_leaves_no_identifier_or_pixel_bytes_behind(weights, audit_env, caplog, capsys, one_torch_thread):
    from medcnn.app.auth import audit_analysis
    from medcnn.privacy.audit_db import read_audit

    db, log = audit_env
    data = fake_identified_dicom()
    what = needles(data)
    roots = [REPO, Path(tempfile.gettempdir())]
    before = snapshot(roots)
    records = io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setLevel(logging.DEBUG)
    loggers = [logging.getLogger(), logging.getLogger("streamlit"), logging.getLogger("pydicom")]
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    try:
        at = page("pages/1_Analyze.py")
        upload(at, ("ZZLEAKNAME_LEAKID7741993.dcm", data, "application/dicom"))
        assert not at.error, [e.value for e in at.error]
        at.selectbox(key="method").set_value("integrated_gradients").run()
        at.button(key="sanity").click().run()
        assert not at.exception
        rendered = "\n".join(str(e.value) for e in [*at.markdown, *at.caption, *at.warning, *at.success,
                                                    *at.info, *at.error, *at.metric])
        rendered += "\n".join(str(t.value) for t in at.table)
        # the page does not record analyses yet: record one the way it will, so the row is searched too
        key = __import__("hashlib").sha256(data).hexdigest()
        AppTest.from_string(
            f"from medcnn.app.auth import audit_analysis\n"
            f"audit_analysis({key!r}, 'ct_covid', 'integrated_gradients', ['COVID'], 'ok', ['COVID', 'NonCOVID'])\n",
            default_timeout=TIMEOUT).run()
    finally:
        for lg, level in zip(loggers, old_levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    out = capsys.readouterr()
    after = snapshot(roots)
    new = changed_files(before, after)
    assert db in new and log in new  # the trail was written ...
    rows = read_audit(db)
    assert {r["action"] for r in rows} >= {"analyse", "analysis"} and all(r["image"] == key for r in rows)
    blobs = read_files(new)  # ... and, like every other new file, holds none of it
    blobs.update({"caplog": caplog.text.encode(), "log records": records.getvalue().encode(),
                  "stdout": out.out.encode(), "stderr": out.err.encode(), "rendered page": rendered.encode(),
                  "audit rows": repr(rows).encode()})
    assert not search(blobs, what), search(blobs, what)
    assert "ZZLEAKNAME" not in rendered and "LEAKID" not in rendered


def test_forget_this_image_resets_the_uploader_and_drops_cached_results(weights, monkeypatch):
    from medcnn.app import state

    calls: list[int] = []
    real = state.read_image

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(state, "read_image", counting)
    script = (
        "import streamlit as st\n"
        "from medcnn.app import state\n"
        "from medcnn.app.forget import forget_button, forgotten_notice, uploader_key\n"
        "forgotten_notice()\n"
        "up = st.file_uploader('image', key=uploader_key())\n"
        "if up is not None:\n"
        "    data = up.getvalue()\n"
        "    key = state.digest(data)\n"
        "    img = state.read_upload(key, data, None)\n"
        "    st.markdown(f'shape {img.pixels.shape}')\n"
        "    forget_button(key)\n")
    state.read_upload.clear()
    at = AppTest.from_string(script, default_timeout=TIMEOUT).run()
    data = fake_identified_dicom()
    at.file_uploader[0].set_value(("x.dcm", data, "application/dicom")).run()
    at.run()  # a rerun is served from the cache
    assert len(calls) == 1 and "shape (128, 128)" in at.markdown[0].value
    at.button(key="forget_image").click().run()
    assert not at.exception
    assert at.file_uploader[0].value is None  # a new, empty uploader widget
    assert any("forgotten" in s.value for s in at.success)
    assert "upload_0" not in at.session_state  # the old widget (and its file) is gone
    at.file_uploader[0].set_value(("x.dcm", data, "application/dicom")).run()
    assert len(calls) == 2  # the cached entry was dropped: decoded again


# ------------------------------------------------------------------ a real server
@pytest.mark.browser
def test_real_server_log_and_new_files_hold_no_identifier(weights, tmp_path, monkeypatch):
    import browser_helpers as tb

    tb.require_browser()
    data = fake_identified_dicom()
    what = needles(data)
    server_log = tmp_path / "server.log"
    db = tmp_path / "audit.sqlite"
    monkeypatch.setenv("MEDCNN_AUDIT_DB", str(db))
    monkeypatch.setenv("STREAMLIT_LOGGER_LEVEL", "debug")
    # streamlit_server writes the server's stdout+stderr to a TemporaryFile: keep it as a named file
    monkeypatch.setattr(tb.tempfile, "TemporaryFile", lambda *a, **k: server_log.open("w+b"))
    roots = [REPO, Path(tempfile.gettempdir())]
    before = snapshot(roots)
    with tb.streamlit_server(weights) as url:
        monkeypatch.undo()  # restore tempfile.TemporaryFile for Playwright and the rest
        with tb.chromium_page() as pg:
            tb.open_analyze(pg, url)
            tb.upload_and_wait(pg, "ZZLEAKNAME_LEAKID7741993.dcm", data, "application/dicom", timeout=120_000)
            # the uploader widget itself lists the user's own file name in their browser; the rest of
            # the page (everything the app renders) must not show it or any identifier
            html = pg.evaluate("""() => { const b = document.body.cloneNode(true);
                b.querySelectorAll('[data-testid="stFileUploader"]').forEach(e => e.remove());
                return b.innerHTML; }""")
    after = snapshot(roots)
    blobs = read_files(changed_files(before, after))
    blobs["server log"] = server_log.read_bytes()
    blobs["page html"] = html.encode()
    assert blobs["server log"], "the server wrote no log at all (logging not captured?)"
    assert not search(blobs, what), search(blobs, what)


def test_pacs_open_and_send_leave_no_identifier_behind(weights, audit_env, caplog, capsys, one_torch_thread, monkeypatch):
    """The same checks for an image opened from a real PACS (Orthanc) and sent back: the audit rows name it
    by the SHA-256 of its SOP Instance UID; no identifier in new files (Orthanc's own storage aside), logs or
    output. The study list shows the patient ID to pick the study; that screen is not searched."""
    import hashlib

    sys.path.insert(0, str(REPO / "tests" / "pacs"))
    from orthanc import missing_reason, orthanc_server
    from medcnn.privacy.audit_db import read_audit

    if missing_reason():
        pytest.skip(missing_reason())
    db, _ = audit_env
    data = fake_identified_dicom()
    what = needles(data)
    uid_key = hashlib.sha256(str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID).encode()).hexdigest()
    caplog.set_level(logging.DEBUG)
    with orthanc_server() as server:
        server.upload(data)
        for name, value in (("URL", server.dicomweb), ("USER", server.auth[0]), ("PASSWORD", server.auth[1])):
            monkeypatch.setenv(f"MEDCNN_PACS_{name}", value)
        roots = [REPO, Path(tempfile.gettempdir())]
        before = snapshot(roots, skip=(server.folder,))
        at = page("pages/1_Analyze.py")
        at.text_input(key="analyze_pacs_accession").set_value(FAKES["AccessionNumber"])
        at.button(key="analyze_pacs_search").click().run()
        at.button(key="analyze_pacs_open").click().run()
        at.text_input(key=f"analyze_pacs_reviewer_{uid_key[:12]}").set_value("Dr Ada Reviewer")
        at.checkbox(key=f"analyze_pacs_confirm_{uid_key[:12]}").check().run()
        at.button(key=f"analyze_pacs_send_{uid_key[:12]}").click().run()
        assert not at.exception and any("Sent to the PACS" in s.value for s in at.success)
        after = snapshot(roots, skip=(server.folder,))
    out = capsys.readouterr()
    new = changed_files(before, after)
    rows = read_audit(db)
    assert rows and all(r["image"] == uid_key for r in rows)
    blobs = read_files(new)
    blobs.update({"caplog": caplog.text.encode(), "stdout": out.out.encode(), "stderr": out.err.encode(),
                  "audit rows": repr(rows).encode()})
    assert not search(blobs, what), search(blobs, what)
