"""Metrics with bootstrap CIs and per-group metrics (pure numpy; no torch): the only home of AUC.

:func:`roc_auc` is the one ROC AUC of the package (the Mann-Whitney U statistic, equal to
:func:`sklearn.metrics.roc_auc_score`); :func:`auc_ci` its cluster-bootstrap interval. The
other metrics come from :mod:`sklearn.metrics`, except the expected calibration error (ECE),
which scikit-learn does not provide (see :func:`expected_calibration_error`).

Every metric's 95 % interval comes from one set of (cluster) bootstrap resamples: the percentile
interval, except for the ECE, whose plug-in is biased upwards and gets the bias-correcting basic
interval (:data:`BIASED_METRICS`; why: :mod:`medcnn.evaluation.bootstrap`).

Calibration (:func:`fit_temperature`, :func:`youden_threshold`, :func:`softmax_t`) lives in
:mod:`medcnn.evaluation.calibration` and is re-exported here.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from sklearn import metrics as skm

from medcnn.evaluation.bootstrap import basic_ci, percentile_ci, resample_indices, statistic_ci
from medcnn.evaluation.calibration import fit_temperature, softmax_t, youden_threshold

__all__ = [
    "BIASED_METRICS",
    "SCALAR_METRICS",
    "auc_ci",
    "compute_metrics",
    "expected_calibration_error",
    "fit_temperature",
    "metrics_by_group",
    "roc_auc",
    "softmax_t",
    "youden_threshold",
]

#: Scalar metrics reported by :func:`compute_metrics`, each with a bootstrap CI in ``ci``.
SCALAR_METRICS = (
    "auc", "pr_auc", "accuracy", "balanced_accuracy", "precision", "recall",
    "specificity", "f1", "kappa", "ece", "brier",
)

#: Metrics whose plug-in estimate is biased, with their range: their CI is
#: :func:`medcnn.evaluation.bootstrap.basic_ci` (the others' :func:`~medcnn.evaluation.bootstrap.percentile_ci`).
BIASED_METRICS: dict[str, tuple[float, float]] = {"ece": (0.0, 1.0)}

_ECE_BINS = 10


# ---------------------------------------------------------------------------------------
# Pure metrics
# ---------------------------------------------------------------------------------------
def roc_auc(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float | None:
    """ROC AUC of ``score`` for the 0/1 labels ``y_true``; None when only one class is present.

    Computed as the Mann-Whitney U statistic, ``(R1 - n1 (n1 + 1) / 2) / (n1 n0)`` with
    ``R1`` the sum of the positives' ranks (ties get their average rank, so a tied
    positive-negative pair counts 1/2; Hanley & McNeil 1982, Radiology 143(1)). This equals
    :func:`sklearn.metrics.roc_auc_score` without its per-call validation, which matters in
    bootstraps that call it thousands of times.

    Args:
        y_true: (N,) labels, 1 = positive (anything truthy counts as positive).
        score: (N,) scores, larger = more likely positive; NaN is not allowed.
    """
    from scipy.stats import rankdata

    y = np.asarray(y_true).astype(bool).ravel()
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        return None
    ranks = rankdata(np.asarray(score, dtype=np.float64).ravel())
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_ci(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray, *,
           groups: Sequence[Any] | np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
           alpha: float = 0.05) -> list[float] | None:
    """Percentile bootstrap interval ``[low, high]`` of :func:`roc_auc`.

    Args:
        y_true: (N,) 0/1 labels.
        score: (N,) scores.
        groups: (N,) cluster id per row (patient): whole groups are resampled (cluster
            bootstrap, :func:`medcnn.evaluation.bootstrap.resample_indices`).
        n_boot: Resamples; one-class resamples are skipped.
        seed: Seed of the resampling.
        alpha: 1 - coverage (0.05: 95 %).

    Returns:
        The interval, or None when fewer than half the resamples have both classes.
    """
    y = np.asarray(y_true).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    return statistic_ci(lambda idx: roc_auc(y[idx], s[idx]), len(y), n_boot=n_boot, seed=seed,
                        groups=groups, alpha=alpha)


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = _ECE_BINS) -> float:
    """Expected calibration error of the positive-class probability.

    ``ECE = sum_b (n_b / N) * |mean(y in b) - mean(prob in b)|`` over ``n_bins``
    equal-width bins of ``prob`` on [0, 1] (bin ``b`` holds ``b/n <= p < (b+1)/n``; 1.0
    falls in the last bin); empty bins contribute nothing (Naeini et al. 2015). This is the
    calibration of the positive-class score, i.e. what the reliability diagram shows.

    Args:
        y_true: (N,) 0/1 labels (1 = positive).
        prob: (N,) probabilities of the positive class in [0, 1].
        n_bins: Number of equal-width bins.

    Returns:
        ECE in [0, 1].
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    idx = np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    return float(np.abs(sum_y - sum_p).sum() / max(len(y), 1))


