"""Append-only audit trail: one JSON object per line, no patient data.

Each event records the UTC time, the user (an OIDC account's e-mail or name, or
``"password user"`` for the shared password), the action, and optionally the first
:data:`HASH_PREFIX_CHARS` hex digits of the image's SHA-256: enough to match an event to a file one
holds, not enough to learn anything from. File names, patient attributes and results are never
written. Lines are appended with one ``write`` on a descriptor opened with ``O_APPEND`` (POSIX
appends it as one piece); the file is created with mode 0600.

Example line::

    {"time": "2026-05-01T09:30:12Z", "user": "password user", "action": "analyse", "image": "3f2a9c01b7de"}
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["AUDIT_ACTIONS", "AuditLogError", "HASH_PREFIX_CHARS", "image_sha256", "write_audit_event"]

#: The actions an event may record.
AUDIT_ACTIONS = ("sign-in ok", "sign-in failed", "sign-out", "analyse", "export", "install site card")
#: Hex digits of the SHA-256 kept in the log (48 bits).
HASH_PREFIX_CHARS = 12
_HEX = re.compile(r"[0-9a-f]+")


class AuditLogError(OSError):
    """The audit log cannot be written (the message names the path and what to fix)."""


def image_sha256(data: bytes) -> str:
    """Hex SHA-256 of an image file's bytes (pass it to :func:`write_audit_event`)."""
    return hashlib.sha256(data).hexdigest()


def write_audit_event(
    path: str | os.PathLike,
    action: str,
    *,
    user: str,
    image_hash: str | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """Append one event to the JSON-lines log at ``path``.

    Args:
        path: the log file (created if missing; its folder must exist).
        action: one of :data:`AUDIT_ACTIONS`.
        user: who did it (never a patient identifier).
        image_hash: the image's hex SHA-256 (or at least its first :data:`HASH_PREFIX_CHARS`
            digits); only that prefix is written.
        now: the event time (default: now, UTC).

    Returns:
        the event as written.

    Raises:
        ValueError: an unknown action, or an ``image_hash`` that is not a hex digest.
        AuditLogError: the file cannot be opened or written.
    """
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; expected one of {', '.join(AUDIT_ACTIONS)}")
    when = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    event = {"time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "user": str(user), "action": action}
    if image_hash is not None:
        digest = str(image_hash).strip().lower()
        if len(digest) < HASH_PREFIX_CHARS or not _HEX.fullmatch(digest):
            raise ValueError(
                f"image_hash must be a hex SHA-256 digest (at least {HASH_PREFIX_CHARS} hex digits), "
                "e.g. image_sha256(data); never a file name")
        event["image"] = digest[:HASH_PREFIX_CHARS]
    line = (json.dumps(event, ensure_ascii=True) + "\n").encode("ascii")
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as e:
        raise AuditLogError(
            f"cannot open the audit log {target} ({e.strerror or type(e).__name__}); check that its "
            "folder exists and is writable, or unset MEDCNN_AUDIT_LOG to turn the log off") from None
    try:
        os.write(fd, line)
    except OSError as e:
        raise AuditLogError(f"cannot write to the audit log {target} ({e.strerror or type(e).__name__})") from None
    finally:
        os.close(fd)
    return event
