"""Held-out evidence for a site recalibration, and the rule that decides what is refitted.

Grouped k-fold cross-validation (whole patients per fold, folds stratified by label): on each
fold's training part the temperature (binary NLL, Guo et al. 2017) and Youden's operating point
are fitted; on its held-out part the label's probability and call are recorded for the shipped
point and for the refitted one. Every image is then held out exactly once, so the two arms can be
compared image by image, and the paired cluster bootstrap (Field & Welsh 2007; whole patients
resampled) gives a 95 % CI for each quantity and for each change.

The rule (:data:`RULE`), one decision per component:

* **precondition**: the shipped scores still rank the site's labels: the lower end of the AUC's
  95 % CI reaches :data:`~medcnn.evaluation.findings.MIN_AUC_LOWER` (0.6), the bar a finding must
  clear to be presented at all. Both components only move the probability scale and the cut along
  that ranking; on labels the scores barely rank (wrong labels, a finding the model does not see
  at this site) a refit fits noise (a temperature flattening every probability towards the base
  rate "wins" on NLL there), so both are kept.
* **temperature**: refitted iff held-out NLL falls (upper end of the CI of the change below 0)
  and held-out ECE does not rise.
* **operating point**: refitted iff held-out balanced accuracy rises (lower end of the CI of the
  change above 0: stricter than a tolerance of 0.02, since a fall cannot be ruled in at all) and
  held-out sensitivity stays at or above the lower end of the shipped point's sensitivity CI.

Otherwise the shipped value is kept. The ECE is biased upwards on bootstrap resamples (a resample
repeats images, so bins look noisier), so its percentile interval is shifted by that bias to stay
around the estimate.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from medcnn.notices import collected
from medcnn.evaluation.bootstrap import percentile_ci, resample_indices
from medcnn.evaluation.findings import MIN_AUC_LOWER
from medcnn.evaluation.metrics import auc_ci, expected_calibration_error, roc_auc
from medcnn.evaluation.site_task import SiteTask

__all__ = ["RULE", "STATS", "after_arms", "cross_validate", "decide"]

#: The decision rule, as the report states it.
RULE = {
    "precondition": f"the shipped scores rank the site's labels: lower end of the AUC's 95% CI at least "
                    f"{MIN_AUC_LOWER}",
    "temperature": "refit iff the held-out NLL falls (95% CI of the change below 0) and the held-out ECE "
                   "does not rise",
    "operating_point": "refit iff the held-out balanced accuracy rises (95% CI of the change above 0, so "
                       "it cannot have fallen, let alone by 0.02) and the held-out sensitivity stays at or "
                       "above the lower end of the shipped sensitivity's 95% CI",
}
#: Held-out quantities, each computed for the shipped ("before") and refitted ("after") arm.
STATS = ("sensitivity", "specificity", "balanced_accuracy", "flagged", "ece", "nll")
_BIASED = ("ece",)  # bias-shifted percentile intervals


def _stats(y: np.ndarray, prob: np.ndarray, call: np.ndarray, nll: np.ndarray) -> dict[str, float | None]:
    pos, neg = y == 1, y == 0
    sens = float(call[pos].mean()) if pos.any() else None
    spec = float((~call[neg]).mean()) if neg.any() else None
    return {"sensitivity": sens, "specificity": spec,
            "balanced_accuracy": None if sens is None or spec is None else (sens + spec) / 2,
            "flagged": float(call.mean()), "ece": expected_calibration_error(y, prob), "nll": float(nll.mean())}


def _interval(values: list[float], estimate: float | None, n_boot: int, biased: bool,
              floor: float | None) -> list[float] | None:
    """Percentile interval; for a biased statistic shifted by the bootstrap bias (kept >= ``floor``)."""
    ci = percentile_ci(values, n_boot)
    if ci is None or estimate is None or not biased:
        return ci
    shift = float(np.mean(values)) - estimate
    low = ci[0] - shift if floor is None else max(floor, ci[0] - shift)
    return [low, ci[1] - shift]


def _fold_arms(task: SiteTask, z: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int,
               seed: int) -> tuple[dict[str, np.ndarray] | None, int, str | None]:
    """Out-of-fold probabilities and calls of the shipped and refitted points."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = min(int(folds), int(np.bincount(y, minlength=2).min()))
    if k < 2 or len(np.unique(groups)) < k:
        return None, k, f"too few images or patients of a class for a {folds}-fold cross-validation"
    shipped = task.shipped
    p_old = task.probability(z, shipped.temperature)
    arms = {"p_old": p_old, "call_old": task.called(p_old, shipped), "p_new": np.zeros(y.size),
            "call_new": np.zeros(y.size, dtype=bool)}
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in splitter.split(z, y, groups):
        if len(np.unique(y[train])) < 2:
            return None, k, "a cross-validation fold lacked a class (too few patients of one class)"
        point = task.fit(z[train], y[train], temperature=True, threshold=True)
        arms["p_new"][test] = task.probability(z[test], point.temperature)
        arms["call_new"][test] = task.called(arms["p_new"][test], point)
    return arms, k, None


