"""Batch analysis for the Streamlit app: uploads and ZIP archives -> one row per file.

ZIP archives are listed and expanded by :mod:`medcnn.io.archive`: in memory, never extracted,
with zip-bomb guards and one decompression budget for all the ZIPs of one upload
(:data:`ZIP_MAX_TOTAL_BYTES`); over it the whole upload is refused before anything is expanded
(:class:`~medcnn.io.archive.ArchiveBudgetError`, shown by every page as :func:`refusal_message`).
This module keeps each session's :class:`~medcnn.io.archive.ExpansionCache`
(:func:`session_cache`, at most :data:`SESSION_EXPANDED_BYTES`), so a rerun (a slider move)
does not expand a ZIP again, and the Batch page's items are lazy: a member is expanded when it
is analysed.

Scoring (:func:`score_items`): the files go through the one scoring engine,
:class:`medcnn.scoring.Scorer`, :data:`BATCH_SIZE` at a time (one forward pass per model and chunk,
each in a compute slot, on the app's shared models; when a chunk fails unexpectedly, one file at a
time), so each :class:`BatchResult` holds the engine's row (:data:`medcnn.scoring.ROW_KEYS`) and a
failed file is an error row, never a stopped batch. Under auto the engine routes each image as
every page does (:mod:`medcnn.routing`). An analysed image's map is explained from that prediction
(never predicted again). The table and the CSV are made from those rows in one place,
:func:`table_row` (columns: :data:`BATCH_COLUMNS`); the page only gives some columns headings
(:func:`column_labels`). The last batch's results stay in the session (:func:`analyze_batch`), so a
rerun (a slider move) redraws without scoring again.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from medcnn.app.compute import slotted
from medcnn.app.findings import batch_column_labels, batch_columns
from medcnn.app.state import (AUTO_MODEL, CHOSEN, digest, error_message, explain_tensor, get_predictor, list_models,
                              resolve_card_path, weights_dir)
from medcnn.io import archive
from medcnn.io.archive import ArchiveBudgetError, ArchiveMemberError, ExpansionCache, UploadSet
from medcnn.routing import unread_reason
from medcnn.scoring import Scored, Scorer, Source, new_row
from medcnn.visualize import presentation

__all__ = [
    "BATCH_COLUMNS",
    "BATCH_SIZE",
    "BatchItem",
    "BatchResult",
    "SESSION_EXPANDED_BYTES",
    "ZIP_MAX_MEMBERS",
    "ZIP_MAX_MEMBER_BYTES",
    "ZIP_MAX_TOTAL_BYTES",
    "analyze_batch",
    "batch_items",
    "column_labels",
    "expand_uploads",
    "refusal_message",
    "rows_to_csv",
    "score_items",
    "session_cache",
    "table_row",
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
_RESULTS = "_batch_results"  # session-state key: (key, results) of the last analysed batch


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
#: Files per forward pass. A compute slot is held for one pass, so a chunk this small lets other
#: sessions' analyses in between (chosen, not measured: the engine's own default is 32).
BATCH_SIZE = 8

#: The Batch table's and CSV's columns, in order (snake_case; :func:`table_row` makes them from the
#: engine's row): ``file``; ``modality`` (the DICOM Modality, ``OT`` for PNG/JPEG); ``model``;
#: ``decision`` (in the card's words; ``not analysed`` when the gate withholds the image or no model
#: reads it); ``probability`` (text naming the probability and its threshold, or ``not shown``);
#: ``flag`` (``⚑`` a positive finding is called, ``⚠`` outside the model's scope, unusual, no model);
#: a multi-label card adds ``p_<finding>`` per presented finding (headed ``P(<finding>)``) and
#: ``findings_above_threshold`` before ``caution``; ``caution`` (the gate's caution, or why no model
#: reads the image); ``ood_level``, ``ood_score``, ``ood_reasons`` (the gate's verdict); ``routed``
#: (how the model was chosen: :meth:`medcnn.routing.Route.describe`); ``error``.
BATCH_COLUMNS = ("file", "modality", "model", "decision", "probability", "flag", "caution", "caveat", "ood_level",
                 "ood_score", "ood_reasons", "routed", "error")


@dataclass
class BatchResult:
    """One file's outcome: the engine's row and what its table row and thumbnail need.

    Attributes:
        row: The scoring engine's row (:data:`medcnn.scoring.ROW_KEYS`).
        modality: The image's modality ("" when it could not be read).
        card, prediction: The answering model's card and prediction (None when no model answered).
        display, heatmap: The display image and the map (None unless the image was explained).
        target, probability: What the map explains and its calibrated probability.
        reason: Why no model reads the image (a modality none reads: not analysed, not an error).
        error: The table's error text ("" when none; a failed explanation leaves the row's scores).
    """

    row: dict[str, Any]
    modality: str = ""
    card: Any = None
    prediction: Any = None
    display: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    target: str | None = None
    probability: float | None = None
    reason: str = ""
    error: str = ""

    @property
    def caption(self) -> str:
        """The thumbnail's caption (:func:`~medcnn.visualize.presentation.thumbnail_caption`), ⚑ when flagged."""
        text = presentation.thumbnail_caption(self.row["file"], self.card, self.prediction, self.target,
                                              self.probability)
        return text + (" ⚑" if "⚑" in _flag(self) else "")


