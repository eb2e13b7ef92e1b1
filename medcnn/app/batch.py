"""Batch analysis for the Streamlit app: uploads and ZIP archives -> one row per file.

ZIP archives are listed and expanded by :mod:`medcnn.io.archive`: in memory, never extracted,
with zip-bomb guards and one decompression budget for all the ZIPs of one upload
(:data:`ZIP_MAX_TOTAL_BYTES`); over it the whole upload is refused before anything is expanded
(:class:`~medcnn.io.archive.ArchiveBudgetError`, shown by every page as :func:`refusal_message`).
This module keeps each session's :class:`~medcnn.io.archive.ExpansionCache`
(:func:`session_cache`, at most :data:`SESSION_EXPANDED_BYTES`), so a rerun (a slider move)
does not expand a ZIP again, and the Batch page's items are lazy: a member is expanded when it
is analysed. Each file goes through the same cached read / predict / explain as a single upload
(:mod:`medcnn.app.state`); one bad file only fills the ``error`` column of its row.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from medcnn.app.findings import batch_columns
from medcnn.app.state import AUTO_MODEL, digest, error_message, explain_upload, get_predictor, read_upload, route_upload
from medcnn.io import archive
from medcnn.io.archive import ArchiveBudgetError, ArchiveMemberError, ExpansionCache, UploadSet
from medcnn.visualize import presentation

__all__ = [
    "BATCH_COLUMNS",
    "BatchItem",
    "BatchResult",
    "SESSION_EXPANDED_BYTES",
    "ZIP_MAX_MEMBERS",
    "ZIP_MAX_MEMBER_BYTES",
    "ZIP_MAX_TOTAL_BYTES",
    "analyze_batch_item",
    "batch_items",
    "expand_uploads",
    "refusal_message",
    "rows_to_csv",
    "session_cache",
]

#: ZIP guards (zip bombs): files per ZIP, size of one member, and what all the ZIPs of one
#: upload may expand to together (:mod:`medcnn.io.archive` owns them and says why).
ZIP_MAX_MEMBERS = archive.MAX_MEMBERS
ZIP_MAX_MEMBER_BYTES = archive.MAX_MEMBER_BYTES
ZIP_MAX_TOTAL_BYTES = archive.MAX_REQUEST_BYTES
#: Most expanded ZIP bytes one session keeps between reruns: one whole accepted upload, so a
#: rerun never expands again, and no more, so one session cannot fill the server.
SESSION_EXPANDED_BYTES = archive.MAX_REQUEST_BYTES

_CACHE = "_zip_expansions"  # session-state key of the session's ExpansionCache
_ACCEPTED = "_batch_accepted"  # session-state key: (name, SHA-256) of the last accepted Batch upload


@dataclass
class BatchItem:
    """One file of a batch: its name (``zip/member`` for ZIP members), bytes, or an error.

    A lazy item (from :func:`expand_uploads` with ``lazy=True``) has no ``data`` yet: :meth:`read`
    expands its member when it is analysed.
    """

    name: str
    data: bytes | None = None
    error: str = ""
    source: Callable[[], bytes] | None = field(default=None, repr=False, compare=False)

    def read(self) -> bytes:
        """The file's bytes (a lazy ZIP member is expanded now, or taken from the session's cache).

        Raises:
            ArchiveMemberError: the item is an error, or its member cannot be read.
        """
        if self.data is not None:
            return self.data
        if self.error or self.source is None:
            raise ArchiveMemberError(self.error or "no bytes to read")
        return self.source()


def expand_uploads(
    files: Iterable[tuple[str, bytes]],
    max_members: int = ZIP_MAX_MEMBERS,
    max_member_bytes: int = ZIP_MAX_MEMBER_BYTES,
    max_total_bytes: int = ZIP_MAX_TOTAL_BYTES,
    cache: ExpansionCache | None = None,
    lazy: bool = False,
) -> list[BatchItem]:
    """Uploaded files as batch items; ZIP archives are opened in memory, never extracted.

    Directories, hidden files and ``__MACOSX`` entries are skipped. A member declared larger
    than ``max_member_bytes``, or one that cannot be read, becomes an error item; members
    beyond ``max_members`` are not read, and one error item says so.

    Args:
        files: ``(name, bytes)`` per uploaded file (one upload request).
        max_members: Most files read from one ZIP.
        max_member_bytes: Largest uncompressed member.
        max_total_bytes: What all the ZIPs of ``files`` may expand to together.
        cache: Session cache of expanded members (None: expand every time).
        lazy: Leave members unexpanded until :meth:`BatchItem.read`.

    Raises:
        ArchiveBudgetError: the ZIPs together declare more than ``max_total_bytes``; nothing
            was expanded.
    """
    uploads = UploadSet(files, max_members, max_member_bytes, max_total_bytes, cache)
    items = []
    for entry in uploads.entries:
        if entry.error:
            items.append(BatchItem(entry.name, None, entry.error))
        elif lazy:
            items.append(BatchItem(entry.name, source=functools.partial(uploads.read, entry)))
        else:
            try:
                items.append(BatchItem(entry.name, uploads.read(entry)))
            except ArchiveMemberError as e:
                items.append(BatchItem(entry.name, None, str(e)))
    return items


def session_cache() -> ExpansionCache:
    """This session's cache of expanded ZIP members (created on first use)."""
    return st.session_state.setdefault(_CACHE, ExpansionCache(SESSION_EXPANDED_BYTES))


