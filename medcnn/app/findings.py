"""Multi-label (findings) models in the app: the findings table, the explanation target, batch columns.

A sigmoid card's prediction holds one row per presented finding, sorted by its probability relative
to its operating point (:attr:`medcnn.inference.Prediction.findings`). The Analyze page shows those
rows as a table and lets the user pick any of them as the explanation target (default: the top row);
the map then explains that finding's logit, which sets its probability
(:mod:`medcnn.explain.objective`). The rows and their wording come from
:mod:`medcnn.visualize.findings`, which the PDF report shares. Softmax cards keep the single-label
display: every helper here answers as before for them (``default_target`` = the predicted label;
what a map can explain is the analysis record's ``targets``, which the card's head orders).
"""
from __future__ import annotations

import re
from typing import Any

import streamlit as st

from medcnn.visualize.findings import finding_metric_rows, finding_rows, hidden_note

__all__ = ["FINDINGS_COLUMN", "batch_column_labels", "batch_columns", "default_target",
           "show_finding_metrics", "show_findings", "target_caption"]

#: Batch column listing the findings at or above their operating points.
FINDINGS_COLUMN = "findings_above_threshold"


def default_target(card: Any, pred: Any) -> str:
    """The target a map explains unless the user picks another (the card's head decides: the decided
    label of a softmax card, the top row of a multi-label card's findings table)."""
    return card.head_rule.default_target(pred)


def show_findings(card: Any, pred: Any, key: str) -> None:
    """The findings table of one image (finding, probability, operating point, relative as a bar, call)
    and, under it, the note naming the findings the card does not present."""
    st.dataframe(
        finding_rows(pred), hide_index=True, key=key,
        column_config={
            "finding": st.column_config.TextColumn("finding"),
            "probability": st.column_config.NumberColumn("probability", format="%.3f",
                                                         help="Calibrated probability of the finding"),
            "operating point": st.column_config.NumberColumn(
                "operating point", format="%.3f",
                help="The probability at which the model calls this finding (chosen on validation data)"),
            "relative": st.column_config.ProgressColumn(
                "relative to operating point", min_value=0.0, max_value=1.0, format="%.2f",
                help="The probability rescaled so that the finding's operating point is 0.5: findings with "
                     "different operating points compare on one scale. Rows are sorted by it."),
            "call": st.column_config.TextColumn("call"),
        })
    note = hidden_note(card)
    if note:
        st.caption(note)


def target_caption(target: str, expl: Any) -> str:
    """What a multi-label map explains: ``"finding X: its logit, which sets P(X) = 0.62 (operating
    point 0.40, above)"``; the numbers come from the explanation (:func:`medcnn.explain.at_operating_point`)."""
    text = f"finding {target}: its logit, which sets P({target})"
    p, op = getattr(expl, "probability", None), getattr(expl, "operating_point", None)
    if p is not None:
        text += f" = {p:.2f}"
        if op is not None:
            text += f" (operating point {op:.2f}, {'above' if getattr(expl, 'called', False) else 'below'})"
    return text


def _finding_column(name: str) -> str:
    """``p_<finding>`` in snake_case (``"Lung Opacity"`` -> ``"p_lung_opacity"``)."""
    return "p_" + re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def batch_column_labels(card: Any) -> dict[str, str]:
    """Column -> heading of a multi-label card's per-finding batch columns (``p_nodule`` -> ``P(Nodule)``),
    for display only; ``{}`` for softmax."""
    return {_finding_column(name): f"P({name})" for name in card.shown_findings()} if card.head_rule.per_finding else {}


def batch_columns(card: Any, pred: Any = None) -> dict[str, Any]:
    """Batch-table columns of a multi-label card: ``p_<finding>`` (snake_case, headed ``P(<finding>)`` by
    :func:`batch_column_labels`) per presented finding (label order, so every row has the same columns) and
    :data:`FINDINGS_COLUMN` (names joined by ``"; "``, highest relative first). ``pred=None`` (not
    analysed, or an error) leaves them empty. ``{}`` for softmax."""
    if not card.head_rule.per_finding:
        return {}
    cols: dict[str, Any] = {_finding_column(name): None if pred is None else round(float(pred.probabilities[name]), 4)
                            for name in card.shown_findings()}
    above = [] if pred is None else [row["name"] for row in pred.findings if row["above"]]
    cols[FINDINGS_COLUMN] = "; ".join(above)
    return cols


def show_finding_metrics(card: Any, key: str) -> None:
    """The model card's per-finding metrics table (test set; validation when no test metrics are
    recorded): AUC with 95% CI, positives, sensitivity and specificity at the operating point, ECE,
    and whether the finding is presented, with the reason."""
    split, rows = finding_metric_rows(card)
    if split == "test":
        st.markdown("**Per finding**, on the held-out test set (sensitivity and specificity at each "
                    "finding's operating point)")
    elif split == "val":
        st.markdown("**Per finding**, on validation: no test metrics are recorded in this card yet, and "
                    "validation chose the operating points, so these figures are optimistic")
    else:
        st.info("No per-finding metrics recorded in this card.")
    st.dataframe(rows, hide_index=True, key=key,
                 column_config={"reason": st.column_config.TextColumn("reason", width="large")})
    st.caption("A finding marked shown = no stays in the model's output but is not presented on the Analyze "
               "page, in the batch table or in the report: the reason says why.")