def _error_text(e: BaseException) -> str:
    """A ValueError's actionable message; anything else named by type only (no traceback)."""
    return str(e) if isinstance(e, ValueError) else f"unexpected error ({type(e).__name__})"


def _flag(result: BatchResult) -> str:
    if result.reason:
        return "⚠ no model for this image"
    pred = result.prediction
    if pred is None:
        return ""
    if pred.ood.withheld:
        return "⚠ outside the model's scope"
    called = set(result.row["called"] or ()) & set(result.card.head_rule.positives)
    return ("⚑ positive finding" if called else "") + (" ⚠ unusual image" if pred.ood.flagged else "")


def _with_columns(row: dict[str, Any], columns: dict[str, Any], before: str = "caution") -> dict[str, Any]:
    """``row`` with ``columns`` inserted before ``before`` (per-finding columns beside decision and flag)."""
    at = list(row).index(before)
    return {**dict(list(row.items())[:at]), **columns, **dict(list(row.items())[at:])}


def table_row(result: BatchResult) -> dict[str, Any]:
    """The Batch table's (and CSV's) row of one file (:data:`BATCH_COLUMNS`), from the engine's row.

    The cells say what the Analyze page says (:mod:`medcnn.visualize.presentation`): the decision,
    the probability named by its label (a multi-label card: the count of findings at or above their
    operating points and the top one), the gate's caution. ``flag`` marks a row whose decision calls
    one of the card's positive findings (:attr:`medcnn.models.head.Head.positives`).
    """
    row, card, pred = result.row, result.card, result.prediction
    out: dict[str, Any] = dict.fromkeys(BATCH_COLUMNS, "")
    out.update(file=row["file"], modality=result.modality, ood_score=None, flag=_flag(result), error=result.error,
               caveat=row["caveat"] or "")
    if result.reason:
        out.update(decision=presentation.NOT_ANALYSED, probability="not shown", caution=result.reason)
    if pred is None:
        return out
    ood = row["ood"]
    out.update(model=row["model"], decision=presentation.decision_parts(card, pred)[0],
               probability=presentation.batch_probability(card, pred), caution=presentation.batch_caution(pred),
               ood_level=ood["level"], ood_score=None if ood["score"] is None else round(ood["score"], 3),
               ood_reasons="; ".join(ood["reasons"]), routed=row["routed"] or "")
    return _with_columns(out, batch_columns(card, None if pred.ood.withheld else pred))


def column_labels(results: Sequence[BatchResult]) -> dict[str, str]:
    """Column -> heading, for the columns the page heads otherwise than by their name (display only)."""
    labels: dict[str, str] = {}
    for r in results:
        if r.card is not None:
            labels.update(batch_column_labels(r.card))
    return labels


def _scorer(model_choice: str) -> Scorer:
    """The engine on the app's shared models (ValueError: no model of that name)."""
    def load(card_path: Any) -> Any:  # the app's shared model, each forward pass in a compute slot
        return slotted(get_predictor(str(card_path)))

    model = None if not model_choice or model_choice == AUTO_MODEL else resolve_card_path(None, model_choice)
    return Scorer(model, weights_dir=weights_dir(), batch_size=BATCH_SIZE, keep_images=True, loader=load,
                  named=CHOSEN)


def _score(scorer: Scorer, sources: list[Source]) -> list[Scored]:
    """The chunk in one call; when that fails unexpectedly, one source at a time, each failure a row."""
    try:
        return scorer.score(sources)
    except Exception:  # noqa: BLE001 - the engine catches what it expects; anything else: file by file
        pass
    out = []
    for source in sources:
        try:
            out.extend(scorer.score([source]))
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
            out.append(Scored({**new_row(source[0]), "error": f"{type(e).__name__}: {e}", "error_stage": "predict"},
                              exception=e))
    return out