def _scalar_metrics(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float | None]:
    """All scalar metrics for one sample (used for the point estimate and every resample)."""
    pred = (prob >= threshold).astype(np.int64)
    has_pos, has_neg = bool(y.any()), bool((y == 0).any())
    two_classes = has_pos and has_neg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ill-defined metrics on tiny resamples -> None / 0
        prec, rec, f1, _ = skm.precision_recall_fscore_support(
            y, pred, labels=[0, 1], zero_division=0
        )
        out: dict[str, float | None] = {
            "auc": roc_auc(y, prob),
            "pr_auc": skm.average_precision_score(y, prob) if two_classes else None,
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "precision": prec[1],
            "recall": rec[1] if has_pos else None,  # sensitivity
            "specificity": rec[0] if has_neg else None,
            "f1": f1[1],
            "kappa": skm.cohen_kappa_score(y, pred, labels=[0, 1]) if two_classes else None,
            "ece": expected_calibration_error(y, prob),
            "brier": skm.brier_score_loss(y, prob, labels=[0, 1]),
        }
    return {k: (None if v is None or not math.isfinite(float(v)) else float(v)) for k, v in out.items()}


def _bootstrap_ci(
    y: np.ndarray, prob: np.ndarray, threshold: float, n_boot: int, seed: int,
    groups: np.ndarray | None, estimates: dict[str, float | None], alpha: float = 0.05,
) -> dict[str, list[float] | None]:
    """Bootstrap CI of every scalar metric, from one set of resamples (undefined ones skipped):
    percentile, or basic around ``estimates`` for :data:`BIASED_METRICS`."""
    values: dict[str, list[float]] = {k: [] for k in SCALAR_METRICS}
    rng = np.random.default_rng(seed)
    for idx in resample_indices(len(y), n_boot, rng, groups):
        for k, v in _scalar_metrics(y[idx], prob[idx], threshold).items():
            if v is not None:
                values[k].append(v)
    return {k: (basic_ci(vals, estimates[k], n_boot, alpha, BIASED_METRICS[k]) if k in BIASED_METRICS
                else percentile_ci(vals, n_boot, alpha))
            for k, vals in values.items()}