def cross_validate(task: SiteTask, z: np.ndarray, y: np.ndarray, groups: np.ndarray | None, *,
                   folds: int = 5, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Held-out evidence of both components (module docstring).

    Args:
        task: The card and label.
        z: float (N, C) logits.
        y: int (N,) 0/1, 1 = positive for ``task.finding``.
        groups: (N,) patient ids, or None (each image its own group).
        folds: Folds (fewer when a class has fewer images).
        n_boot: Paired bootstrap resamples.
        seed: Seed of the folds and the bootstrap.

    Returns:
        ``folds``, ``reason`` (why there is no evidence, else None), ``ranking`` (AUC of the
        shipped scores with its CI), ``arms`` (out-of-fold arrays ``p_old``, ``p_new``,
        ``call_old``, ``call_new``; None without evidence) and ``stats``: for each of
        :data:`STATS`, ``old`` / ``new`` ({value, ci}) and ``change`` ({value, ci}, new - old).
    """
    g = np.arange(y.size).astype(str) if groups is None else np.asarray(groups).astype(str)
    p_ship = task.probability(z, task.shipped.temperature)
    ranking = {"auc": roc_auc(y, p_ship), "auc_ci": auc_ci(y, p_ship, n_boot=n_boot, seed=seed, groups=g)
               if n_boot else None}
    with collected():  # per-fold fit notes: the held-out evidence below is what is reported
        arms, k, reason = _fold_arms(task, z, y, g, folds, seed)
    out: dict[str, Any] = {"folds": k, "reason": reason, "ranking": ranking, "arms": arms, "stats": None}
    if arms is None:
        return out
    nll_old, nll_new = task.nll(y, arms["p_old"]), task.nll(y, arms["p_new"])
    old = _stats(y, arms["p_old"], arms["call_old"], nll_old)
    new = _stats(y, arms["p_new"], arms["call_new"], nll_new)
    boots: dict[str, dict[str, list[float]]] = {arm: {s: [] for s in STATS} for arm in ("old", "new", "change")}
    for idx in resample_indices(y.size, n_boot, np.random.default_rng(seed), g):
        b_old = _stats(y[idx], arms["p_old"][idx], arms["call_old"][idx], nll_old[idx])
        b_new = _stats(y[idx], arms["p_new"][idx], arms["call_new"][idx], nll_new[idx])
        for s in STATS:
            if b_old[s] is not None and b_new[s] is not None:
                boots["old"][s].append(b_old[s])
                boots["new"][s].append(b_new[s])
                boots["change"][s].append(b_new[s] - b_old[s])
    stats = {}
    for s in STATS:
        change = None if old[s] is None or new[s] is None else new[s] - old[s]
        stats[s] = {arm: {"value": value, "ci": _interval(boots[arm][s], value, n_boot, s in _BIASED,
                                                          None if arm == "change" else 0.0)}
                    for arm, value in (("old", old[s]), ("new", new[s]), ("change", change))}
    out["stats"] = stats
    return out


def _lo(entry: dict[str, Any]) -> float | None:
    return None if entry["ci"] is None else entry["ci"][0]


def _hi(entry: dict[str, Any]) -> float | None:
    return None if entry["ci"] is None else entry["ci"][1]


def decide(evidence: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Refit or keep, per component, with the reason in words (:data:`RULE`).

    Returns:
        ``{"temperature": {"refit": bool, "reason": str}, "operating_point": {...}}``.
    """
    keep_both = None
    auc_lo = (evidence["ranking"]["auc_ci"] or [None])[0]
    if evidence["stats"] is None:
        keep_both = f"no held-out evidence ({evidence['reason']})"
    elif auc_lo is None:
        keep_both = "no confidence intervals (bootstrap off), so no improvement can be shown"
    elif auc_lo < MIN_AUC_LOWER:
        keep_both = (f"the shipped scores do not rank the site's labels well enough (AUC "
                     f"{evidence['ranking']['auc']:.3f}, 95% CI from {auc_lo:.3f}, below {MIN_AUC_LOWER}): a refit "
                     "would fit noise; check the labels, or the model does not detect this at the site")
    if keep_both:
        return {c: {"refit": False, "reason": keep_both} for c in ("temperature", "operating_point")}
    s = evidence["stats"]
    d_nll, d_ece = s["nll"]["change"], s["ece"]["change"]
    nll_hi = _hi(d_nll)
    if nll_hi is not None and nll_hi < 0 and d_ece["value"] <= 0:
        temp = {"refit": True, "reason": f"held-out NLL falls by {-d_nll['value']:.3f} (95% CI of the change "
                                         f"{d_nll['ci'][0]:+.3f} to {nll_hi:+.3f}) and ECE by {-d_ece['value']:.3f}"}
    else:
        why = (f"held-out ECE would rise by {d_ece['value']:.3f}" if nll_hi is not None and nll_hi < 0
               else "the held-out NLL is not shown to fall (95% CI of the change "
                    + ("n/a" if d_nll["ci"] is None else f"{d_nll['ci'][0]:+.3f} to {nll_hi:+.3f}") + ")")
        temp = {"refit": False, "reason": why}
    d_ba, sens = s["balanced_accuracy"]["change"], s["sensitivity"]
    ba_lo, sens_floor = _lo(d_ba), _lo(sens["old"])
    if ba_lo is None or ba_lo <= 0:
        op = {"refit": False, "reason": "the held-out balanced accuracy is not shown to rise (change "
              f"{d_ba['value']:+.3f}, 95% CI " + ("n/a" if ba_lo is None else f"{ba_lo:+.3f} to {_hi(d_ba):+.3f}") + ")"}
    elif sens_floor is not None and sens["new"]["value"] < sens_floor:
        op = {"refit": False, "reason": f"the held-out sensitivity would fall to {sens['new']['value']:.3f}, below "
                                        f"the shipped sensitivity's 95% CI (from {sens_floor:.3f})"}
    else:
        op = {"refit": True, "reason": f"held-out balanced accuracy rises by {d_ba['value']:.3f} (95% CI "
                                       f"{ba_lo:+.3f} to {_hi(d_ba):+.3f}); sensitivity {sens['new']['value']:.3f} "
                                       f"stays within the shipped CI"}
    return {"temperature": temp, "operating_point": op}


def after_arms(evidence: dict[str, Any], decision: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Which held-out arm ("old" / "new") describes the written card, per statistic."""
    prob_arm = "new" if decision["temperature"]["refit"] else "old"
    call_arm = "new" if decision["operating_point"]["refit"] else "old"
    return {s: (prob_arm if s in ("ece", "nll") else call_arm) for s in STATS}

