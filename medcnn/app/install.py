"""Installing a site's recalibrated card from the Recalibrate page: who may, when, and the audit row.

An install is allowed only when all of these hold (:func:`install_refusal` says which does not):

1. sign-in is configured (:func:`medcnn.app.auth.auth_config`): an install changes what every user
   of the server can choose, so it must name who made it, and an open server has no one to name;
2. this session is signed in (:func:`medcnn.app.auth.signed_in`, the one rule of the app), and the
   server keeps an audit trail (it does unless ``MEDCNN_AUDIT_DB=off`` without a JSON-lines log);
3. the held-out evidence shows that a refit helps: the library's decision
   (:func:`medcnn.evaluation.site.recalibrate`, ``fields["changed"]``), not a second rule here;
4. the person ticked the box that names the consequence (checked again when the button is pressed).

What is written: the new card under its **own name** (``<name>.json``) beside byte-identical copies of
the original's weights and gate (``<name>.pt``, ``<name>.ood.pt``), by
:func:`medcnn.evaluation.site_card.write_recalibrated`, which checks every copy's SHA-256 and refuses
the original's name and an existing card's. The original card is never touched, rather than being
replaced with a backup kept: other users, other sites and the command line keep getting exactly the
model they validated, the site's card records where it came from (``training.recalibrated_from``),
and undoing the install is deleting three files. The catalogue (:func:`medcnn.models.catalogue.list_cards`)
reads the weights folder on every page run, so the card is listed at once, without a restart; the
automatic choice by modality keeps preferring the shipped default (the site card is picked by name).

The audit row (:func:`medcnn.app.auth.audit_event`): action :data:`INSTALL_ACTION`, the user, and the
SHA-256 of the written card file in the image-hash column; no name of the site's files, no patient
data (the card itself holds none: :func:`medcnn.evaluation.site_card.recalibrated_card`).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from medcnn.app import auth
from medcnn.evaluation.site_card import write_recalibrated
from medcnn.evaluation.site_task import RecalibrationError
from medcnn.models.card import ModelCard, file_sha256

__all__ = ["INSTALL_ACTION", "InstallRefused", "Installed", "install_refusal", "install_site_card",
           "refusal_now", "write_site_card"]

#: The audit action of an install.
INSTALL_ACTION = "install site card"

NOT_CONFIGURED = ("Installing needs sign-in, so that every install records who made it, and sign-in is not "
                  "configured on this server (set MEDCNN_PASSWORD_HASH, named accounts or single sign-on: see "
                  "the README). Until then, download the card and install it by hand as described above.")
SIGNED_OUT = "Sign in to install the card for this site: an install is recorded with who made it."
NO_EVIDENCE = ("Nothing to install: the held-out folds do not show that a refit helps, so the shipped card "
               "stays in use.")
NO_TRAIL = ("Installing needs the audit trail, which is off on this server (MEDCNN_AUDIT_DB=off): an install must "
            "be recorded. Ask the server's administrator, or install the card by hand as described above.")
NOT_CONFIRMED = "Tick the box first: it says what installing does."


class InstallRefused(RecalibrationError):
    """An install that is not allowed now (the message says why and what to do)."""


@dataclass(frozen=True)
class Installed:
    """A written site card: its ``.json`` path and that file's SHA-256 (what the audit row records)."""

    path: Path
    sha256: str


def install_refusal(changed: bool, cfg: auth.AuthConfig, get: Callable[[str], object],
                    audited: bool = True) -> str | None:
    """Why an install is not allowed now, or None when it is (conditions 1-3 of the module docstring).

    Args:
        changed: The library's decision that a refit helps (``SiteResult.fields["changed"]``).
        cfg: The sign-in configuration (:func:`medcnn.app.auth.auth_config`).
        get: Reads the session's state (``st.session_state.get``).
        audited: The server keeps an audit trail (database or JSON-lines log).
    """
    if cfg.mode == "off":
        return NOT_CONFIGURED
    if not auth.signed_in(get, cfg):
        return SIGNED_OUT
    if not audited:
        return NO_TRAIL
    if not changed:
        return NO_EVIDENCE
    return None


def refusal_now(changed: bool) -> str | None:
    """:func:`install_refusal` for this session and the server's current configuration."""
    audited = auth.audit_db_path() is not None or bool(os.environ.get(auth.AUDIT_LOG_ENV))
    return install_refusal(changed, auth.auth_config(), st.session_state.get, audited)


def write_site_card(card: ModelCard, new_card: ModelCard, folder: str | Path) -> Installed:
    """Write ``new_card`` as ``folder/<its name>.json`` beside checked copies of ``card``'s files.

    No sign-in or confirmation check (the caller's, :func:`install_site_card`).

    Raises:
        RecalibrationError: the name is the original's or an existing card's; a copy's checksum differs;
            the original's weights or gate file are missing, or the folder cannot be written (the
            message says which).
    """
    try:
        path = write_recalibrated(card, new_card, Path(folder) / f"{new_card.name}.json")
    except FileNotFoundError as e:
        raise RecalibrationError(f"{e}: the original card's files changed since the page loaded; reload it") from None
    except OSError as e:
        raise RecalibrationError(f"the weights folder cannot be written on this server ({e.strerror or e}): ask its "
                                 "administrator to make it writable, or install the card by hand as above") from None
    return Installed(path, file_sha256(path))


def install_site_card(card: ModelCard, new_card: ModelCard, changed: bool, confirmed: bool,
                      folder: str | Path) -> Installed:
    """Install ``new_card`` for this site when every condition holds, and record the audit row.

    Args:
        card: The original card (loaded from its file).
        new_card: The recalibrated card (:func:`medcnn.app.recalibrate.site_card`, as downloaded).
        changed: The library's decision that a refit helps.
        confirmed: The person ticked the box naming the consequence.
        folder: The weights folder the catalogue reads.

    Raises:
        InstallRefused: sign-in is not configured, the session is signed out, there is no audit trail,
            the evidence does not show that a refit helps, or the box is not ticked (nothing is written).
        RecalibrationError: see :func:`write_site_card`.
    """
    reason = refusal_now(changed) or (None if confirmed else NOT_CONFIRMED)
    if reason:
        raise InstallRefused(reason)
    installed = write_site_card(card, new_card, folder)
    auth.audit_event(INSTALL_ACTION, image_hash=installed.sha256)
    return installed