def _check_binary_inputs(y_true: Any, prob: Any, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and prob must have the same length, got {y.shape[0]} and {p.shape[0]}")
    if y.size == 0:
        raise ValueError("cannot compute metrics on an empty set (0 rows)")
    if not np.isin(y, [0, 1]).all():
        raise ValueError(f"y_true must be 0/1 (1 = positive), got values {sorted(set(y.tolist()))[:10]}")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("prob must be finite probabilities of the positive class in [0, 1]")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    return y, p


def _check_labels_and_groups(labels: Sequence[str], groups: Any, n: int) -> tuple[list[str], np.ndarray | None]:
    names = [str(v) for v in labels]
    if len(names) != 2:
        raise ValueError(f"labels must be (negative, positive), got {names!r}")
    g = None if groups is None else np.asarray(groups).ravel()
    if g is not None and g.size != n:
        raise ValueError(f"groups must have one value per row ({n}), got {g.size}")
    return names, g


def _one_class_notes(n_pos: int, n_neg: int, labels: list[str]) -> list[str]:
    """Why some metrics are None: a subset with a single class."""
    if n_pos and n_neg:
        return []
    present = labels[1] if n_neg == 0 else labels[0]
    return [f"only one class present ({present!r}): AUC, PR-AUC and kappa are undefined"
            + (", specificity too" if n_neg == 0 else ", recall (sensitivity) too")]


def _per_class(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, dict[str, float | int]]:
    """Precision / recall / F1 / support of each label (``classification_report``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ill-defined-metric notes: zero_division=0 decides
        report = skm.classification_report(
            y, pred, labels=[0, 1], target_names=labels, output_dict=True, zero_division=0
        )
    return {
        name: {
            "precision": float(report[name]["precision"]),
            "recall": float(report[name]["recall"]),
            "f1": float(report[name]["f1-score"]),
            "support": int(report[name]["support"]),
        }
        for name in labels
    }


def compute_metrics(
    y_true: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    *,
    labels: Sequence[str] = ("neg", "pos"),
    n_boot: int = 1000,
    seed: int = 0,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, Any]:
    """Binary classification metrics with 95% bootstrap confidence intervals.

    A row is predicted positive iff ``prob >= threshold``. Threshold metrics (precision,
    recall = sensitivity, specificity, F1, kappa, ...) refer to the positive class.

    Args:
        y_true: (N,) 0/1 ground truth, 1 = positive (``labels[1]``).
        prob: (N,) probability of the positive class (calibrated, when the model has a
            temperature).
        threshold: Operating threshold on ``prob``.
        labels: (negative name, positive name), used in ``per_class`` and ``labels``.
        n_boot: Bootstrap resamples (0 disables CIs).
        seed: Seed of the resampling.
        groups: (N,) cluster id per row (patient / scan). When given, the bootstrap
            resamples whole groups (cluster bootstrap), since images of one patient are
            correlated and an i.i.d. bootstrap would give too narrow intervals.

    Returns:
        JSON-ready dict: ``n``, ``n_pos``, ``n_neg``, each of :data:`SCALAR_METRICS`
        (``None`` where undefined, e.g. AUC on a single-class subset, with an entry in
        ``notes``), ``auc_ci`` [low, high], ``ci`` {metric: [low, high] | None} (percentile
        intervals; the ECE's is the basic interval, which contains its estimate: see
        :data:`BIASED_METRICS`),
        ``threshold``, ``labels``, ``confusion_matrix`` [[tn, fp], [fn, tp]] (rows = truth,
        columns = prediction, in ``labels`` order), ``per_class`` (precision / recall /
        f1-score / support per label, from ``classification_report``), ``n_boot``,
        ``bootstrap`` ("rows" or "groups"), ``n_groups`` and ``notes``.

    Raises:
        ValueError: empty input, mismatched lengths, labels not 0/1, probabilities
            outside [0, 1] or a threshold outside [0, 1].
    """
    y, p = _check_binary_inputs(y_true, prob, threshold)
    labels, g = _check_labels_and_groups(labels, groups, y.size)
    out: dict[str, Any] = {"n": int(y.size), "n_pos": int(y.sum()), "n_neg": int((1 - y).sum())}
    point = _scalar_metrics(y, p, threshold)
    out.update(point)
    ci = _bootstrap_ci(y, p, threshold, n_boot, seed, g, point) if n_boot > 0 else {k: None for k in SCALAR_METRICS}
    pred = (p >= threshold).astype(np.int64)
    out.update(
        auc_ci=ci["auc"],
        ci=ci,
        threshold=float(threshold),
        labels=labels,
        confusion_matrix=skm.confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        per_class=_per_class(y, pred, labels),
        n_boot=int(n_boot),
        bootstrap="groups" if g is not None else "rows",
        n_groups=int(len(np.unique(g))) if g is not None else int(y.size),
        notes=_one_class_notes(out["n_pos"], out["n_neg"], labels),
    )
    return out


def metrics_by_group(
    y_true: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    group_values: Sequence[Any] | np.ndarray,
    threshold: float = 0.5,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """:func:`compute_metrics` on each subset sharing a value of ``group_values``.

    Args:
        y_true: (N,) 0/1 labels.
        prob: (N,) positive-class probabilities.
        group_values: (N,) subgroup of each row (e.g. the ``view_position`` column);
            missing values (None / NaN) form the group ``"missing"``.
        threshold: Operating threshold (the same for every group).
        **kwargs: Passed to :func:`compute_metrics` (``labels``, ``n_boot``, ``seed``,
            ``groups`` as an (N,) array, subset per group).

    Returns:
        ``{str(value): metrics}`` in sorted order; each metrics dict has its count ``n``.
    """
    y = np.asarray(y_true)
    p = np.asarray(prob)
    keys = np.array([_group_key(v) for v in group_values], dtype=object)
    if keys.shape != y.shape:
        raise ValueError(f"group_values must have one value per row ({y.size}), got {keys.size}")
    clusters = kwargs.pop("groups", None)
    clusters = None if clusters is None else np.asarray(clusters)
    out = {}
    for key in sorted(set(keys.tolist())):
        mask = keys == key
        out[key] = compute_metrics(
            y[mask], p[mask], threshold,
            groups=None if clusters is None else clusters[mask], **kwargs,
        )
    return out


def _group_key(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    return str(v)
