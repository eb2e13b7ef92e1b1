"""The SQLite audit trail: fields, refusals, concurrency, the CLI and the app's configuration."""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import multiprocessing
import os
import sqlite3
import stat
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from medcnn.privacy.audit_db import (
    COLUMNS,
    OOD_LEVELS,
    NOT_ANALYSED,
    AuditDBError,
    decided_labels,
    read_audit,
    record_analysis,
    record_event,
    write_csv,
)

DIGEST = hashlib.sha256(b"image bytes").hexdigest()
WHEN = datetime(2026, 5, 1, 9, 30, 12, tzinfo=timezone.utc)
LABELS = ["NORMAL", "PNEUMONIA"]
FINDINGS = ["Lung Opacity", "Effusion", "Pneumothorax", "Edema"]


def _analysis(db: Path, **kw) -> dict[str, str]:
    args = dict(user="password user", image_hash=DIGEST, model="cxr_pneumonia", method="gradcam",
                decided=["PNEUMONIA"], labels=LABELS, ood_level="ok", now=WHEN)
    args.update(kw)
    return record_analysis(db, **args)


def test_one_row_per_analysis_with_exactly_the_audited_fields(tmp_path):
    db = tmp_path / "audit.sqlite"
    _analysis(db)
    record_event(db, "sign-in ok", user="password user", now=WHEN)
    rows = read_audit(db)
    assert rows[0] == {"time": "2026-05-01T09:30:12Z", "user": "password user", "action": "analysis",
                       "image": DIGEST, "model": "cxr_pneumonia", "method": "gradcam", "decision": '["PNEUMONIA"]',
                       "ood_level": "ok"}
    assert rows[1]["action"] == "sign-in ok" and rows[1]["image"] == ""
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert [r[1] for r in conn.execute("PRAGMA table_info(audit)")] == ["id", *COLUMNS]


@pytest.mark.parametrize("field, value", [
    ("model", "chest_DOE_JOHN.dcm"), ("model", "../weights/x"), ("decided", ["DOE^JOHN 19800101"]),
    ("method", "12345678"), ("decided", [""]), ("decided", "PNEUMONIA"), ("decided", ["COVID"]),
    ("image_hash", "chest.dcm"), ("image_hash", DIGEST[:12]),
    ("ood_level", "fine"), ("user", "a\nb"),
])
def test_identifiers_and_file_names_have_no_field_to_go_into(tmp_path, field, value):
    with pytest.raises(ValueError):
        _analysis(tmp_path / "a.sqlite", **{field: value})
    assert not (tmp_path / "a.sqlite").exists() or read_audit(tmp_path / "a.sqlite") == []


@pytest.mark.parametrize("decided, stored", [
    (["Effusion", "Pneumothorax"], '["Effusion", "Pneumothorax"]'),  # a comma between findings is data
    (["Lung Opacity", "Effusion", "Pneumothorax"], '["Lung Opacity", "Effusion", "Pneumothorax"]'),
    ([], "[]"),  # no finding at or above its operating point
    (None, NOT_ANALYSED),  # the gate withheld the result
])
def test_multi_finding_decisions_are_stored_as_a_list_of_the_cards_labels(tmp_path, decided, stored):
    db = tmp_path / "a.sqlite"
    row = _analysis(db, model="cxr_findings", decided=decided, labels=FINDINGS)
    assert row["decision"] == stored and read_audit(db)[0]["decision"] == stored
    assert decided_labels(stored) == decided


def test_a_decided_label_the_card_does_not_have_is_refused_with_the_cards_labels(tmp_path):
    with pytest.raises(ValueError, match="'Mass' is not one of the model's labels .*Effusion"):
        _analysis(tmp_path / "a.sqlite", model="cxr_findings", decided=["Effusion", "Mass"], labels=FINDINGS)
    with pytest.raises(ValueError, match="not an audit decision"):
        decided_labels("Effusion, Pneumothorax")


