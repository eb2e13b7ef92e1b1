"""The operating-point policy of a finding: one purpose, chosen on validation, presented only when trustworthy.

A finding's operating point exists for a stated purpose. Ours is **specificity >= 0.85 on
validation** (:data:`MIN_SPECIFICITY`): a film is called only when the model clears at least 85 %
of validation films without the finding. Youden's J, used before, weighs a missed finding and a
false call equally and, on small enriched validation sets, landed at specificities of 0.33-0.76:
most films then called several findings and a reader learns to ignore the calls.

:func:`choose_operating_point` takes the **lowest** threshold (a validation score, rule "called iff
``prob >= threshold``", as :func:`sklearn.metrics.roc_curve`) whose validation specificity reaches
the target, so sensitivity is as high as the purpose allows. At that fixed point it reports
sensitivity, specificity and PPV / NPV at a stated prevalence, each with a 95 % percentile
bootstrap interval that resamples patients when the scores carry a group id, else images
(:mod:`medcnn.evaluation.bootstrap`).

A finding whose point cannot be estimated with a useful interval is **not presented**
(``shown: False`` with the reason in plain words), rather than marked "low confidence": a
low-confidence call is still a call on the screen, and the decision rule
(:class:`medcnn.models.head.Head`) has one notion of a presented finding that every consumer
(app, batch, reports) already honours. The rule (:func:`presentable`):

* at least :data:`MIN_POSITIVES` validation positives (below that one patient moves sensitivity by
  more than 10 points and the percentile bootstrap of a proportion is unreliable);
* the sensitivity interval's lower bound above 0 (otherwise the point may call no true finding);
* the specificity interval's lower bound at least :data:`MIN_SPECIFICITY_LOWER` (otherwise the
  purpose is not met with any confidence).

PPV and NPV follow Bayes' rule from sensitivity, specificity and prevalence
(Altman & Bland 1994, BMJ 309:102): ``PPV = se p / (se p + (1 - sp)(1 - p))``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from medcnn.evaluation.bootstrap import percentile_ci, resample_indices

__all__ = ["MIN_POSITIVES", "MIN_SPECIFICITY", "MIN_SPECIFICITY_LOWER", "PURPOSE", "OperatingPoint",
           "choose_operating_point", "choose_threshold", "point_metrics", "predictive_values", "presentable"]

#: The purpose of every finding's operating point: the lowest threshold reaching this validation specificity.
MIN_SPECIFICITY = 0.85
#: The purpose in words (for the card and the page).
PURPOSE = f"specificity >= {MIN_SPECIFICITY:.2f} on validation"
#: Fewest validation positives for which an operating point is estimated well enough to present.
MIN_POSITIVES = 10
#: Lowest acceptable lower bound of the validation specificity's 95 % CI.
MIN_SPECIFICITY_LOWER = 0.75


def choose_threshold(y: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray,
                     min_specificity: float = MIN_SPECIFICITY) -> float:
    """The lowest threshold (one of ``prob``) whose specificity on ``(y, prob)`` is >= ``min_specificity``.

    With ``k = ceil(min_specificity * n_neg)`` negatives required strictly below the threshold, the
    answer is the smallest score above the k-th lowest negative score. When no score lies above it
    (the highest score is a negative that must be cleared), the next float above it is returned:
    nothing on validation is called.

    Args:
        y: (N,) 0/1 labels with at least one negative.
        prob: (N,) scores (calibrated probabilities).
        min_specificity: Target specificity in (0, 1].

    Raises:
        ValueError: no negatives, shapes differ, or a target outside (0, 1].
    """
    y, p = np.asarray(y).astype(np.int64).ravel(), np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in length")
    if not 0 < min_specificity <= 1:
        raise ValueError(f"the target specificity must be in (0, 1], got {min_specificity}")
    neg = np.sort(p[y == 0])
    if neg.size == 0:
        raise ValueError("an operating point for a specificity needs validation negatives; there are none")
    k = max(1, int(np.ceil(min_specificity * neg.size - 1e-9)))
    cleared = neg[k - 1]
    above = p[p > cleared]
    return float(above.min()) if above.size else float(np.nextafter(cleared, np.inf))


def predictive_values(sensitivity: float, specificity: float, prevalence: float) -> tuple[float | None, float | None]:
    """``(PPV, NPV)`` at ``prevalence`` by Bayes' rule; None where a denominator is 0."""
    p = float(prevalence)
    tp, fp = sensitivity * p, (1 - specificity) * (1 - p)
    tn, fn = specificity * (1 - p), (1 - sensitivity) * p
    return (tp / (tp + fp) if tp + fp > 0 else None), (tn / (tn + fn) if tn + fn > 0 else None)


def _rates(y: np.ndarray, called: np.ndarray) -> tuple[float | None, float | None]:
    pos, neg = y == 1, y == 0
    se = float(called[pos].mean()) if pos.any() else None
    sp = float((~called[neg]).mean()) if neg.any() else None
    return se, sp


