"""The card of a site recalibration, and its files: provenance, no file names, byte-identical weights.

:func:`recalibrated_card` turns what :func:`medcnn.evaluation.site.recalibrate` fitted into a new
model card that records where it came from (the original card, the SHA-256 of its weights, the
site data's :func:`site_data_sha256`) and never a file name of the site's. :func:`write_recalibrated`
writes it next to a byte-identical, checked copy of the original weights and gate.
"""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from medcnn.evaluation.site_task import Point, RecalibrationError, SiteTask
from medcnn.models.card import ModelCard, card_file, file_sha256

__all__ = ["file_sha256", "recalibrated_card", "site_data_sha256", "site_digests_sha256", "write_recalibrated"]

_THRESHOLD_RULE = ("Youden's J on calibrated site probabilities when refitted; a kept operating point is "
                   "carried to a refitted temperature so that it calls the same images")



def site_data_sha256(images: Iterable[bytes], labels: Iterable[str], groups: Iterable[str] | None = None) -> str:
    """One SHA-256 over a site's labelled images: what a card records instead of any file name.

    Each row contributes the SHA-256 of its image bytes, its label and its group (patient), in
    order, so the same images with the same labels give the same digest wherever they came from.

    Args:
        images: Image bytes, one per row.
        labels: Class name of each row.
        groups: Patient id of each row, or None.
    """
    return site_digests_sha256((hashlib.sha256(content).digest() for content in images), labels, groups)


def site_digests_sha256(digests: Iterable[bytes], labels: Iterable[str], groups: Iterable[str] | None = None) -> str:
    """:func:`site_data_sha256` from each image's SHA-256 digest (32 bytes), for a caller that hashed
    the bytes when it read them and no longer holds them."""
    h = hashlib.sha256()
    labels = list(labels)
    for digest, label, group in zip(digests, labels, [""] * len(labels) if groups is None else groups):
        h.update(digest + str(label).encode() + b"\0" + str(group).encode() + b"\0")
    return h.hexdigest()


def recalibrated_card(
    card: ModelCard,
    fields: dict[str, Any],
    report: dict[str, Any],
    name: str,
    *,
    weights_sha256: str,
    data_sha256: str,
    command: str,
    skipped: dict[str, int] | None = None,
    extra: dict[str, Any] | None = None,
    date: str | None = None,
) -> ModelCard:
    """The new card: the original with the label's refitted temperature and operating point.

    Only the recalibrated label changes (``report["finding"]``: the positive label of a softmax
    card, or one finding of a multi-label card, in ``findings[finding]``); architecture, labels,
    the other findings, preprocessing, scope and gate settings are the original's. The
    original's ``training`` section is kept and gains ``recalibrated_from`` (original card, the
    label, its shipped temperature and threshold and the SHA-256 of its weights; a previous
    recalibration is nested under ``previous``) and ``recalibration`` (the decision per component,
    the site data summary: the SHA-256 of its labelled images, counts and images left out per
    class, date, command, report). No file name of the site's goes into the card (an upload's or
    a folder's name can name a patient). The original's metrics are kept as ``original_<key>``;
    the site's are added (see :func:`recalibrate`). The gate file is renamed ``<name>.ood.pt``
    (same bytes and checksum).

    Args:
        card: The original card.
        fields, report: What :func:`recalibrate` returned.
        name: The new card's name (the stem of its ``.json`` and ``.pt``).
        weights_sha256: SHA-256 of the original's ``.pt`` (:func:`file_sha256`).
        data_sha256: :func:`site_data_sha256` of the site's labelled images.
        command: The command (or app page) that made the card.
        skipped: Reason -> count of site images left out.
        extra: More site-data facts (split, group column).
        date: ISO date-time (default: now, UTC).

    Raises:
        RecalibrationError: ``name`` is empty or the original's; nothing was refitted (the held-out
            folds did not show that any component helps, so the original card stands).
    """
    if not name or name == card.name:
        raise RecalibrationError(f"the recalibrated card needs a new name (not {card.name!r}), so the "
                                 "original stays as it is")
    if not fields.get("changed", True):
        raise RecalibrationError("nothing was refitted (the held-out folds do not show that a refit helps), so "
                                 f"there is no new card to write: keep using {card.name!r}")
    task = SiteTask(card, fields.get("finding"))
    fitted = task.card_with(Point(fields["temperature"], fields["threshold"]))
    new = ModelCard(**copy.deepcopy(fitted.to_dict()))
    new.name, new.path = name, None
    date = date or datetime.now(timezone.utc).isoformat(timespec="seconds")
    training = new.training
    previous = {k: training.pop(k) for k in ("recalibrated_from", "recalibration") if k in training}
    training["recalibrated_from"] = {
        "card": card.name, "finding": task.finding, "temperature": task.shipped.temperature,
        "threshold": task.shipped.threshold, "weights_sha256": weights_sha256,
        **({"previous": previous} if previous else {}),
    }
    decisions = {k: ("refit" if c["refit"] else "kept") + ": " + c["reason"]
                 for k, c in report.get("components", {}).items()}
    training["recalibration"] = {
        "date": date, "command": command, "finding": task.finding, "temperature": float(fields["temperature"]),
        "threshold": float(fields["threshold"]), "threshold_rule": _THRESHOLD_RULE, "decisions": decisions,
        "site_data": {"sha256": data_sha256, "n_images": report["n_images"], "counts": report["counts"],
                      "left_out": report.get("left_out", {}), "skipped": dict(skipped or {}), **(extra or {})},
        "weights": "unchanged (byte-identical copy of the original's .pt)",
    }
    new.metrics = {**{f"original_{k}": v for k, v in card.metrics.items()}, **fields["metrics"],
                   "recalibration": report}
    if new.ood.get("file"):
        new.ood["file"] = f"{name}.ood.pt"
    refitted = " and ".join(k.replace("_", " ") for k, c in report.get("components", {}).items() if c["refit"])
    new.limitations = list(new.limitations) + [
        f"Recalibrated from {card.name} for {task.finding!r} on {report['n_images']} labelled images of one site "
        f"(site data SHA-256 {data_sha256[:12]}, {date[:10]}): only the {refitted or 'temperature and threshold'} "
        "of that label changed, where cross-validation on the site's images showed it helps; the network is "
        "unchanged. metrics['recalibration']['held_out'] has the held-out figures; the 'site' metrics are "
        "measured on the images they were fitted on (optimistic)."
        + (" The 'original_*' metrics are the original model's at its own operating point." if card.metrics else "")
    ]
    return new


