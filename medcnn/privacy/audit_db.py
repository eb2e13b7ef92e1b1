"""Audit trail in an embedded SQLite database: one row per analysis or event, no patient data.

A row holds exactly these columns, and the API takes nothing else, so a patient's name, ID, date
of birth or a file name has no field to go into:

========== ==================================================================================
time       UTC, ISO 8601 (``2026-05-01T09:30:12Z``)
user       who did it: an OIDC account, ``"password user"`` or ``"anonymous"``
action     ``"analysis"`` for an analysis, else a sign-in / export action (:data:`DB_ACTIONS`)
image      the full hex SHA-256 of the uploaded bytes (or empty for sign-in events; for
           ``"install site card"`` the SHA-256 of the installed card file)
model      model card name (analyses only)
method     explanation method (analyses only)
decision   ``"not analysed"`` when the out-of-distribution gate withheld the result, else the
           labels the decision names as a JSON list: ``["PNEUMONIA"]`` for a single-label model,
           the findings at or above their operating points for a multi-label one
           (``["Effusion", "Pneumothorax"]``, ``[]`` for none)
ood_level  ``"ok"``, ``"unusual"`` or ``"outside"`` (:data:`medcnn.ood.gate.LEVELS`)
========== ==================================================================================

Free-text fields (model, method, each decided label) are checked against a short safe pattern,
and values that look like a file name or contain a run of 6+ digits (an ID or a date) are refused
with :class:`ValueError`; each decided label must also be one of the model card's labels, so the
decision is structured data rather than text a page composed. The database is created with mode 0600 and written in WAL mode with a
busy timeout, so several threads and processes (Streamlit sessions, server workers) can write at
once; within one process a lock serialises writers as well.
"""
from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TextIO

from medcnn.models.head import NOT_ANALYSED
from medcnn.privacy.audit_log import AUDIT_ACTIONS

__all__ = [
    "ANALYSIS", "AuditDBError", "COLUMNS", "DB_ACTIONS", "NOT_ANALYSED", "OOD_LEVELS", "decided_labels",
    "decision_text", "read_audit", "record_analysis", "record_event", "write_csv",
]

#: The action of an analysis row.
ANALYSIS = "analysis"
#: Actions a row may record: the JSON-lines log's, the page's export actions, and analyses.
DB_ACTIONS = (*AUDIT_ACTIONS, ANALYSIS, "export report", "export overlay", "export de-identified DICOM",
              "export case series", "export to PACS")
#: Out-of-distribution levels (the same as :data:`medcnn.ood.gate.LEVELS`; a test keeps them equal).
OOD_LEVELS = ("ok", "unusual", "outside")
#: The columns of a row, in order (also the CSV header).
COLUMNS = ("time", "user", "action", "image", "model", "method", "decision", "ood_level")

_SCHEMA = """CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL, image TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '', method TEXT NOT NULL DEFAULT '', decision TEXT NOT NULL DEFAULT '',
    ood_level TEXT NOT NULL DEFAULT '')"""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.()+-]{0,63}")
_LONG_NUMBER = re.compile(r"\d{6,}")
_FILE_SUFFIX = re.compile(r"\.(dcm|dicom|png|jpe?g|j2k|jp2|zip|pdf|txt|csv|json|pt)$", re.IGNORECASE)
_LOCK = threading.Lock()
_TIMEOUT_S = 10.0


class AuditDBError(OSError):
    """The audit database cannot be opened, written or read (the message names the path and the fix)."""


def _check_hash(image_hash: str) -> str:
    digest = str(image_hash).strip().lower()
    if not _SHA256.fullmatch(digest):
        raise ValueError("image_hash must be the 64-digit hex SHA-256 of the image bytes "
                         "(medcnn.privacy.image_sha256(data)); never a file name or an identifier")
    return digest


