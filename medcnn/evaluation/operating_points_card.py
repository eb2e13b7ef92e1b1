"""Applying the operating-point policy to a multi-label model card (the network itself is untouched).

The policy (:mod:`medcnn.evaluation.operating_points`) chooses each finding's point on the card's
**validation** split only; the test split is then scored at the chosen points. Both are recorded in
the card: per finding ``threshold``, ``rule``, ``previous_threshold`` / ``previous_rule`` and the
validation and test sensitivity / specificity / PPV / NPV with CIs; ``metrics["val"]`` and
``metrics["test"]`` are recomputed at the new points (AUCs do not depend on them), with per-image
``scores`` that carry an anonymous patient index ``g`` (the rank of the patient within the split,
no identifier) so the patient bootstrap can be reproduced from the card alone.

Run it as ``python -m medcnn.evaluation.operating_points_card weights/cxr_findings.json``; only the
card's ``findings``, ``metrics`` and ``experiments`` keys are written, re-read right before writing.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medcnn.evaluation.evaluate_findings import FindingScores, score_findings
from medcnn.evaluation.findings import finding_metrics, summarize_findings
from medcnn.evaluation.operating_points import PURPOSE, choose_operating_point, point_metrics
from medcnn.models.card import ModelCard

__all__ = ["PREVIOUS_RULE", "REFERENCE_PREVALENCE", "anonymous_groups", "apply_policy", "called_shares",
           "main", "split_scores"]

#: How the operating points were chosen before this policy (training's default until then).
PREVIOUS_RULE = "Youden's J on calibrated validation probabilities"
#: A reference prevalence per NIH finding: its share of the 112,120 frontal films of the whole NIH
#: ChestX-ray14 release (Wang et al. 2017, CVPR; Data_Entry_2017 counts), i.e. of one hospital's film
#: archive (in- and outpatients, follow-up films), not of a screening population. Lung Opacity (RSNA
#: labels on an enriched subset) has none we can justify: its PPV is given at validation prevalence only.
REFERENCE_PREVALENCE = {"Infiltration": 19894 / 112120, "Atelectasis": 11559 / 112120,
                        "Effusion": 13317 / 112120, "Consolidation": 4667 / 112120, "Edema": 2303 / 112120,
                        "Nodule": 6331 / 112120, "Mass": 5782 / 112120, "Pneumothorax": 5302 / 112120}
REFERENCE_NAME = "NIH ChestX-ray14 archive"


def anonymous_groups(groups: Sequence[Any] | np.ndarray) -> np.ndarray:
    """(N,) int64: each row's patient as its rank among the split's sorted patient ids (no identifier).

    The ranks keep the order :func:`numpy.unique` gives the ids, so a cluster bootstrap over them
    draws the same patients, seed for seed, as one over the ids themselves.
    """
    _, inverse = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    return inverse.astype(np.int64)


def split_scores(scores: FindingScores) -> dict[str, dict[str, list]]:
    """Per finding ``{"y", "prob", "g"}`` of the known rows, sorted by probability (as
    :func:`medcnn.evaluation.evaluate_findings.stored_finding_scores`), ``g`` from :func:`anonymous_groups`."""
    prob, g = scores.prob(), anonymous_groups(scores.df["group"].to_numpy())
    out = {}
    for j, name in enumerate(scores.card.labels):
        ok = ~np.isnan(scores.targets[:, j])
        y, p, gj = scores.targets[ok, j].astype(int), prob[ok, j], g[ok]
        order = np.lexsort((y, -p))
        out[name] = {"y": [int(v) for v in y[order]], "prob": [float(v) for v in p[order]],
                     "g": [int(v) for v in gj[order]]}
    return out


def _prevalences(name: str) -> dict[str, float]:
    return {REFERENCE_NAME: REFERENCE_PREVALENCE[name]} if name in REFERENCE_PREVALENCE else {}


def called_shares(card: ModelCard, prob: np.ndarray, reference: Sequence[str] | None = None) -> dict[str, Any]:
    """Share of films calling each finding, any finding, and every one of ``reference`` (default: the
    card's presented findings), by the card's decision rule (:attr:`ModelCard.head_rule`)."""
    head = card.head_rule
    called = [set(head.decide(row).called) for row in prob]
    n, every = max(len(called), 1), set(reference if reference is not None else card.shown_findings())
    return {"films": len(called), "per_finding": {f: sum(f in c for c in called) / n for f in card.labels},
            "any": sum(bool(c) for c in called) / n, "all_of": sorted(every),
            "all": sum(every <= c for c in called) / n if every else 0.0,
            "mean_called": float(np.mean([len(c) for c in called])) if called else 0.0}


def _subgroup_columns(card: ModelCard, split: str) -> list[str]:
    """The subgroup columns the card's recorded metrics of ``split`` used (``by_<column>`` keys)."""
    per = ((card.metrics.get(split) or {}).get("per_finding") or {}).get(card.labels[0]) or {}
    return [k[3:] for k in per if k.startswith("by_")]


def apply_policy(card: ModelCard, val: FindingScores, test: FindingScores, by: Sequence[str] | None = None,
                 n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The card's new ``findings``, ``metrics`` and one ``experiments`` entry (``card`` is not changed).

    Args:
        card: The card as loaded (its thresholds are the previous ones).
        val: The card's scores on its validation split (chooses the points).
        test: Its scores on the test split (evaluated at the chosen points only).
        by: Subgroup columns of the recomputed metrics (default: those the card's metrics used).
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.

    Returns:
        ``{"findings", "metrics", "experiment", "shares": {"before", "after"}}``.
    """
    stored = {"val": split_scores(val), "test": split_scores(test)}
    findings = {n: dict(card.findings[n]) for n in card.labels}
    for name in card.labels:
        v, t = stored["val"][name], stored["test"][name]
        op = choose_operating_point(v["y"], v["prob"], groups=v["g"], prevalences=_prevalences(name),
                                    n_boot=n_boot, seed=seed)
        test_prev = {"validation": op.val["predictive"]["validation"]["prevalence"], **_prevalences(name)}
        tm = point_metrics(t["y"], t["prob"], op.threshold, prevalences=test_prev, groups=t["g"],
                           n_boot=n_boot, seed=seed)
        f = findings[name]
        if "previous_threshold" not in f:
            f["previous_threshold"], f["previous_rule"] = f["threshold"], PREVIOUS_RULE
        # The test-AUC rule (finding_visibility) still holds; the operating point's rule is added to it.
        old_shown, old_reason = bool(f.get("shown", True)), str(f.get("auc_reason") or f.get("reason") or "")
        f.update(threshold=op.threshold, rule=op.rule, val=op.val, test=tm, auc_reason=old_reason,
                 operating_point_shown=op.shown, operating_point_reason=op.reason,
                 shown=old_shown and op.shown,
                 reason=old_reason if not old_shown else f"{old_reason}; {op.reason}")
    metrics = dict(card.metrics)
    for split, scores in (("val", val), ("test", test)):
        cols = {c: scores.df[c].astype(str).fillna("NA").to_numpy()
                for c in (_subgroup_columns(card, split) if by is None else by) if c in scores.df.columns}
        thr = [findings[n]["threshold"] for n in card.labels]
        per = finding_metrics(scores.prob(), scores.targets, card.labels, thr,
                              groups=scores.df["group"].astype(str).to_numpy(), by=cols, n_boot=n_boot, seed=seed)
        metrics[split] = {**metrics.get(split, {}), "model": card.name, "n": int(len(scores.df)),
                          **summarize_findings(per), "per_finding": per, "scores": stored[split],
                          "operating_points": PURPOSE}
    after = ModelCard.from_dict({**card.to_dict(), "findings": findings})
    before = card.shown_findings()
    shares = {"before": called_shares(card, test.prob()), "after": called_shares(after, test.prob(), before)}
    experiment = {
        "run": f"operating points: {PURPOSE} (was {PREVIOUS_RULE})",
        "command": "python -m medcnn.evaluation.operating_points_card " + shlex.quote(str(card.path)),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "per_finding": {n: {"threshold": [findings[n]["previous_threshold"], findings[n]["threshold"]],
                            "val_sensitivity": findings[n]["val"]["sensitivity"],
                            "val_specificity": findings[n]["val"]["specificity"],
                            "test_sensitivity": findings[n]["test"]["sensitivity"],
                            "test_sensitivity_ci": findings[n]["test"]["sensitivity_ci"],
                            "test_specificity": findings[n]["test"]["specificity"],
                            "test_specificity_ci": findings[n]["test"]["specificity_ci"],
                            "shown": findings[n]["shown"]} for n in card.labels},
        "test_films_calling": {"before": shares["before"], "after": shares["after"]},
        "note": ("points chosen on validation only (patient bootstrap, 1000 resamples); test scored at them; "
                 "network weights unchanged"),
    }
    return {"findings": findings, "metrics": metrics, "experiment": experiment, "shares": shares}


def _write_owned_keys(path: Path, findings: dict[str, Any], metrics: dict[str, Any], experiment: dict) -> None:
    """Re-read the card file and replace only ``findings``, ``metrics`` and append to ``experiments``."""
    data = json.loads(path.read_text())
    data["findings"], data["metrics"] = findings, metrics
    data["experiments"] = [e for e in data.get("experiments", []) if e.get("run") != experiment["run"]] + [experiment]
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: choose the points of a card on its validation split and write them (see module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m medcnn.evaluation.operating_points_card", description=__doc__)
    ap.add_argument("card", help="the multi-label model card (.json)")
    ap.add_argument("--data", nargs="*", help="labels.csv files (default: the card's training data)")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--dry-run", action="store_true", help="print the result, write nothing")
    args = ap.parse_args(argv)
    card = ModelCard.load(args.card)
    data = args.data or [str(p) for p in card.training.get("data", [])]
    val = score_findings(card.path, data, split="val", device="cpu", progress=True)
    test = score_findings(card.path, data, split="test", device="cpu", progress=True)
    out = apply_policy(card, val, test, n_boot=args.n_boot)
    if not args.dry_run:
        _write_owned_keys(card.path, out["findings"], out["metrics"], out["experiment"])
    json.dump(out["experiment"], sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
