"""Metrics of a multi-label (findings) model: one binary problem per finding, unknown labels left out.

Each finding is scored only on the images whose label for it is known, with the finding's own
calibrated probability and operating point; the bootstrap resamples patients. Findings whose
test AUC cannot be told apart from weak discrimination (CI lower bound below
:data:`MIN_AUC_LOWER`) are kept in the output but not presented as findings.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from medcnn.evaluation.metrics import compute_metrics

__all__ = ["MIN_AUC_LOWER", "finding_metrics", "finding_visibility", "summarize_findings"]

#: A finding is presented only when the lower end of its test AUC's 95% CI reaches this.
MIN_AUC_LOWER = 0.6


def finding_metrics(prob: np.ndarray, targets: np.ndarray, names: Sequence[str], thresholds: Sequence[float], *,
                    groups: np.ndarray | None = None, by: dict[str, np.ndarray] | None = None,
                    n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per finding: :func:`compute_metrics` on its known rows (AUC, ECE, sensitivity/specificity at its
    operating point, 95% patient-bootstrap CIs), plus ``by_<column>`` subgroup metrics.

    Args:
        prob: (N, C) calibrated probabilities.
        targets: (N, C) 1 / 0 / NaN (unknown).
        names: The C finding names.
        thresholds: The C operating points.
        groups: (N,) patient ids for the cluster bootstrap.
        by: ``{column: (N,) values}`` for subgroup metrics (e.g. view position, source).
    """
    prob = np.asarray(prob, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if prob.shape != targets.shape or prob.shape[1] != len(names) or len(thresholds) != len(names):
        raise ValueError(f"probabilities {prob.shape}, targets {targets.shape}, {len(names)} names and "
                         f"{len(thresholds)} thresholds do not match")
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        ok = ~np.isnan(targets[:, j])
        y, p = targets[ok, j].astype(int), prob[ok, j]
        g = None if groups is None else np.asarray(groups)[ok]
        kw = dict(labels=(f"no {name}", name), n_boot=n_boot, seed=seed)
        m = compute_metrics(y, p, float(thresholds[j]), groups=g, **kw)
        m["threshold"] = float(thresholds[j])
        for col, values in (by or {}).items():
            vals = np.asarray(values).astype(str)[ok]
            m[f"by_{col}"] = {v: compute_metrics(y[vals == v], p[vals == v], float(thresholds[j]),
                                                 groups=None if g is None else g[vals == v], **kw)
                              for v in sorted(set(vals))}
        out[name] = m
    return out


def finding_visibility(test_metrics: dict[str, dict[str, Any]], min_lower: float = MIN_AUC_LOWER,
                       shortcut: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{finding: {"shown": bool, "reason": str}}`` from test metrics (CI lower bound of the AUC).

    With ``shortcut`` (the per-finding shortcut audit, ``audit.shortcut_findings["findings"]``), a
    finding whose labels non-anatomical features alone predict at least as well as the model does
    (a confounded finding with a feature AUC >= the model's test AUC) is not shown either: the model
    cannot be shown to read the finding rather than how the film was taken.
    """
    out = {}
    for name, m in test_metrics.items():
        s = (shortcut or {}).get(name) or {}
        feat = (s.get("best") or {}).get("auc")
        if s.get("confounded") and feat is not None and m.get("auc") is not None and feat >= m["auc"]:
            out[name] = {"shown": False,
                         "reason": (f"test AUC {m['auc']:.2f}, but non-anatomical features alone (view, file, "
                                    f"border and intensity statistics) predict its labels with AUC {feat:.2f}: "
                                    f"the model cannot be shown to read the finding itself")}
            continue
        ci = m.get("auc_ci") or (m.get("ci") or {}).get("auc")
        auc = m.get("auc")
        if auc is None or not ci:
            out[name] = {"shown": False, "reason": f"test AUC could not be measured ({m.get('n_pos', 0)} positives)"}
        elif ci[0] < min_lower:
            out[name] = {"shown": False,
                         "reason": (f"test AUC {auc:.2f} (95% CI {ci[0]:.2f}-{ci[1]:.2f}, {m.get('n_pos')} positives): "
                                    f"the lower bound is below {min_lower}, so the model cannot be shown to "
                                    f"detect it")}
        else:
            out[name] = {"shown": True, "reason": f"test AUC {auc:.2f} (95% CI {ci[0]:.2f}-{ci[1]:.2f})"}
    return out


def summarize_findings(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean AUC over findings and a compact per-finding table (for the card and the CLI)."""
    rows = {}
    for name, m in metrics.items():
        ci = m.get("auc_ci") or (m.get("ci") or {}).get("auc")
        rows[name] = {"auc": m.get("auc"), "auc_ci": ci, "n_pos": m.get("n_pos"), "n_neg": m.get("n_neg"),
                      "sensitivity": m.get("recall"), "specificity": m.get("specificity"), "ece": m.get("ece"),
                      "threshold": m.get("threshold")}
    aucs = [r["auc"] for r in rows.values() if r["auc"] is not None]
    return {"mean_auc": float(np.mean(aucs)) if aucs else None, "findings": rows}
