"""Case review for a clinical meeting: a set of images stepped through one at a time.

The set comes from several uploads or ZIP archives, read in memory by
:func:`medcnn.app.batch.expand_uploads` (never extracted, once when taken; all the ZIPs of one
upload share one budget, over which the upload is refused whole: :func:`refusal`). Each file
becomes a :class:`Case` identified only by its position and a short hash of its bytes: file
names (which often hold patient names) are dropped as soon as the archive is read and never
reach the page or the PDF; the uploader is emptied once the set is taken, so its list of file
names does not stay on screen either. A file that cannot be read becomes a case with its error.

Results are computed once per case: the prediction is the case's analysis record
(:func:`~medcnn.app.state.route_upload` over :func:`~medcnn.app.state.analyze_upload`, the same
record the Analyze page reads), and a map is added to that record
(:func:`~medcnn.app.state.explain_analysis`). What the page shows of both is also kept per session
(:func:`case_result`, :func:`case_explanation`), so stepping back and forth through a set larger
than the shared caches never recomputes. The per-session store is bounded by :data:`MAX_CASES`
images.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import streamlit as st

from medcnn.app import state as appstate
from medcnn.app.batch import expand_uploads, refusal_message
from medcnn.app.findings import default_target
from medcnn.app.projector import KEYBOARD_SCRIPT, PRESENTATION_CSS, probability_bars  # noqa: F401 - re-exported
from medcnn.io.archive import ArchiveBudgetError
from medcnn.visualize import presentation
from medcnn.visualize.series import SeriesCase

__all__ = [
    "KEYBOARD_SCRIPT",
    "MAX_CASES",
    "PRESENTATION_CSS",
    "Case",
    "CaseExplanation",
    "CaseResult",
    "case_explanation",
    "case_overlay",
    "case_result",
    "clear_set",
    "current_index",
    "empty_set_loaded",
    "has_result",
    "load_cases",
    "loaded_cases",
    "probability_bars",
    "refusal",
    "series_cases",
    "step",
    "take_uploads",
    "uploader_key",
]

#: Most images one review set holds (the per-session results are kept for all of them).
MAX_CASES = 100

_STATE = "_review"  # session-state prefix of this page's stores


@dataclass(frozen=True)
class Case:
    """One case of the set: its position, the SHA-256 of its bytes, the bytes or an error.

    Attributes:
        number: Position in the set, from 1.
        key: Hex SHA-256 of ``data`` (``""`` when there are no bytes).
        data: The file's bytes; None when the file could not be taken from its archive.
        error: Why the file cannot be analysed (empty when it may be).
    """

    number: int
    key: str
    data: bytes | None = field(default=None, repr=False)
    error: str = ""

    @property
    def image_id(self) -> str:
        """Short image hash shown to the user (the case's only identifier)."""
        return self.key[:8]

    def title(self, total: int) -> str:
        """``"Case 2 of 5 · image 3fa2b1c9"``."""
        return f"Case {self.number} of {total}" + (f" · image {self.image_id}" if self.key else " · no image")


def _scrub(message: str, name: str) -> str:
    """``message`` without the file's name (a ZIP library error may quote the member's
    path, and file names often hold patient names): the full ``archive/member`` name and
    any quoted member path or base name become "this file"."""
    member = name.split("/", 1)[-1]
    message = message.replace(name, "this file") if "/" in name else message
    for part in {member, member.rsplit("/", 1)[-1]}:
        for quote in ("'", '"'):
            message = message.replace(f"{quote}{part}{quote}", "this file")
    return message


def load_cases(files: Iterable[tuple[str, bytes]], max_cases: int = MAX_CASES) -> list[Case]:
    """The cases of uploaded files and ZIP archives, in upload then archive order.

    Names are used only to read archives; they are dropped here. Items of the set
    beyond ``max_cases`` are not kept, and one last error case says so.

    Args:
        files: ``(name, bytes)`` per upload.
        max_cases: Most cases kept.

    Returns:
        Cases numbered from 1.

    Raises:
        ArchiveBudgetError: the ZIPs together are over the upload budget (nothing expanded).
    """
    cases: list[Case] = []
    skipped = 0
    for item in expand_uploads(files):
        if len(cases) >= max_cases:
            skipped += 1
            continue
        number = len(cases) + 1
        if item.error:
            cases.append(Case(number, "", None, _scrub(item.error, item.name)))
        else:
            cases.append(Case(number, appstate.digest(item.data), item.data))
    if skipped:
        cases.append(Case(len(cases) + 1, "", None, f"{skipped} more file(s) not loaded: a review set holds at "
                                                    f"most {max_cases} images (use the Batch page for more)"))
    return cases


def uploader_key() -> str:
    """Key of the page's file uploader; it changes each time a set is taken, which empties
    the uploader, so the uploaded file names do not stay on screen."""
    return f"review_upload_{st.session_state.get(f'{_STATE}_generation', 0)}"


def take_uploads(uploads: Sequence[Any]) -> list[Case] | None:
    """Read uploads into the session's case set (replacing any previous set) and reset
    the uploader (:func:`uploader_key`). Results of images not in the new set are dropped.

    An upload over the ZIP budget is refused whole (the loaded set stays; :func:`refusal` says why).

    Args:
        uploads: ``UploadedFile`` objects (``name``, ``getvalue()``).

    Returns:
        The new set's cases, or None when the upload was refused.
    """
    st.session_state[f"{_STATE}_generation"] = st.session_state.get(f"{_STATE}_generation", 0) + 1
    try:
        cases = load_cases([(f.name, f.getvalue()) for f in uploads])
    except ArchiveBudgetError as e:
        st.session_state[f"{_STATE}_refused"] = refusal_message(e)
        return None
    st.session_state.pop(f"{_STATE}_refused", None)
    return set_cases(cases)


def set_cases(cases: Sequence[Case], append: bool = False) -> list[Case]:
    """Make ``cases`` the session's case set (or add them after the loaded ones, renumbered, up to
    :data:`MAX_CASES`), starting on the first new case; results of images no longer in the set are
    dropped. Uploads (:func:`take_uploads`) and a PACS's studies use it.

    Returns:
        The set now loaded.
    """
    earlier = loaded_cases() if append else []
    room = max(MAX_CASES - len(earlier), 0)
    added = [dataclasses.replace(c, number=len(earlier) + i) for i, c in enumerate(list(cases)[:room], start=1)]
    cases = earlier + added
    keys = {c.key for c in cases}
    for name in ("results", "explanations"):
        store = _store(name)
        for k in [k for k in store if k[0] not in keys]:
            del store[k]
    st.session_state[f"{_STATE}_set"] = cases
    st.session_state[f"{_STATE}_index"] = len(earlier) if added else 0
    return cases


def refusal() -> str:
    """Why the last upload was refused (``""`` when it was not): shown until the next set is taken."""
    return st.session_state.get(f"{_STATE}_refused", "")


def loaded_cases() -> list[Case]:
    """The session's case set (empty before anything is loaded)."""
    return list(st.session_state.get(f"{_STATE}_set") or [])


def empty_set_loaded() -> bool:
    """True when the last upload held no file to review (e.g. a ZIP of folders only)."""
    return st.session_state.get(f"{_STATE}_set") == []


def clear_set() -> None:
    """``on_click`` of the clear button: forget the set, its results and its PDF."""
    for name in ("set", "results", "explanations", "index", "refused"):
        st.session_state.pop(f"{_STATE}_{name}", None)
    st.session_state.pop("review_pdf", None)


def step(delta: int, total: int) -> None:
    """``on_click`` of the previous / next buttons: move by ``delta`` within ``[0, total)``."""
    index = st.session_state.get(f"{_STATE}_index", 0) + delta
    st.session_state[f"{_STATE}_index"] = min(max(index, 0), max(total - 1, 0))


def current_index(total: int) -> int:
    """Index (0-based) of the case on screen, kept within the set."""
    index = min(max(int(st.session_state.get(f"{_STATE}_index", 0)), 0), max(total - 1, 0))
    st.session_state[f"{_STATE}_index"] = index
    return index


# --------------------------------------------------------------------------- results
@dataclass
class CaseResult:
    """What the page shows of one case's prediction (or why there is none).

    Attributes:
        error: User-facing error (empty when analysed).
        card_path: The card used.
        card: :class:`~medcnn.models.card.ModelCard` of that model.
        prediction: :class:`~medcnn.inference.Prediction` without its pipeline result.
        display: float32 (H, W) in [0, 1], the model-input image (overlay target).
        steps: Preprocessing steps for display (uint8 thumbnails).
        meta: The image's non-identifying :class:`~medcnn.io.ImageMeta`.
        how: How the model was chosen (:class:`medcnn.app.state.Routed`).
        reason: Why no model's result is shown and what to do ("" when one is).
    """

    error: str = ""
    card_path: str = ""
    card: Any = None
    prediction: Any = None
    display: np.ndarray | None = None
    steps: list[appstate.StepView] = field(default_factory=list)
    meta: Any = None
    how: str = ""
    reason: str = ""

    @property
    def withheld(self) -> bool:
        """True when the out-of-distribution gate withholds the result."""
        return self.prediction is not None and self.prediction.ood.withheld

    @property
    def explainable(self) -> bool:
        """True when a saliency map may be shown (analysed and not withheld)."""
        return self.prediction is not None and not self.withheld


@dataclass
class CaseExplanation:
    """A case's saliency map for one method (or the error that stopped it), with the explained
    target's probability and what the map means when it could mislead (``notice``)."""

    method: str
    target: str
    heatmap: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""
    probability: float | None = None
    notice: str | None = None


def _store(name: str) -> dict:
    return st.session_state.setdefault(f"{_STATE}_{name}", {})


def has_result(case: Case, model_choice: str) -> bool:
    """Whether :func:`case_result` is already known for this session (no work to do)."""
    return not case.key or (case.key, model_choice) in _store("results")


def case_result(case: Case, model_choice: str) -> CaseResult:
    """Prediction of one case with the chosen model (computed once per session).

    Every library error becomes :attr:`CaseResult.error` (a message, never a traceback).
    """
    if case.data is None:
        return CaseResult(error=case.error or "no image")
    store = _store("results")
    key = (case.key, model_choice)
    if key not in store:
        try:
            routed = appstate.route_upload(case.key, case.data, model_choice)  # per image, like Analyze
            meta = appstate.read_upload(case.key, case.data, None).meta if routed.analysis is None else None
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the review
            store[key] = CaseResult(error=appstate.error_message("analysing this file", e))
        else:
            record = routed.analysis
            if record is None:  # no model reads it (e.g. MR): not analysed, with the reason
                store[key] = CaseResult(meta=meta, how=routed.how, reason=routed.reason)
                return store[key]
            views = [dataclasses.replace(s, image=_to_uint8(s.image)) for s in record.steps]
            store[key] = CaseResult("", record.card_path, record.card,
                                    dataclasses.replace(record.prediction, pipeline_result=None), record.display,
                                    views, record.meta, routed.how, routed.reason)
    return store[key]


def case_explanation(case: Case, result: CaseResult, method: str) -> CaseExplanation:
    """Saliency map of the case's predicted class with ``method`` (computed once per session).

    Raises:
        ValueError: the case has no map to show (not analysed, or withheld by the gate).
    """
    if not result.explainable or case.data is None:
        raise ValueError("this case has no explanation: it was not analysed")
    target = default_target(result.card, result.prediction)  # a multi-label model's top finding
    store = _store("explanations")
    key = (case.key, result.card_path, method, target)
    if key not in store:
        try:  # the case's record (kept by the shared cache; rebuilt from its image only if evicted)
            record = appstate.analyze_upload(case.key, case.data, result.card_path)
            expl = appstate.explain_analysis(record, method, target)
        except Exception as e:  # noqa: BLE001
            store[key] = CaseExplanation(method, target, error=appstate.error_message("explaining this case", e))
        else:
            store[key] = CaseExplanation(method, target, np.asarray(expl.heatmap, np.float32), dict(expl.params),
                                         float(expl.seconds), probability=expl.probability,
                                         notice=presentation.map_notice(expl))
    return store[key]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    return a if a.dtype == np.uint8 else (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def case_overlay(result: CaseResult, expl: CaseExplanation, cmap: str = "inferno", alpha: float = 0.6) -> np.ndarray:
    """The case's overlay as the page and the PDF draw it: the map scaled by the explained target's
    probability (:func:`medcnn.visualize.presentation.map_scale`), low evidence transparent."""
    from medcnn.visualize import overlay

    return overlay(result.display, expl.heatmap, cmap=cmap, alpha=alpha,
                   scale=presentation.map_scale(expl.probability))


def series_cases(cases: list[Case], model_choice: str, method: str | None, method_label: str,
                 cmap: str = "inferno", alpha: float = 0.6) -> list[SeriesCase]:
    """The set as :class:`~medcnn.visualize.series.SeriesCase` rows for the summary table
    and the case-series PDF; overlays only where ``method`` is given and a map exists."""
    out = []
    for case in cases:
        notice = None
        result = case_result(case, model_choice)
        if result.error or result.prediction is None:
            out.append(SeriesCase(case.number, case.image_id,
                                  error=result.error or f"{presentation.NOT_ANALYSED}: {result.reason}"))
            continue
        over, target, seconds = None, None, None
        if method and result.explainable:
            expl = case_explanation(case, result, method)
            if expl.heatmap is not None:
                over = case_overlay(result, expl, cmap, alpha)
                target, seconds, notice = expl.target, expl.seconds, expl.notice
        out.append(SeriesCase(case.number, case.image_id, result.card, result.prediction, result.display, over,
                              method_label if over is not None else "", target, seconds, result.meta,
                              notice=notice if over is not None else None))
    return out