def _copy_verified(src: Path, dst: Path, sha256: str, what: str) -> None:
    """Copy ``src`` to ``dst`` via a temporary file; keep it only if its SHA-256 is ``sha256``."""
    if not src.is_file():
        raise FileNotFoundError(f"{what} not found: {src}")
    if file_sha256(src) != sha256:
        raise RecalibrationError(f"{what} {src} does not match the SHA-256 recorded for it; it changed "
                                 "after the card was made: recalibrate again")
    if dst.is_file() and file_sha256(dst) == sha256:
        return
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    if file_sha256(tmp) != sha256:
        tmp.unlink(missing_ok=True)
        raise RecalibrationError(f"copying {what} to {dst} did not give identical bytes (disk full or "
                                 "failing?); nothing was written")
    os.replace(tmp, dst)


def write_recalibrated(card: ModelCard, new_card: ModelCard, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``new_card`` as ``out`` (``<name>.json``) beside byte-identical copies of the weights.

    The original's ``.pt`` is copied to ``<name>.pt`` (and its gate file to ``<name>.ood.pt``
    when the card has one); each copy must have the SHA-256 recorded in ``new_card``, else
    nothing is kept.

    Args:
        card: The original card (loaded from its file).
        new_card: From :func:`recalibrated_card`; its name must be the stem of ``out``.
        out: Path of the new card's ``.json``.
        overwrite: Replace an existing card of that name.

    Returns:
        The written card's path.

    Raises:
        RecalibrationError: ``out`` is the original's, exists (without ``overwrite``), or does
            not match the new card's name; a file's checksum differs.
        FileNotFoundError: the original's weights or gate file are missing.
    """
    out = card_file(out)
    if out.stem != new_card.name:
        raise RecalibrationError(f"the output file {out.name} does not match the card's name {new_card.name!r}")
    src_pt = card.weights_path
    dst_pt = out.parent / f"{new_card.name}{src_pt.suffix}"  # .pt, or an imported model's .safetensors
    if card.weights_file:  # the new card names its copy, in the same format
        new_card.weights_file = dst_pt.name
    if dst_pt.resolve() == src_pt.resolve() or out.resolve() == Path(card.path).resolve():
        raise RecalibrationError(f"{out} would overwrite the original card {card.name!r}: choose a new name")
    if out.exists() and not overwrite:
        raise RecalibrationError(f"{out} already exists: choose another name or allow overwriting")
    out.parent.mkdir(parents=True, exist_ok=True)
    _copy_verified(src_pt, dst_pt, new_card.training["recalibrated_from"]["weights_sha256"], "the weights")
    if card.ood_path is not None:
        gate_sha = card.ood.get("sha256") or file_sha256(card.ood_path)
        new_card.ood["sha256"] = gate_sha
        _copy_verified(card.ood_path, out.parent / new_card.ood["file"], gate_sha, "the OOD gate file")
    return new_card.save(out)