def refusal_message(error: ArchiveBudgetError) -> str:
    """What every page shows when an upload's ZIPs are over the budget (one wording everywhere)."""
    return error_message("reading the uploads", error)


def batch_items(files: Sequence[tuple[str, bytes]]) -> tuple[list[BatchItem], str]:
    """The Batch page's items (lazy, through :func:`session_cache`) and why the upload was refused.

    Over the budget the upload is refused as a whole; the items are then those of the last
    accepted upload still in the uploader (already expanded, so nothing is expanded), and the
    earlier results stay on the page.

    Returns:
        ``(items, message)``: ``message`` is ``""`` when the upload was accepted.
    """
    keys = [(name, digest(data)) for name, data in files]
    try:
        items = expand_uploads(files, cache=session_cache(), lazy=True)
    except ArchiveBudgetError as e:
        accepted = st.session_state.get(_ACCEPTED, set())
        earlier = [f for f, k in zip(files, keys) if k in accepted]
        return (expand_uploads(earlier, cache=session_cache(), lazy=True) if earlier else []), refusal_message(e)
    st.session_state[_ACCEPTED] = set(keys)
    return items, ""


# --------------------------------------------------------------------------- analysis
@dataclass
class BatchResult:
    """Row of the batch table plus what the thumbnail needs (None after an error): the prediction and
    card (for the caption), the map's target (the decided label, or a multi-label model's top
    finding) and its probability."""

    row: dict[str, Any]
    display: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    probability: float | None = None
    target: str | None = None
    prediction: Any = None
    card: Any = None

    @property
    def caption(self) -> str:
        """The thumbnail's caption (:func:`medcnn.visualize.presentation.thumbnail_caption`), with the
        row's ⚑ when it calls a positive finding."""
        text = presentation.thumbnail_caption(self.row["file"], self.card, self.prediction, self.target,
                                              self.probability)
        return text + (" ⚑" if "⚑" in self.row["flag"] else "")


#: The Batch table's columns, in order (snake_case; a multi-label card adds its ``P(<finding>)``
#: columns and ``findings_above_threshold`` before ``caution``).
BATCH_COLUMNS = ("file", "modality", "model", "decision", "probability", "flag", "caution", "ood_level",
                 "ood_score", "ood_reasons", "error")


def _with_columns(row: dict[str, Any], columns: dict[str, Any], before: str = "caution") -> dict[str, Any]:
    """``row`` with ``columns`` inserted before the column ``before`` (the per-finding columns sit
    next to the decision and flag, not after the error)."""
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

    The cells say what the Analyze page says (:mod:`medcnn.visualize.presentation`): the decision,
    the probability named by its label (a multi-label card: the count of findings at or above their
    operating points and the top one), the gate's caution. ``flag`` marks a row whose decision calls
    one of the card's positive findings (:attr:`medcnn.models.head.Head.positives`). A multi-label
    card's row also gets one ``P(<finding>)`` column per presented finding and
    ``findings_above_threshold`` (:func:`medcnn.app.findings.batch_columns`); its thumbnail explains
    the top finding.
    """
    row: dict[str, Any] = dict.fromkeys(BATCH_COLUMNS, "")
    row.update(file=item.name, ood_score=None, error=item.error)
    if item.error:
        return BatchResult(row)
    try:
        data = item.read()
        key = digest(data)
        image = read_upload(key, data, None)
        row["modality"] = image.meta.modality
        routed = route_upload(key, data, model_choice)  # per image: a mixed set reaches each family's model
        if routed.prediction is None:  # no model reads it (e.g. MR): not analysed, with the reason
            row.update(decision=presentation.NOT_ANALYSED, probability="not shown", caution=routed.reason,
                       flag="⚠ no model for this image")
            return BatchResult(row)
        card_path, pred = routed.card_path, routed.prediction
        card = get_predictor(card_path).card
        head = card.head_rule
        row.update(model=pred.model, decision=presentation.decision_parts(card, pred)[0],
                   probability=presentation.batch_probability(card, pred), caution=presentation.batch_caution(pred),
                   ood_level=pred.ood.level, ood_score=None if pred.ood.score is None else round(pred.ood.score, 3),
                   ood_reasons="; ".join(pred.ood.reasons + ([routed.how] if routed.rerouted else [])
                                         + ([routed.reason] if routed.reason else [])))
        if pred.ood.withheld:  # not what this model reads: no label, no probability, no map
            row["flag"] = "⚠ outside the model's scope"
            return BatchResult(_with_columns(row, batch_columns(card)), pred.pipeline_result.display,
                               prediction=pred, card=card)
        called = set(pred.decided or ()) & set(head.positives)
        row["flag"] = ("⚑ positive finding" if called else "") + (" ⚠ unusual image" if pred.ood.flagged else "")
        row = _with_columns(row, batch_columns(card, pred))
        target = head.default_target(pred)
        expl = explain_upload(key, data, card_path, None, None, method, target)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
        row["error"] = str(e) if isinstance(e, ValueError) else f"unexpected error ({type(e).__name__})"
        return BatchResult(row)
    return BatchResult(row, pred.pipeline_result.display, expl.heatmap, pred.probabilities[target], target,
                       pred, card)


def rows_to_csv(rows: list[dict[str, Any]]) -> bytes:
    """Batch table as UTF-8 CSV bytes."""
    import pandas as pd

    return pd.DataFrame(rows).to_csv(index=False).encode("utf-8")
