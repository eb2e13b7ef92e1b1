"""Per-site recalibration: refit temperature and operating threshold on a site's labelled images.

Scores drift between hospitals and scanner versions while the ranking of cases often holds,
so a site can re-fit the two numbers a card applies after the network, the temperature
(Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML) and the Youden
threshold (Youden 1950, Cancer 3(1)), without retraining. The network weights are never
touched: :func:`medcnn.evaluation.site_card.write_recalibrated` copies the ``.pt`` byte for byte
and checks its SHA-256.

Everything here works on logits (pure numpy, no torch), so it can be tested on synthetic
scores; reading images and running the model is the caller's job (``python -m medcnn
recalibrate``, the app's Recalibrate page).

The operating point fitted on the site's images is measured on those same images, which is
optimistic. :func:`recalibrate` therefore also reports a cross-validated estimate: temperature
and threshold fitted on k-1 folds (whole patients per fold when groups are given) and applied
to the held-out fold.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

from medcnn.evaluation import compute_metrics, expected_calibration_error, fit_temperature, softmax_t, youden_threshold
from medcnn.models.card import ModelCard

__all__ = [
    "DEFAULT_MIN_PER_CLASS",
    "InsufficientSiteDataError",
    "RecalibrationError",
    "recalibrate",
    "summary_rows",
]

#: Fewest labelled images of each class accepted for a recalibration.
DEFAULT_MIN_PER_CLASS = 20
_HIGH_ECE = 0.1  # above this the probabilities are not trustworthy as probabilities


class RecalibrationError(ValueError):
    """Recalibration cannot proceed: bad inputs, or files that would overwrite the original."""


class InsufficientSiteDataError(RecalibrationError):
    """Too few labelled images of some class.

    Attributes:
        counts: label -> number of usable images.
        needed: the minimum per class.
    """

    def __init__(self, counts: dict[str, int], needed: int):
        self.counts, self.needed = dict(counts), int(needed)
        have = ", ".join(f"{k}: {v}" + (f" ({needed - v} more needed)" if v < needed else "")
                         for k, v in self.counts.items())
        super().__init__(
            f"too few labelled images to recalibrate: at least {needed} of each class are needed, "
            f"the site data has {have}. Add labelled images of the short class(es)."
        )


def _binary_names(card: ModelCard) -> list[str]:
    """(negative, positive) names of the positive-vs-rest problem the threshold decides."""
    if len(card.labels) == 2:
        return [card.labels[1 - card.positive_index], card.positive_label]
    return [f"not {card.positive_label}", card.positive_label]


def _check_inputs(card: ModelCard, logits: Any, y: Any, groups: Any,
                  min_per_class: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict[str, int]]:
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y).astype(np.int64).ravel()
    if z.ndim != 2 or z.shape[1] != len(card.labels):
        raise RecalibrationError(f"logits must be (N, {len(card.labels)}) for model {card.name!r} "
                                 f"(labels {', '.join(card.labels)}), got shape {z.shape}")
    if z.shape[0] != t.size:
        raise RecalibrationError(f"logits have {z.shape[0]} rows but y has {t.size}")
    if not np.isfinite(z).all():
        raise RecalibrationError("logits must be finite (got NaN or inf)")
    if t.size and (t.min() < 0 or t.max() >= len(card.labels)):
        raise RecalibrationError(f"y must hold label indices in [0, {len(card.labels)}), got {t.min()}..{t.max()}")
    if int(min_per_class) < 1:
        raise RecalibrationError(f"min_per_class must be >= 1, got {min_per_class}")
    g = None if groups is None else np.asarray(groups).astype(str).ravel()
    if g is not None and g.size != t.size:
        raise RecalibrationError(f"groups must have one value per row ({t.size}), got {g.size}")
    counts = {name: int((t == i).sum()) for i, name in enumerate(card.labels)}
    if min(counts.values()) < int(min_per_class):
        raise InsufficientSiteDataError(counts, int(min_per_class))
    return z, t, g, counts


def _operating_point(y_pos: np.ndarray, prob: np.ndarray, temperature: float, threshold: float,
                     names: list[str], groups: np.ndarray | None, n_boot: int, seed: int) -> tuple[dict, dict]:
    """(summary, full compute_metrics dict) at one temperature and threshold."""
    m = compute_metrics(y_pos, prob, threshold, labels=names, n_boot=n_boot, seed=seed, groups=groups)
    ci = m["ci"]
    summary = {
        "temperature": float(temperature), "threshold": float(threshold),
        "sensitivity": m["recall"], "sensitivity_ci": ci["recall"],
        "specificity": m["specificity"], "specificity_ci": ci["specificity"],
        "ece": m["ece"], "ece_ci": ci["ece"], "auc": m["auc"], "auc_ci": m["auc_ci"],
        "confusion_matrix": m["confusion_matrix"],
    }
    return summary, {**m, "temperature": float(temperature)}


def _fit(z: np.ndarray, t: np.ndarray, pos: int) -> tuple[float, float]:
    temperature = fit_temperature(z, t)
    return temperature, youden_threshold((t == pos).astype(np.int64), softmax_t(z, temperature)[:, pos])


def _cross_validate(z: np.ndarray, t: np.ndarray, pos: int, groups: np.ndarray | None, folds: int,
                    names: list[str], n_boot: int, seed: int) -> tuple[dict[str, Any] | None, str | None]:
    """Out-of-fold sensitivity / specificity / ECE of the refit (k-fold, whole groups per fold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    y_pos = (t == pos).astype(np.int64)
    k = min(int(folds), int(np.bincount(y_pos, minlength=2).min()))
    g = groups if groups is not None else np.arange(t.size).astype(str)
    if k < 2 or len(np.unique(g)) < k:
        return None, f"too few images or patients for a {folds}-fold cross-validated estimate"
    prob, pred = np.zeros(t.size), np.zeros(t.size)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # per-fold temperature warnings repeat the full fit's
        for train, test in splitter.split(z, y_pos, g):
            if len(np.unique(y_pos[train])) < 2:
                return None, "a cross-validation fold lacked a class (too few patients of one class)"
            temperature, threshold = _fit(z[train], t[train], pos)
            prob[test] = softmax_t(z[test], temperature)[:, pos]
            pred[test] = prob[test] >= threshold
    m = compute_metrics(y_pos, pred, 0.5, labels=names, n_boot=n_boot, seed=seed, groups=groups)
    return {"folds": k, "sensitivity": m["recall"], "sensitivity_ci": m["ci"]["recall"],
            "specificity": m["specificity"], "specificity_ci": m["ci"]["specificity"],
            "ece": expected_calibration_error(y_pos, prob), "ece_ci": None}, None


def recalibrate(
    card: ModelCard,
    logits: np.ndarray,
    y: np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    folds: int = 5,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Refit a card's temperature and Youden threshold on a site's labelled logits.

    Before = the card's temperature and threshold; after = both refitted on all rows
    (:func:`~medcnn.evaluation.fit_temperature`, then
    :func:`~medcnn.evaluation.youden_threshold` on the recalibrated probabilities, as for the
    shipped cards). Sensitivity and specificity refer to ``card.positive_label`` vs the rest.

    Args:
        card: The model card whose logits these are.
        logits: float (N, C) raw logits in ``card.labels`` order.
        y: int (N,) label index in ``card.labels`` of each row.
        groups: Optional (N,) patient id per row: bootstrap CIs resample whole patients and
            cross-validation folds keep a patient's images together.
        min_per_class: Fewest rows of each of ``card.labels`` accepted.
        n_boot: Bootstrap resamples of every CI (0: no CIs).
        seed: Seed of the bootstrap and of the fold assignment.
        folds: Folds of the cross-validated estimate.

    Returns:
        ``(fields, report)``. ``fields``: ``temperature``, ``threshold`` and ``metrics``
        (``site``: :func:`~medcnn.evaluation.compute_metrics` at the new operating point, with
        the per-image ``scores`` for the curves; ``site_before_recalibration``: at the card's).
        ``report``: JSON-ready ``model``, ``n_images``, ``counts`` per label,
        ``min_per_class``, ``labels`` (negative, positive), ``bootstrap`` ("rows" /
        "groups"), ``n_groups``, ``n_boot``, ``before`` / ``after`` (temperature, threshold,
        sensitivity, specificity, ECE, AUC with ``*_ci`` and the confusion matrix),
        ``cross_validated`` (folds, sensitivity, specificity, ECE; None when not estimable)
        and ``notes``.

    Raises:
        InsufficientSiteDataError: a label has fewer than ``min_per_class`` rows (the message
            lists every count and what is needed).
        RecalibrationError: logits, labels or groups of the wrong shape or values.
    """
    z, t, g, counts = _check_inputs(card, logits, y, groups, min_per_class)
    pos, names = card.positive_index, _binary_names(card)
    y_pos = (t == pos).astype(np.int64)
    with warnings.catch_warnings(record=True) as caught:  # reported in the notes
        warnings.simplefilter("always")
        temperature, threshold = _fit(z, t, pos)
    p_old = softmax_t(z, card.temperature)[:, pos]
    p_new = softmax_t(z, temperature)[:, pos]
    before, m_before = _operating_point(y_pos, p_old, card.temperature, card.threshold, names, g, n_boot, seed)
    after, m_after = _operating_point(y_pos, p_new, temperature, threshold, names, g, n_boot, seed)
    cv, why = _cross_validate(z, t, pos, g, folds, names, n_boot, seed)
    order = np.lexsort((y_pos, -p_new))  # sorted, so no row order of the site data is kept
    m_after["scores"] = {"y": [int(v) for v in y_pos[order]], "prob": [float(v) for v in p_new[order]]}
    notes = ["'after' is measured on the images it was fitted on (optimistic); 'cross-validated' "
             "fits on the other folds and measures on the held-out one"]
    notes += [str(w.message) for w in caught]
    if after["ece"] is not None and after["ece"] > _HIGH_ECE:
        notes.append(f"the calibration error stays high after recalibration ({after['ece']:.3f}): the site's "
                     "scores are shifted in a way one temperature cannot undo, so treat the probabilities "
                     "as scores; the refitted threshold still sets the operating point")
    if why:
        notes.append(f"no cross-validated estimate: {why}")
    m_after["notes"] = list(m_after.get("notes", [])) + [notes[0]]
    report = {
        "model": card.name, "n_images": int(t.size), "counts": counts, "min_per_class": int(min_per_class),
        "labels": names, "bootstrap": "groups" if g is not None else "rows",
        "n_groups": int(len(np.unique(g))) if g is not None else int(t.size), "n_boot": int(n_boot),
        "before": before, "after": after, "cross_validated": cv, "notes": notes,
    }
    fields = {"temperature": float(temperature), "threshold": float(threshold),
              "metrics": {"site": m_after, "site_before_recalibration": m_before}}
    return fields, report


def _fmt(value: float | None, ci: Sequence[float] | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def summary_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """Before / after table of a :func:`recalibrate` report: one row per quantity.

    Returns:
        Rows with ``quantity``, ``before``, ``after`` and ``after, cross-validated``
        (values as text, 95 % CIs in brackets).
    """
    b, a, cv = report["before"], report["after"], report.get("cross_validated") or {}
    cv_name = "after, cross-validated" + (f" ({cv['folds']}-fold)" if cv else "")
    rows = []
    for key, title in (("sensitivity", "sensitivity"), ("specificity", "specificity"),
                       ("ece", "ECE (calibration error)"), ("auc", "AUC (same weights)")):
        rows.append({"quantity": title, "before": _fmt(b[key], b.get(f"{key}_ci")),
                     "after": _fmt(a[key], a.get(f"{key}_ci")),
                     cv_name: _fmt(cv.get(key), cv.get(f"{key}_ci")) if cv else "n/a"})
    for key in ("temperature", "threshold"):
        rows.append({"quantity": key, "before": f"{b[key]:.4g}", "after": f"{a[key]:.4g}",
                     cv_name: "refitted per fold" if cv else "n/a"})
    return rows
