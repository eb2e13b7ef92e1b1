"""Privacy: DICOM de-identification, burned-in text warnings, passwords, rate limits, audit trail.

``profile`` holds the Basic Profile's attribute table (PS3.15 Table E.1-1, as data in
``basic_profile.csv``), ``deidentify`` applies it, ``burned_in`` warns about text in the pixels,
``files`` de-identifies files and folders with atomic writes, ``passwords`` hashes and verifies
sign-in passwords (scrypt), ``ratelimit`` is the sign-in back-off, ``audit_log`` the append-only
JSON-lines trail. Nothing here imports streamlit; the app's sign-in lives in
:mod:`medcnn.app.auth`.
"""
from __future__ import annotations

from medcnn.privacy.audit_log import AUDIT_ACTIONS, AuditLogError, image_sha256, write_audit_event
from medcnn.privacy.burned_in import TextRegions, burned_in_warnings, text_region_mask, text_regions
from medcnn.privacy.deidentify import (
    DeidentificationError,
    Deidentifier,
    DeidSummary,
    deidentify_bytes,
    deidentify_dataset,
)
from medcnn.privacy.files import FileOutcome, deidentify_path
from medcnn.privacy.passwords import PasswordHashError, hash_password, verify_password
from medcnn.privacy.profile import BASIC_PROFILE_EDITION, ProfileRule, action_for, profile_rules, resolve
from medcnn.privacy.ratelimit import Backoff

__all__ = [
    "AUDIT_ACTIONS",
    "AuditLogError",
    "BASIC_PROFILE_EDITION",
    "Backoff",
    "DeidSummary",
    "DeidentificationError",
    "Deidentifier",
    "FileOutcome",
    "PasswordHashError",
    "ProfileRule",
    "TextRegions",
    "action_for",
    "burned_in_warnings",
    "deidentify_bytes",
    "deidentify_dataset",
    "deidentify_path",
    "hash_password",
    "image_sha256",
    "profile_rules",
    "resolve",
    "text_region_mask",
    "text_regions",
    "verify_password",
    "write_audit_event",
]
