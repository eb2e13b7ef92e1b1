"""Metrics with bootstrap CIs, per-group metrics and calibration (pure numpy; no torch).

Every metric comes from :mod:`sklearn.metrics`; the one exception is the expected
calibration error (ECE), which scikit-learn does not provide (see :func:`expected_calibration_error`).

Calibration (temperature scaling, Guo et al. 2017, "On Calibration of Modern Neural
Networks") and the operating threshold (Youden's J, Youden 1950) are fitted **only on a
validation split**; test metrics are reported, never tuned on.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn import metrics as skm

__all__ = [
    "SCALAR_METRICS",
    "compute_metrics",
    "expected_calibration_error",
    "fit_temperature",
    "metrics_by_group",
    "softmax_t",
    "youden_threshold",
]

#: Scalar metrics reported by :func:`compute_metrics`, each with a bootstrap CI in ``ci``.
SCALAR_METRICS = (
    "auc", "pr_auc", "accuracy", "balanced_accuracy", "precision", "recall",
    "specificity", "f1", "kappa", "ece", "brier",
)

_ECE_BINS = 10


# ---------------------------------------------------------------------------------------
# Pure metrics
# ---------------------------------------------------------------------------------------
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
            "auc": skm.roc_auc_score(y, prob) if two_classes else None,
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


def _resample_indices(
    n: int, n_boot: int, rng: np.random.Generator, groups: np.ndarray | None
) -> list[np.ndarray]:
    """Bootstrap index sets: rows i.i.d., or whole groups (cluster bootstrap) when given."""
    if groups is None:
        return [rng.integers(0, n, n) for _ in range(n_boot)]
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), len(members))
        out.append(np.concatenate([members[g] for g in pick]))
    return out


def _bootstrap_ci(
    y: np.ndarray, prob: np.ndarray, threshold: float, n_boot: int, seed: int,
    groups: np.ndarray | None, alpha: float = 0.05,
) -> dict[str, list[float] | None]:
    """95% percentile bootstrap CI of every scalar metric (undefined resamples skipped)."""
    values: dict[str, list[float]] = {k: [] for k in SCALAR_METRICS}
    rng = np.random.default_rng(seed)
    for idx in _resample_indices(len(y), n_boot, rng, groups):
        for k, v in _scalar_metrics(y[idx], prob[idx], threshold).items():
            if v is not None:
                values[k].append(v)
    ci: dict[str, list[float] | None] = {}
    for k, vals in values.items():
        # fewer than half the resamples defined: the interval would be meaningless
        if n_boot == 0 or len(vals) < max(2, n_boot // 2):
            ci[k] = None
        else:
            lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
            ci[k] = [float(lo), float(hi)]
    return ci


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
        ``notes``), ``auc_ci`` [low, high], ``ci`` {metric: [low, high] | None},
        ``threshold``, ``labels``, ``confusion_matrix`` [[tn, fp], [fn, tp]] (rows = truth,
        columns = prediction, in ``labels`` order), ``per_class`` (precision / recall /
        f1-score / support per label, from ``classification_report``), ``n_boot``,
        ``bootstrap`` ("rows" or "groups"), ``n_groups`` and ``notes``.

    Raises:
        ValueError: empty input, mismatched lengths, labels not 0/1, probabilities
            outside [0, 1] or a threshold outside [0, 1].
    """
    y, p = _check_binary_inputs(y_true, prob, threshold)
    labels = [str(v) for v in labels]
    if len(labels) != 2:
        raise ValueError(f"labels must be (negative, positive), got {labels!r}")
    g = None if groups is None else np.asarray(groups).ravel()
    if g is not None and g.shape != y.shape:
        raise ValueError(f"groups must have one value per row ({y.size}), got {g.size}")

    out: dict[str, Any] = {"n": int(y.size), "n_pos": int(y.sum()), "n_neg": int((1 - y).sum())}
    out.update(_scalar_metrics(y, p, threshold))
    notes = []
    if out["n_pos"] == 0 or out["n_neg"] == 0:
        present = labels[1] if out["n_neg"] == 0 else labels[0]
        notes.append(
            f"only one class present ({present!r}): AUC, PR-AUC and kappa are undefined"
            + (", specificity too" if out["n_neg"] == 0 else ", recall (sensitivity) too")
        )
    ci = _bootstrap_ci(y, p, threshold, n_boot, seed, g) if n_boot > 0 else {k: None for k in SCALAR_METRICS}
    pred = (p >= threshold).astype(np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = skm.classification_report(
            y, pred, labels=[0, 1], target_names=labels, output_dict=True, zero_division=0
        )
    out.update(
        auc_ci=ci["auc"],
        ci=ci,
        threshold=float(threshold),
        labels=labels,
        confusion_matrix=skm.confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        per_class={
            name: {
                "precision": float(report[name]["precision"]),
                "recall": float(report[name]["recall"]),
                "f1": float(report[name]["f1-score"]),
                "support": int(report[name]["support"]),
            }
            for name in labels
        },
        n_boot=int(n_boot),
        bootstrap="groups" if g is not None else "rows",
        n_groups=int(len(np.unique(g))) if g is not None else int(y.size),
        notes=notes,
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


# ---------------------------------------------------------------------------------------
# Calibration (fit on validation only)
# ---------------------------------------------------------------------------------------
def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``; (N, C) -> (N, C) float64."""
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature ``T > 0`` minimising the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    Fit this on the **validation** split only, never on test. The search runs over
    ``log T`` (bounded), so ``T`` stays positive.

    Args:
        logits: (N, C) raw model outputs.
        y: (N,) class indices in [0, C).
        bounds: Search interval for ``T``.

    Returns:
        The fitted temperature.

    Raises:
        ValueError: shapes disagree, labels out of range, or empty input.
    """
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y).astype(np.int64).ravel()
    if z.ndim != 2 or z.shape[0] != t.shape[0] or z.shape[0] == 0:
        raise ValueError(f"logits must be (N, C) with N = len(y) > 0, got {z.shape} and {t.shape}")
    if t.min() < 0 or t.max() >= z.shape[1]:
        raise ValueError(f"y must hold class indices in [0, {z.shape[1]}), got {t.min()}..{t.max()}")

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / math.exp(log_t), axis=1)[np.arange(len(t)), t].mean())

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    if (z.argmax(axis=1) == t).all():
        # NLL falls monotonically as T -> 0 when every row is right: T is not identifiable
        warnings.warn(
            f"every validation row is classified correctly, so the temperature is not identifiable "
            f"(fitted {math.exp(res.x):.3g}); use a larger validation set",
            stacklevel=2,
        )
    elif min(res.x - lo, hi - res.x) < 0.02:  # within 2% of a bound
        warnings.warn(
            f"fitted temperature {math.exp(res.x):.3g} is at the search bound {bounds}; the "
            f"calibration is unreliable",
            stacklevel=2,
        )
    return float(math.exp(res.x))


def youden_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Operating threshold maximising Youden's J = TPR - FPR on the ROC curve.

    Fit this on the **validation** split (on calibrated probabilities), never on test.
    The returned value is a score taken from ``prob``, with the rule "positive iff
    ``prob >= threshold``" (the convention of :func:`sklearn.metrics.roc_curve`).

    Args:
        y_true: (N,) 0/1 labels, both classes present.
        prob: (N,) positive-class probabilities.

    Raises:
        ValueError: only one class in ``y_true``.
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    if len(np.unique(y)) < 2:
        raise ValueError("Youden's threshold needs both classes in the validation labels")
    fpr, tpr, thr = skm.roc_curve(y, np.asarray(prob, dtype=np.float64), drop_intermediate=False)
    finite = np.isfinite(thr)  # the first ROC point has threshold +inf (nothing positive)
    j = np.where(finite, tpr - fpr, -np.inf)
    return float(min(1.0, thr[int(np.argmax(j))]))