def _check_text(name: str, value: str) -> str:
    text = str(value).strip()
    if not _SAFE.fullmatch(text) or _LONG_NUMBER.search(text) or _FILE_SUFFIX.search(text):
        raise ValueError(
            f"{name} {text[:20]!r}... is not a short model / method / label name (letters, digits, "
            "' _.()+-', at most 64 characters, no file names or long numbers); the audit database "
            "never stores identifiers")
    return text


def decision_text(decided: Sequence[str] | None, labels: Sequence[str]) -> str:
    """The ``decision`` column of an analysis.

    Args:
        decided: the labels the decision names, in the order shown (``None`` when the gate
            withheld the result).
        labels: the model card's labels; every decided label must be one of them.

    Returns:
        :data:`NOT_ANALYSED`, or the decided labels as a JSON list (``'["Effusion", "Mass"]'``).

    Raises:
        ValueError: a decided label that is not one of ``labels`` or not a short safe name.
    """
    if decided is None:
        return NOT_ANALYSED
    if isinstance(decided, str):
        raise ValueError("decided must be a sequence of label names (or None), not one string")
    known = {str(label) for label in labels}
    names = [_check_text("decided label", name) for name in decided]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"decided label {unknown[0][:64]!r} is not one of the model's labels "
                         f"({', '.join(sorted(known))})")
    return json.dumps(names)


def decided_labels(decision: str) -> list[str] | None:
    """Read a ``decision`` column back: the decided labels, or ``None`` for :data:`NOT_ANALYSED`.

    Raises:
        ValueError: text that :func:`decision_text` does not write.
    """
    if decision == NOT_ANALYSED:
        return None
    try:
        names = json.loads(decision)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{decision[:40]!r} is not an audit decision (a JSON list of labels or "
                         f"{NOT_ANALYSED!r})")
    return names


def _check_user(user: str) -> str:
    text = str(user).strip()
    if not text or len(text) > 254 or any(c in text for c in "\r\n\t\x00"):
        raise ValueError("user must be a non-empty account name of at most 254 characters on one line")
    return text


