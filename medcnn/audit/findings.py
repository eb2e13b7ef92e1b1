"""Shortcut audit of a multi-label model's data: can each finding be predicted without anatomy?

The dataset audit (:mod:`medcnn.audit.dataset`) asks it for one label; here the question is asked
once per finding of a multi-label card, on the rows its training run used (the card records the
label columns, exclusions and duplicate keys), with each finding's unknown labels left out. The
non-anatomical features of every image are extracted once and shared by all findings. A finding
whose labels a logistic regression on file, size, border, text and acquisition features predicts
with a CI lower bound above :data:`~medcnn.audit.dataset.CONFOUND_CI_LOW` is flagged: the model's
AUC for it may owe something to how the films were made, not to the finding.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medcnn.audit.dataset import CONFOUND_CI_LOW, _best, _ci_low, _cross_validate, _feature_ranking, _feature_sets
from medcnn.audit.features import extract_features
from medcnn.evaluation.finding_labels import finding_targets, prepare_rows, specs_from_card
from medcnn.evaluation.labels import STANDARD_SPLITS, read_labels

__all__ = ["audit_findings", "format_findings_audit"]


def audit_findings(card_path: str | Path, data: Sequence[str | Path], *, split: str | None = None, folds: int = 5,
                   seed: int = 0, n_boot: int = 1000, top: int = 5, progress: bool = False) -> dict[str, Any]:
    """Per finding of a multi-label card: out-of-fold AUC of non-anatomical features (grouped K-fold).

    Returns:
        JSON-ready ``{"model", "n", "split", "folds", "findings": {name: {"n", "n_positive", "best"
        (feature set, model, auc, auc_ci), "confounded", "top_features"}}, "n_failed", "seconds"}``;
        a finding with fewer than ``folds`` positives or negatives gets ``{"skipped": reason}``.

    Raises:
        ValueError: the card is not multi-label or does not record its label sources.
    """
    from medcnn.models.card import ModelCard

    t0 = time.perf_counter()
    card = ModelCard.load(card_path)
    card.head_rule.require_per_finding(card.name, "the dataset audit")
    specs, column, exclude, dedupe_by = specs_from_card(card.training)
    df = read_labels([str(p) for p in data], split=split)
    df = df[df["split"].isin(STANDARD_SPLITS)]  # e.g. full-resolution copies of test films are not new films
    df, _, _ = prepare_rows(df, exclude, dedupe_by)
    targets = finding_targets(df, specs, column)
    raw, ok, _errors = extract_features(df, progress=progress)
    df, targets = df[ok].reset_index(drop=True), targets[ok]
    _meta, sets = _feature_sets(df, raw)
    groups = df["group"].astype(str).to_numpy()
    out: dict[str, Any] = {}
    for j, spec in enumerate(specs):
        known = ~np.isnan(targets[:, j])
        y = targets[known, j].astype(int)
        if y.sum() < folds or (1 - y).sum() < folds:
            out[spec.name] = {"skipped": f"fewer than {folds} positives or negatives with a known label"}
            continue
        results = {name: {"n_features": int(x.shape[1]),
                          **_cross_validate(x[known].reset_index(drop=True), y, groups[known], folds, seed, n_boot)}
                   for name, x in sets.items()}
        best_set, best_model, best = _best(results)
        ranking = _feature_ranking(sets["all"][known].reset_index(drop=True), y, top)
        out[spec.name] = {
            "n": int(known.sum()), "n_positive": int(y.sum()),
            "best": {"feature_set": best_set, "model": best_model, "auc": best["auc"], "auc_ci": best["auc_ci"]},
            "confounded": bool(_ci_low(best) > CONFOUND_CI_LOW),
            "top_features": [{"feature": r["feature"], "auc": r["auc"], "higher_in": r["higher_in"]}
                             for r in ranking["single_feature_auc"][:top]],
        }
    return {"model": card.name, "n": int(len(df)), "split": split, "folds": folds, "findings": out,
            "n_failed": int((~ok).sum()), "seconds": round(time.perf_counter() - t0, 2)}


def format_findings_audit(report: dict[str, Any]) -> str:
    """Human-readable summary of :func:`audit_findings`."""
    lines = [f"shortcut audit per finding of {report['model']}: {report['n']} images, "
             f"{report['folds']}-fold grouped CV on non-anatomical features"]
    for name, r in report["findings"].items():
        if "skipped" in r:
            lines.append(f"  {name:<20} skipped: {r['skipped']}")
            continue
        b = r["best"]
        ci = b["auc_ci"] or [b["auc"], b["auc"]]
        flag = "  CONFOUNDED" if r["confounded"] else ""
        feats = ", ".join(f["feature"] for f in r["top_features"][:3])
        lines.append(f"  {name:<20} AUC {b['auc']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] ({b['model']} on {b['feature_set']}; "
                     f"{r['n_positive']}/{r['n']} positive){flag}; strongest: {feats}")
    return "\n".join(lines)
