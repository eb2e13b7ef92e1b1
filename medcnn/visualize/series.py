"""Case-series PDF report: a summary table of every case, then one page per case.

For a clinical meeting that reviews a set of images. The summary (first page, more only
when the table or the model cards' text need them) lists each case's number, short
image hash, model, decision, probability and out-of-distribution flag, followed by the
full text of every model card used; each case then starts on its own page with the same
block as the one-image report (:func:`medcnn.visualize.report.write_case`). Layout and
pagination come from :class:`medcnn.visualize.layout.Flow`, so nothing is truncated.

Privacy: cases are identified by their position and a short hash of the image bytes,
never by file name; images carry only the non-identifying :class:`~medcnn.io.ImageMeta`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from medcnn.models.card import ModelCard
from medcnn.visualize import presentation
from medcnn.visualize.layout import Flow
from medcnn.visualize.report import report_header, write_card, write_case

__all__ = ["SUMMARY_COLUMNS", "SeriesCase", "build_series_report", "series_flow", "summary_row"]

#: Columns of the summary table and their share of the page width.
SUMMARY_COLUMNS: tuple[tuple[str, float], ...] = (
    ("Case", 0.07), ("Image", 0.12), ("Model", 0.15), ("Decision / findings", 0.25),
    ("Probability", 0.17), ("Out-of-distribution flag", 0.24),
)


@dataclass
class SeriesCase:
    """One case of a series, as the report prints it.

    Attributes:
        number: Position in the series, from 1.
        image_id: Short hash of the image bytes (the case's only identifier), or ``""``.
        card: Model card used (None when the file could not be analysed).
        prediction: :class:`medcnn.inference.Prediction` (None after an error).
        display: float32 (H, W) in [0, 1] model-input image (None after an error).
        overlay: uint8 (H, W, 3) saliency overlay; None when withheld or not computed.
        method: Explanation method label.
        target: Class the explanation targets.
        explanation_seconds: Time the explanation took.
        meta: :class:`medcnn.io.ImageMeta` (non-identifying fields only are printed).
        error: Why the file could not be analysed (empty when it was).
        notice: What the map means when it could mislead (``Explanation.notice``: the target is
            not called, or the map is empty), or None.
    """

    number: int
    image_id: str = ""
    card: ModelCard | None = None
    prediction: Any = None
    display: np.ndarray | None = None
    overlay: np.ndarray | None = None
    method: str = ""
    target: str | None = None
    explanation_seconds: float | None = None
    meta: Any = None
    error: str = ""
    notice: str | None = None

    @property
    def withheld(self) -> bool:
        """True when the out-of-distribution gate withheld the result."""
        return bool(self.prediction is not None and self.prediction.ood.withheld)


def summary_row(case: SeriesCase) -> dict[str, str]:
    """The case's row of the summary table (column titles of :data:`SUMMARY_COLUMNS`).

    A withheld case gets "not analysed" and no probability; an unreadable file its error.
    """
    row = {"Case": str(case.number), "Image": case.image_id or "no image", "Model": "", "Decision / findings": "",
           "Probability": "—", "Out-of-distribution flag": "—"}
    if case.error or case.prediction is None or case.card is None:
        row["Decision / findings"] = f"Could not be analysed: {case.error or 'no result'}"
        return row
    pred, card = case.prediction, case.card
    row["Model"] = card.name
    row["Decision / findings"] = presentation.decision(pred)
    if not case.withheld:
        row["Probability"] = presentation.batch_probability(card, pred)
    row["Out-of-distribution flag"] = presentation.caution_text(pred) or "ok"
    return row


def series_flow(cases: list[SeriesCase], *, title: str = "medcnn case review",
                created: datetime | None = None) -> Flow:
    """Lay out the case-series report.

    Sections (:attr:`Flow.sections`): ``"summary"`` (header, table, model cards), then
    ``"case <n>"`` for each case, each starting on a new page.

    Args:
        cases: The cases in series order.
        title: Report title.
        created: Report time (default: now, UTC).

    Returns:
        The :class:`~medcnn.visualize.layout.Flow` (its ``pages`` are matplotlib figures).
    """
    flow = Flow(footer=title)
    flow.section("summary")
    report_header(flow, title, created or datetime.now(timezone.utc))
    n = len(cases)
    n_err = sum(bool(c.error or c.prediction is None) for c in cases)
    n_out = sum(c.withheld for c in cases)
    n_flag = sum(bool(c.prediction is not None and c.prediction.ood.flagged and not c.withheld) for c in cases)
    flow.text(f"{n} case{'s' if n != 1 else ''}: {n_out} not analysed (outside the model's scope), "
              f"{n_flag} with a caution, {n_err} that could not be read. Cases are numbered in the "
              "order they were loaded and identified by a short hash of the image, never by file name.", 9)
    flow.space(6)
    columns = list(SUMMARY_COLUMNS)
    flow.table(columns, [[summary_row(c)[name] for name, _ in columns] for c in cases])

    cards: dict[str, ModelCard] = {}
    for case in cases:
        if case.card is not None:
            cards.setdefault(case.card.name, case.card)
    for card in cards.values():
        flow.space(8)
        write_card(flow, card, f"Model card: {card.name}")

    for case in cases:
        flow.section(f"case {case.number}", new_page=True)
        head = f"Case {case.number} of {n}" + (f" · image {case.image_id}" if case.image_id else "")
        flow.text(head, 14, weight="bold")
        if case.error or case.prediction is None or case.card is None:
            flow.space(6)
            flow.text(f"Could not be analysed: {case.error or 'no result'}", 10, weight="bold", color="#a00000")
            continue
        flow.text(f"Model {case.card.name} ({case.card.architecture}, {case.card.modality})", 9, color="#444444")
        flow.space(4)
        write_case(flow, case.card, case.prediction, case.display, case.overlay, method=case.method,
                   target=case.target, explanation_seconds=case.explanation_seconds, meta=case.meta,
                   notice=case.notice)
    return flow


def build_series_report(cases: list[SeriesCase], **options: Any) -> bytes:
    """Render the case-series report as PDF bytes (searchable TrueType text, no author,
    no file names, no patient identifiers).

    Args:
        cases, **options: see :func:`series_flow`.
    """
    return series_flow(cases, **options).to_pdf(options.get("title", "medcnn case review"))