def _utc(now: datetime | None) -> str:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A connection in WAL mode; with ``create`` the file is made first, mode 0600."""
    if not create and not path.is_file():
        raise FileNotFoundError(
            f"no audit database at {path}; give its path with --db or MEDCNN_AUDIT_DB "
            "(the app creates it on the first audited event)")
    try:
        if create and not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        uri = f"file:{path}" + ("" if create else "?mode=ro")
        conn = sqlite3.connect(uri, uri=True, timeout=_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(_TIMEOUT_S * 1000)}")
        if create:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(_SCHEMA)
        return conn
    except sqlite3.Error as e:
        raise AuditDBError(
            f"cannot open the audit database {path} ({e}); check that its folder exists and is "
            "writable, or set MEDCNN_AUDIT_DB to another path") from None
    except PermissionError as e:
        raise AuditDBError(f"cannot create the audit database {path} ({e.strerror}); check the folder's "
                           "permissions or set MEDCNN_AUDIT_DB to another path") from None
    except OSError as e:
        raise AuditDBError(f"cannot create the audit database {path} ({e.strerror or e}); check that its "
                           "folder exists or set MEDCNN_AUDIT_DB to another path") from None


def _insert(path: str | os.PathLike, row: dict[str, str]) -> dict[str, str]:
    target = Path(path)
    with _LOCK:
        conn = _connect(target, create=True)
        try:
            conn.execute(f"INSERT INTO audit ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                         [row[c] for c in COLUMNS])
        except sqlite3.Error as e:
            raise AuditDBError(f"cannot write to the audit database {target} ({e})") from None
        finally:
            conn.close()
    return row


def record_event(path: str | os.PathLike, action: str, *, user: str, image_hash: str | None = None,
                 now: datetime | None = None) -> dict[str, str]:
    """Add a sign-in or export event.

    Args:
        path: the database file (created if missing; its folder must exist).
        action: one of :data:`DB_ACTIONS` other than :data:`ANALYSIS`.
        user: who did it.
        image_hash: the image's full hex SHA-256, if the event concerns an image.
        now: the event time (default now, UTC).

    Returns:
        the row as written (:data:`COLUMNS` -> text).

    Raises:
        ValueError: unknown action or a value that is not what the field takes.
        AuditDBError: the database cannot be written.
    """
    if action not in DB_ACTIONS or action == ANALYSIS:
        raise ValueError(f"unknown audit action {action!r}; expected one of "
                         f"{', '.join(a for a in DB_ACTIONS if a != ANALYSIS)} (analyses: record_analysis)")
    row = dict.fromkeys(COLUMNS, "")
    row.update(time=_utc(now), user=_check_user(user), action=action,
               image=_check_hash(image_hash) if image_hash is not None else "")
    return _insert(path, row)


def record_analysis(path: str | os.PathLike, *, user: str, image_hash: str, model: str, method: str,
                    decided: Sequence[str] | None, labels: Sequence[str], ood_level: str,
                    now: datetime | None = None) -> dict[str, str]:
    """Add one analysis row (the only fields: see the module docstring).

    Args:
        path: the database file (created if missing).
        user: who ran it.
        image_hash: full hex SHA-256 of the uploaded bytes.
        model: model card name, e.g. ``"cxr_pneumonia"``.
        method: explanation method, e.g. ``"gradcam"``.
        decided: the labels the decision names (:attr:`medcnn.inference.Prediction.decided`),
            ``None`` when the gate withheld the result.
        labels: the model card's labels (each decided label must be one of them).
        ood_level: one of :data:`OOD_LEVELS`.
        now: the time (default now, UTC).

    Returns:
        the row as written.

    Raises:
        ValueError: a value that is not what its field takes (e.g. a file name as the model, a
            decided label the card does not have).
        AuditDBError: the database cannot be written.
    """
    if ood_level not in OOD_LEVELS:
        raise ValueError(f"ood_level must be one of {', '.join(OOD_LEVELS)}, not {str(ood_level)[:20]!r}")
    row = {"time": _utc(now), "user": _check_user(user), "action": ANALYSIS, "image": _check_hash(image_hash),
           "model": _check_text("model", model), "method": _check_text("method", method),
           "decision": decision_text(decided, labels), "ood_level": ood_level}
    return _insert(path, row)


def _since_text(since: date | datetime | str | None) -> str | None:
    if since is None:
        return None
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"--since {since!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS") from None
    if not isinstance(since, datetime):
        since = datetime(since.year, since.month, since.day, tzinfo=timezone.utc)
    if since.tzinfo is None:
        since = since.replace(tzinfo=timezone.utc)
    return _utc(since)


def read_audit(path: str | os.PathLike, since: date | datetime | str | None = None) -> list[dict[str, str]]:
    """Rows of the database in time order, optionally from ``since`` (UTC; a date means its midnight).

    Raises:
        FileNotFoundError: no database at ``path`` (nothing is created).
        ValueError: ``since`` is not a date.
        AuditDBError: the file is not a readable audit database.
    """
    target = Path(path)
    start = _since_text(since)
    conn = _connect(target, create=False)
    try:
        query = f"SELECT {', '.join(COLUMNS)} FROM audit"
        rows = conn.execute(query + (" WHERE time >= ? ORDER BY time, id" if start else " ORDER BY time, id"),
                            (start,) if start else ()).fetchall()
    except sqlite3.Error as e:
        raise AuditDBError(f"{target} is not a readable medcnn audit database ({e})") from None
    finally:
        conn.close()
    return [dict(zip(COLUMNS, r)) for r in rows]


def write_csv(rows: Iterable[dict[str, str]], out: TextIO) -> int:
    """Write ``rows`` as CSV with a :data:`COLUMNS` header; returns the number of rows written."""
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    n = 0
    for row in rows:  # a leading = + - @ would be a formula in a spreadsheet: quote it
        writer.writerow({c: ("'" + v if v[:1] in ("=", "+", "-", "@") else v)
                         for c in COLUMNS for v in [str(row.get(c, ""))]})
        n += 1
    return n