def point_metrics(y: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray, threshold: float, *,
                  prevalences: dict[str, float] | None = None, groups: Sequence[Any] | np.ndarray | None = None,
                  n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Sensitivity, specificity and PPV / NPV at fixed ``threshold``, each with a bootstrap CI.

    Args:
        y: (N,) 0/1 labels.
        prob: (N,) scores; a film is called iff ``prob >= threshold``.
        threshold: The operating point (fixed across resamples).
        prevalences: ``{name: prevalence}`` at which to report PPV / NPV (e.g. ``"validation"``);
            default: the prevalence of ``y`` as ``"sample"``.
        groups: (N,) patient ids: resample patients (cluster bootstrap); None: resample images.
        n_boot: Resamples (0: no intervals).
        seed: Seed of ``numpy.random.default_rng``.
        alpha: 1 - coverage.

    Returns:
        ``{"threshold", "n_pos", "n_neg", "sensitivity", "sensitivity_ci", "specificity",
        "specificity_ci", "predictive": {name: {"prevalence", "ppv", "ppv_ci", "npv", "npv_ci"}},
        "bootstrap": "patients" | "images", "n_boot"}``. A CI is None when fewer than half of the
        resamples define it (see :func:`medcnn.evaluation.bootstrap.percentile_ci`).
    """
    y, p = np.asarray(y).astype(np.int64).ravel(), np.asarray(prob, dtype=np.float64).ravel()
    called = p >= threshold
    if prevalences is None:
        prevalences = {"sample": float(y.mean()) if y.size else 0.0}
    se, sp = _rates(y, called)
    boot: dict[str, list[float]] = {"se": [], "sp": []}
    rng = np.random.default_rng(seed)
    for idx in resample_indices(len(y), n_boot, rng, groups):
        b_se, b_sp = _rates(y[idx], called[idx])
        if b_se is not None:
            boot["se"].append(b_se)
        if b_sp is not None:
            boot["sp"].append(b_sp)
        if b_se is not None and b_sp is not None:
            for name, prev in prevalences.items():
                for key, value in zip(("ppv", "npv"), predictive_values(b_se, b_sp, prev)):
                    if value is not None:
                        boot.setdefault(f"{key}:{name}", []).append(value)
    predictive = {}
    for name, prev in prevalences.items():
        ppv, npv = predictive_values(se, sp, prev) if se is not None and sp is not None else (None, None)
        predictive[name] = {"prevalence": float(prev), "ppv": ppv,
                            "ppv_ci": percentile_ci(boot.get(f"ppv:{name}", []), n_boot, alpha),
                            "npv": npv, "npv_ci": percentile_ci(boot.get(f"npv:{name}", []), n_boot, alpha)}
    return {"threshold": float(threshold), "n_pos": int((y == 1).sum()), "n_neg": int((y == 0).sum()),
            "sensitivity": se, "sensitivity_ci": percentile_ci(boot["se"], n_boot, alpha),
            "specificity": sp, "specificity_ci": percentile_ci(boot["sp"], n_boot, alpha),
            "predictive": predictive, "bootstrap": "images" if groups is None else "patients", "n_boot": int(n_boot)}


def presentable(m: dict[str, Any]) -> tuple[bool, str]:
    """Whether a finding's validation operating point (:func:`point_metrics`) is trustworthy enough to present.

    Returns:
        ``(shown, reason)``: the reason says, in plain words, what was measured and, when not
        shown, which condition failed (module docstring).
    """
    se, se_ci, sp, sp_ci = m.get("sensitivity"), m.get("sensitivity_ci"), m.get("specificity"), m.get("specificity_ci")
    if m.get("n_pos", 0) < MIN_POSITIVES:
        return False, (f"only {m.get('n_pos', 0)} validation images with the finding (at least {MIN_POSITIVES} "
                       f"are needed to set an operating point with a useful confidence interval)")
    if se is None or sp is None or not se_ci or not sp_ci:
        return False, "the sensitivity or specificity at the operating point could not be estimated on validation"
    where = (f"at {PURPOSE}: validation sensitivity {se:.2f} (95% CI {se_ci[0]:.2f}-{se_ci[1]:.2f}), "
             f"specificity {sp:.2f} (95% CI {sp_ci[0]:.2f}-{sp_ci[1]:.2f})")
    if se_ci[0] <= 0:
        return False, f"{where}: the sensitivity could be 0, so a call may never be a true finding"
    if sp_ci[0] < MIN_SPECIFICITY_LOWER:
        return False, (f"{where}: the specificity could be below {MIN_SPECIFICITY_LOWER:.2f}, so the operating point "
                       f"cannot be shown to meet its purpose")
    return True, where


@dataclass(frozen=True)
class OperatingPoint:
    """A finding's operating point chosen by the policy, with its validation metrics and verdict.

    Attributes:
        threshold: Called iff the calibrated probability is at or above it.
        rule: The purpose in words (:data:`PURPOSE`).
        val: :func:`point_metrics` on validation.
        shown: Whether the point is trustworthy enough to present (:func:`presentable`).
        reason: Why, in plain words.
    """

    threshold: float
    rule: str
    val: dict[str, Any]
    shown: bool
    reason: str


def choose_operating_point(y: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray, *,
                           groups: Sequence[Any] | np.ndarray | None = None,
                           prevalences: dict[str, float] | None = None, n_boot: int = 1000,
                           seed: int = 0) -> OperatingPoint:
    """The policy on one finding's **validation** scores: threshold, its metrics with CIs, and whether to present it.

    Args:
        y: (N,) 0/1 validation labels (unknown labels already left out).
        prob: (N,) calibrated validation probabilities.
        groups: (N,) patient ids for the cluster bootstrap (None: images).
        prevalences: Extra ``{name: prevalence}`` for PPV / NPV; the validation prevalence is always
            reported as ``"validation"``.
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.

    Raises:
        ValueError: no validation negatives (see :func:`choose_threshold`).
    """
    y = np.asarray(y).astype(np.int64).ravel()
    thr = choose_threshold(y, prob)
    prev = {"validation": float(y.mean()) if y.size else 0.0, **(prevalences or {})}
    m = point_metrics(y, prob, thr, prevalences=prev, groups=groups, n_boot=n_boot, seed=seed)
    shown, reason = presentable(m)
    return OperatingPoint(thr, PURPOSE, m, shown, reason)
