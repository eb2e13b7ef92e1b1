"""Batch analysis for the Streamlit app: uploads and ZIP archives -> one row per file.

ZIP archives are opened in memory with zip-bomb guards, never extracted to disk. Each
file goes through the same cached read / predict / explain as a single upload
(:mod:`medcnn.app.state`); one bad file only fills the ``error`` column of its row.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcnn.app.findings import batch_columns, default_target, is_multilabel
from medcnn.app.state import (AUTO_MODEL, digest, explain_upload, get_predictor, predict_upload, read_upload,
                              resolve_card_path)

__all__ = [
    "BatchItem",
    "BatchResult",
    "ZIP_MAX_MEMBERS",
    "ZIP_MAX_MEMBER_BYTES",
    "ZIP_MAX_TOTAL_BYTES",
    "analyze_batch_item",
    "expand_uploads",
    "rows_to_csv",
]

#: ZIP guards (zip bombs): member count, size of one member, total uncompressed size.
ZIP_MAX_MEMBERS = 500
ZIP_MAX_MEMBER_BYTES = 128 * 2**20
ZIP_MAX_TOTAL_BYTES = 512 * 2**20
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class BatchItem:
    """One file of a batch: its name (``zip/member`` for ZIP members), bytes, or an error."""

    name: str
    data: bytes | None
    error: str = ""


def expand_uploads(
    files: Iterable[tuple[str, bytes]],
    max_members: int = ZIP_MAX_MEMBERS,
    max_member_bytes: int = ZIP_MAX_MEMBER_BYTES,
    max_total_bytes: int = ZIP_MAX_TOTAL_BYTES,
) -> Iterator[BatchItem]:
    """Uploaded files as batch items; ZIP archives are opened in memory, never extracted.

    Directories, hidden files and ``__MACOSX`` entries are skipped. A member whose
    declared or actual uncompressed size exceeds ``max_member_bytes`` becomes an error
    item (the read is bounded, so a lying header cannot exhaust memory); members beyond
    ``max_members`` or ``max_total_bytes`` are not read, and one error item says so.
    """
    for name, data in files:
        if data[:4] == _ZIP_MAGIC:
            yield from _zip_members(name, data, max_members, max_member_bytes, max_total_bytes)
        else:
            yield BatchItem(name, data)


def _zip_members(name: str, data: bytes, max_members: int, max_member_bytes: int,
                 max_total_bytes: int) -> Iterator[BatchItem]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as e:
        yield BatchItem(name, None, f"not a readable ZIP archive: {e}")
        return
    infos = [i for i in archive.infolist() if not i.is_dir()
             and not any(part.startswith(".") or part == "__MACOSX" for part in i.filename.split("/"))]
    if len(infos) > max_members:
        yield BatchItem(name, None, f"the ZIP holds {len(infos)} files; only the first {max_members} are read")
        infos = infos[:max_members]
    total = 0
    for info in infos:
        label = f"{name}/{info.filename}"
        if info.file_size > max_member_bytes:
            yield BatchItem(label, None, f"too large: {info.file_size / 2**20:.0f} MiB uncompressed "
                                         f"(limit {max_member_bytes / 2**20:.0f} MiB)")
            continue
        if total + info.file_size > max_total_bytes:
            yield BatchItem(label, None, f"skipped: the ZIP's uncompressed total exceeds "
                                         f"{max_total_bytes / 2**20:.0f} MiB")
            break
        try:
            with archive.open(info) as fh:
                content = fh.read(max_member_bytes + 1)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
            yield BatchItem(label, None, f"cannot read this ZIP member: {e}")
            continue
        if len(content) > max_member_bytes:
            yield BatchItem(label, None, f"too large: over {max_member_bytes / 2**20:.0f} MiB uncompressed")
            continue
        total += len(content)
        yield BatchItem(label, content)


# --------------------------------------------------------------------------- analysis
@dataclass
class BatchResult:
    """Row of the batch table plus what the thumbnail needs (None after an error): the map's target
    (the predicted class, or a multi-label model's top finding) and its probability."""

    row: dict[str, Any]
    display: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    probability: float | None = None
    target: str | None = None


def _with_columns(row: dict[str, Any], columns: dict[str, Any], before: str = "ood level") -> dict[str, Any]:
    """``row`` with ``columns`` inserted before the column ``before`` (the per-finding columns sit
    next to the label and flag, not after the error)."""
    if not columns:
        return row
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k == before:
            out.update(columns)
        out[k] = v
    return out


def analyze_batch_item(item: BatchItem, model_choice: str = AUTO_MODEL, method: str = "gradcam") -> BatchResult:
    """Predict and explain one batch item; any error is caught into the row's ``error``.

    A multi-label card's row has no single ``probability``: it gets one ``P(<finding>)`` column per
    presented finding and ``findings_above_threshold`` (:func:`medcnn.app.findings.batch_columns`),
    and its thumbnail explains the top finding.
    """
    row: dict[str, Any] = {"file": item.name, "modality": "", "model": "", "predicted label": "",
                           "probability": None, "flag": "", "ood level": "", "ood score": None,
                           "ood reasons": "", "error": item.error}
    if item.data is None:
        return BatchResult(row)
    try:
        key = digest(item.data)
        image = read_upload(key, item.data, None)
        row["modality"] = image.meta.modality
        card_path = resolve_card_path(image.meta, model_choice)
        pred, _ = predict_upload(key, item.data, card_path, None, None)
        row.update({"model": pred.model, "ood level": pred.ood.level,
                    "ood score": None if pred.ood.score is None else round(pred.ood.score, 3),
                    "ood reasons": "; ".join(pred.ood.reasons)})
        card = get_predictor(card_path).card
        if pred.ood.withheld:  # not what this model reads: no label, no probability, no map
            row.update({"predicted label": "not analysed", "flag": "⚠ outside the model's scope"})
            return BatchResult(_with_columns(row, batch_columns(card)), pred.pipeline_result.display)
        multilabel = is_multilabel(card)
        called = any(r["above"] for r in pred.findings) if multilabel else pred.above_threshold
        row.update({"predicted label": pred.label, "probability": None if multilabel else round(pred.positive_prob, 4),
                    "flag": (("⚑ finding" if multilabel else "⚑ positive") if called else "")
                    + (" ⚠ unusual image" if pred.ood.flagged else "")})
        row = _with_columns(row, batch_columns(card, pred))
        target = default_target(card, pred)
        expl = explain_upload(key, item.data, card_path, None, None, method, target)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
        row["error"] = str(e) if isinstance(e, ValueError) else f"unexpected error ({type(e).__name__})"
        return BatchResult(row)
    return BatchResult(row, pred.pipeline_result.display, expl.heatmap, pred.probabilities[target], target)


def rows_to_csv(rows: list[dict[str, Any]]) -> bytes:
    """Batch table as UTF-8 CSV bytes."""
    import pandas as pd

    return pd.DataFrame(rows).to_csv(index=False).encode("utf-8")