def _result(scorer: Scorer, scored: Scored, method: str) -> BatchResult:
    """One scored file as a result; an analysed image is explained (its pixels are not kept after)."""
    image, pred = scored.image, scored.prediction
    result = BatchResult(scored.row, modality="" if image is None else str(image.meta.modality))
    if scored.exception is not None:
        refused = scorer.model is None and scored.row["error_stage"] == "model" and type(scored.exception) is ValueError
        result.reason = unread_reason(image.meta) if refused and image is not None else ""
        result.error = "" if result.reason else _error_text(scored.exception)
        return result
    result.card, result.prediction = scorer.predictor(scored.card_path).card, pred
    pipeline_result, pred.pipeline_result = pred.pipeline_result, None  # the tensor is not kept
    if pred.ood.withheld:  # not what this model reads: no map
        return result
    result.target = result.card.head_rule.default_target(pred)
    result.probability = float(pred.probabilities[result.target])
    try:
        exp = explain_tensor(str(scored.card_path), pipeline_result.tensor, method, result.target)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
        result.error = _error_text(e)
        return result
    result.display, result.heatmap = pipeline_result.display, exp.heatmap
    return result


def score_items(items: Sequence[BatchItem], model_choice: str = AUTO_MODEL, method: str = "gradcam",
                progress: Callable[[int, int, str], None] | None = None) -> list[BatchResult]:
    """Score (and explain) batch items with the engine, :data:`BATCH_SIZE` at a time (module docstring).

    Args:
        items: The files (:func:`batch_items`); a lazy ZIP member is expanded when its chunk is scored.
        model_choice: :data:`~medcnn.app.state.AUTO_MODEL` (routed per image) or a card name.
        method: Explanation method of the thumbnails.
        progress: ``progress(done, total, last file name)`` after each chunk.

    Returns:
        One result per item, in order; an item that cannot be read or scored has its ``error``.
    """
    try:
        scorer = _scorer(model_choice)
    except ValueError as e:  # no such model: every row says so
        return [BatchResult({**new_row(it.name), "error": str(e)}, error=it.error or str(e)) for it in items]
    results: list[BatchResult | None] = [None] * len(items)
    for start in range(0, len(items), scorer.batch_size):
        chunk, sources, at = items[start:start + scorer.batch_size], [], []
        for i, item in enumerate(chunk, start):
            try:
                sources.append((item.name, item.read()))
                at.append(i)
            except ArchiveMemberError as e:
                results[i] = BatchResult({**new_row(item.name), "error": str(e), "error_stage": "read"}, error=str(e))
        for i, scored in zip(at, _score(scorer, sources)):
            results[i] = _result(scorer, scored, method)
        if progress is not None:
            progress(start + len(chunk), len(items), chunk[-1].name)
    return results


def _batch_key(items: Sequence[BatchItem], model_choice: str, method: str) -> tuple:
    """What a batch's results depend on: each file's name and SHA-256, the options, the installed cards."""
    from medcnn.app.cards import card_mtime

    files = []
    for item in items:
        try:
            files.append((item.name, digest(item.read())))
        except ArchiveMemberError as e:
            files.append((item.name, str(e)))
    return (tuple(files), model_choice, method, tuple((str(c.path), card_mtime(c)) for c in list_models()))


def analyze_batch(items: Sequence[BatchItem], model_choice: str = AUTO_MODEL, method: str = "gradcam",
                  progress: Callable[[int, int, str], None] | None = None) -> list[BatchResult]:
    """:func:`score_items`, the last batch kept in the session: a rerun with the same files and options
    (a slider move) returns its results without scoring again."""
    key = _batch_key(items, model_choice, method)
    last = st.session_state.get(_RESULTS)
    if last is not None and last[0] == key:
        return last[1]
    results = score_items(items, model_choice, method, progress)
    st.session_state[_RESULTS] = (key, results)
    return results


def rows_to_csv(rows: list[dict[str, Any]]) -> bytes:
    """Batch table (:func:`table_row` rows, columns :data:`BATCH_COLUMNS`) as UTF-8 CSV bytes."""
    import pandas as pd

    return pd.DataFrame(rows).to_csv(index=False).encode("utf-8")