def test_api_takes_only_the_listed_fields(tmp_path):
    with pytest.raises(TypeError):
        _analysis(tmp_path / "a.sqlite", patient_name="DOE^JOHN")
    with pytest.raises(ValueError, match="unknown audit action"):
        record_event(tmp_path / "a.sqlite", "delete", user="u")


def test_ood_levels_match_the_gate():
    from medcnn.ood.gate import LEVELS

    assert OOD_LEVELS == LEVELS


def test_unwritable_and_missing_databases_raise_actionable_errors(tmp_path):
    with pytest.raises(AuditDBError, match="MEDCNN_AUDIT_DB"):
        _analysis(tmp_path / "missing" / "a.sqlite")
    with pytest.raises(FileNotFoundError, match="--db or MEDCNN_AUDIT_DB"):
        read_audit(tmp_path / "none.sqlite")
    assert not (tmp_path / "none.sqlite").exists()  # reading never creates
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(AuditDBError):
        read_audit(tmp_path / "junk.sqlite")


def test_threads_write_every_row(tmp_path):
    db = tmp_path / "a.sqlite"

    def worker(i: int) -> None:
        for j in range(25):
            _analysis(db, user=f"user{i}", decided=["NORMAL" if j % 2 else "PNEUMONIA"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = read_audit(db)
    assert len(rows) == 200 and {r["user"] for r in rows} == {f"user{i}" for i in range(8)}


def _process_worker(db: str, n: int) -> None:
    for _ in range(n):
        _analysis(Path(db), user=f"pid{os.getpid()}")


def test_processes_write_every_row(tmp_path):
    db = tmp_path / "a.sqlite"
    _analysis(db)  # created (and in WAL mode) before the writers start
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_worker, args=(str(db), 30)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(read_audit(db)) == 91


def test_since_filter_and_csv_export(tmp_path):
    db = tmp_path / "a.sqlite"
    _analysis(db, now=datetime(2026, 4, 30, 23, 59, tzinfo=timezone.utc))
    _analysis(db, now=datetime(2026, 5, 1, 0, 0, tzinfo=timezone.utc), user="=HYPERLINK(1)")
    assert len(read_audit(db, since="2026-05-01")) == 1
    assert len(read_audit(db, since="2026-04-30T12:00:00")) == 2
    with pytest.raises(ValueError, match="not a date"):
        read_audit(db, since="yesterday")
    out = io.StringIO()
    assert write_csv(read_audit(db), out) == 2
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(parsed[0]) == list(COLUMNS)
    assert parsed[1]["user"] == "'=HYPERLINK(1)"  # not a spreadsheet formula


def _cli(argv: list[str]) -> int:
    from medcnn.cli import audit_log

    parser = argparse.ArgumentParser()
    audit_log.add_arguments(parser)
    return audit_log.run(parser.parse_args(argv))


def test_cli_prints_and_exports(tmp_path, capsys, monkeypatch):
    db = tmp_path / "a.sqlite"
    _analysis(db)
    assert _cli(["--db", str(db)]) == 0
    printed = capsys.readouterr()
    assert "cxr_pneumonia" in printed.out and DIGEST[:12] in printed.out and "1 row(s)" in printed.err
    out = tmp_path / "a.csv"
    assert _cli(["--db", str(db), "--csv", str(out), "--since", "2026-01-01"]) == 0
    assert DIGEST in out.read_text()
    monkeypatch.setenv("MEDCNN_AUDIT_DB", str(db))
    assert _cli(["--csv", "-"]) == 0 and DIGEST in capsys.readouterr().out
    with pytest.raises(FileNotFoundError):
        _cli(["--db", str(tmp_path / "none.sqlite")])


# ------------------------------------------------------------------ the app's configuration
PAGE = """
from medcnn.app.auth import audit_analysis, audit_event, require_sign_in
require_sign_in()
audit_event("analyse", image_hash="%s")
audit_analysis("%s", "cxr_pneumonia", "gradcam", None, "outside", ["NORMAL", "PNEUMONIA"])
audit_analysis("%s", "cxr_pneumonia", "gradcam", None, "outside", ["NORMAL", "PNEUMONIA"])  # a rerun: once
audit_event("export report", image_hash="%s")
""" % ((DIGEST,) * 4)


def _run_page(monkeypatch, cwd: Path, **env: str):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    for key in ("MEDCNN_AUDIT_DB", "MEDCNN_AUDIT_LOG", "MEDCNN_PASSWORD_HASH"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    at = AppTest.from_string(PAGE, default_timeout=30).run()
    assert not at.exception
    return at


def test_app_writes_the_database_named_by_the_environment_and_the_json_log(monkeypatch, tmp_path):
    db, log = tmp_path / "a.sqlite", tmp_path / "a.jsonl"
    _run_page(monkeypatch, tmp_path, MEDCNN_AUDIT_DB=str(db), MEDCNN_AUDIT_LOG=str(log))
    rows = read_audit(db)
    assert [r["action"] for r in rows] == ["analyse", "analysis", "export report"]
    assert rows[1]["user"] == "anonymous" and rows[1]["decision"] == NOT_ANALYSED
    assert [line.count('"export"') for line in log.read_text().splitlines()] == [0, 1]


def test_app_without_sign_in_or_database_leaves_no_file(monkeypatch, tmp_path):
    _run_page(monkeypatch, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_app_with_sign_in_defaults_to_a_database_in_the_working_directory(monkeypatch, tmp_path):
    from medcnn.app.auth import DEFAULT_AUDIT_DB
    from medcnn.privacy import hash_password

    at = _run_page(monkeypatch, tmp_path, MEDCNN_PASSWORD_HASH=hash_password("pw", params=(10, 8, 1)))
    assert at.title[0].value == "Sign in"  # the page stops at the form; nothing audited yet
    at.text_input(key="medcnn_sign_in_password").input("pw")
    at.button[0].click()
    at = at.run()
    assert not at.exception
    rows = read_audit(tmp_path / DEFAULT_AUDIT_DB)
    assert [r["action"] for r in rows] == ["sign-in ok", "analyse", "analysis", "export report"]
    assert {r["user"] for r in rows} == {"password user"}


def test_app_database_off(monkeypatch, tmp_path):
    from medcnn.privacy import hash_password

    _run_page(monkeypatch, tmp_path, MEDCNN_AUDIT_DB="off", MEDCNN_PASSWORD_HASH=hash_password("pw", params=(10, 8, 1)))
    assert list(tmp_path.iterdir()) == []


FAILING_PAGE = """
import streamlit as st
from medcnn.app.auth import audit_analysis, audit_event
audit_event("analyse", image_hash="%s")
audit_analysis("%s", "cxr_findings", "gradcam", DECIDED, "ok", ["Lung Opacity", "Effusion", "Pneumothorax"])
st.markdown("the result is still shown")
"""


@pytest.mark.parametrize("where, decided, expected", [
    ("missing/a.sqlite", ["Effusion", "Pneumothorax"], "cannot be written on the server"),  # unwritable trail
    ("a.sqlite", ["Effusion", "Mass"], "'Mass' is not one of the model's labels"),  # a value it refuses
])
def test_an_audit_failure_is_shown_and_the_page_goes_on(monkeypatch, tmp_path, where, decided, expected):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    for key in ("MEDCNN_AUDIT_LOG", "MEDCNN_PASSWORD_HASH"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MEDCNN_AUDIT_DB", str(tmp_path / where))
    page = FAILING_PAGE.replace("DECIDED", repr(decided)) % (DIGEST, DIGEST)
    at = AppTest.from_string(page, default_timeout=30).run()
    assert not at.exception
    assert [m.value for m in at.markdown] == ["the result is still shown"]
    errors = " ".join(e.value for e in at.error)
    assert "could not be recorded in the audit trail" in errors and expected in errors
    assert "Traceback" not in errors and str(tmp_path) not in errors  # no server paths on the page
