"""Model-card page helpers: evaluation figures of a card as cached PNGs.

The confusion matrix comes from the counts stored in the card; ROC, precision-recall and
reliability curves need per-image scores: the card's own (``metrics[split]["scores"]``,
written by ``evaluate --calibrate --write-card``), else computed by :func:`score_split`
from the model's data split when it is on this machine. Every cache key holds the card files'
modification time (:func:`card_mtime`), so retraining invalidates the figures.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from medcnn.app.state import _mtime
from medcnn.models.card import ModelCard

__all__ = ["ood_summary", "card_figure_png", "card_mtime", "has_stored_scores", "score_split"]

_REPO = Path(__file__).resolve().parents[1]


def card_mtime(card: ModelCard) -> float:
    """Modification time of a card's files (cache key part: edits invalidate figures)."""
    return _mtime(str(card.path))


def has_stored_scores(card: ModelCard, split: str) -> bool:
    """Whether the card holds per-image scores for ``split`` (curves need no data)."""
    stored = (card.metrics.get(split) or {}).get("scores") or {}
    return bool(stored.get("y")) and len(stored.get("y", [])) == len(stored.get("prob", []))


@st.cache_data(show_spinner=False, max_entries=8)
def score_split(card_path: str, mtime: float, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(y, prob) of the card's model on one split: the scores stored in the card, else
    computed on its training data (labels.csv named in the card) when that is here.

    Raises:
        ValueError: no stored scores and the card names no labels file that exists here.
    """
    from medcnn.evaluation.evaluate import score_dataset

    card = ModelCard.load(card_path)
    if has_stored_scores(card, split):
        stored = card.metrics[split]["scores"]
        return np.asarray(stored["y"], dtype=np.int64), np.asarray(stored["prob"], dtype=np.float64)
    wanted = [str(p) for p in card.training.get("data", [])]
    data = [next((str(q) for q in (Path(p), _REPO / p) if q.exists()), None) for p in wanted]
    if not wanted or None in data:
        raise ValueError(f"the data of {card.name!r} ({card.training.get('data') or 'not recorded'}) "
                         "is not available on this machine")
    scores = score_dataset(card_path, data, split)
    return np.asarray(scores.y_pos), np.asarray(scores.prob())


@st.cache_data(show_spinner=False, max_entries=64)
def card_figure_png(kind: str, card_path: str, mtime: float, split: str) -> bytes:
    """PNG of one evaluation figure of a card: ``confusion`` (from the stored counts) or
    ``roc`` / ``pr`` / ``reliability`` (from :func:`score_split`)."""
    from medcnn.visualize import plots

    card = ModelCard.load(card_path)
    m = card.metrics.get(split, {})
    title = f"{card.name} ({split})"
    if kind == "confusion":
        labels = m.get("labels") or [f"not {card.positive_label}", card.positive_label]
        fig = plots.confusion_figure(m["confusion_matrix"], labels, f"{title}: threshold {card.threshold:.3f}")
    else:
        y, p = score_split(card_path, mtime, split)
        fig = {"roc": lambda: plots.roc_figure(y, p, card.threshold, f"{title}: ROC"),
               "pr": lambda: plots.pr_figure(y, p, card.threshold, f"{title}: precision-recall"),
               "reliability": lambda: plots.reliability_figure(y, p, title=f"{title}: reliability")}[kind]()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def ood_summary(card: ModelCard) -> tuple[str, list[dict[str, Any]]]:
    """A sentence on the card's out-of-distribution gate and its measured rates, one row per set."""
    ood = card.ood or {}
    if not ood.get("measured"):
        return ("This model has no image-based out-of-distribution gate: only the DICOM header checks "
                "run, so PNG/JPEG images of other anatomy would still get an answer."), []
    title = (f"Images are scored against the training images ({ood.get('method', 'Mahalanobis distance')}). "
             f"Above **{ood['caution_threshold']:.2f}** a result is shown with a caution; above "
             f"**{ood['refuse_threshold']:.2f}** the image is not analysed. Fitted on "
             f"{ood.get('fitted_on', {}).get('n', '?')} training images only; no image below was used to fit it.")
    rows = []
    for kind, label in (("in_distribution", "should be read"), ("outside", "should be flagged")):
        for name, r in ood["measured"].get(kind, {}).items():
            if r.get("n"):
                rows.append({"set": name, "expected": label, "n": r["n"],
                             "flagged %": round(100 * r["flagged"], 1), "not analysed %": round(100 * r["outside"], 1)})
    return title, rows

