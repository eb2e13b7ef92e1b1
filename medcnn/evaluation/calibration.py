"""Calibration, fitted on a validation split only: temperature scaling and the operating threshold.

Temperature scaling: Guo et al. 2017, "On Calibration of Modern Neural Networks" (ICML);
the operating threshold maximises Youden's J (Youden 1950, "Index for rating diagnostic
tests", Cancer 3(1)). Test metrics are reported at these values, never tuned on.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn import metrics as skm

from medcnn.models.outputs import softmax_t  # re-exported: applied by serving and evaluation alike

__all__ = ["fit_temperature", "softmax_t", "youden_threshold"]


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
