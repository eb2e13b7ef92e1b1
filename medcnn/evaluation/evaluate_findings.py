"""Evaluating a multi-label (findings) model card on labelled data, and writing its test metrics.

Rows are selected as the training run selected them (its recorded exclusions and duplicate
keys), finding labels are read from the columns the run recorded, and each finding is scored on
the images whose label for it is known, at the temperature and operating point fitted on
validation. :func:`evaluate_findings_card` writes ``metrics["test"]`` (with per-image scores per
finding, so curves and AUCs can be recomputed without the data) and decides which findings are
presented (:func:`medcnn.evaluation.findings.finding_visibility`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medcnn.evaluation.finding_labels import finding_targets, prepare_rows, specs_from_card
from medcnn.evaluation.findings import MIN_AUC_LOWER, finding_metrics, finding_visibility, summarize_findings
from medcnn.evaluation.labels import read_labels
from medcnn.evaluation.predict import CardRows, predict_dataset
from medcnn.models.card import ModelCard
from medcnn.models.outputs import sigmoid_t

__all__ = ["FindingScores", "evaluate_findings_card", "finding_rows", "finding_scores_metrics", "score_findings",
           "stored_finding_scores"]


@dataclass
class FindingScores:
    """A multi-label model's outputs on labelled rows: logits (N, C) and targets (N, C, NaN = unknown)."""

    card: ModelCard
    df: Any
    logits: np.ndarray
    targets: np.ndarray

    def prob(self) -> np.ndarray:
        """(N, C) calibrated probabilities (each finding's temperature)."""
        return sigmoid_t(self.logits, self.card.finding_temperatures())

    def subset(self, mask: np.ndarray) -> "FindingScores":
        return FindingScores(self.card, self.df[mask].reset_index(drop=True), self.logits[mask], self.targets[mask])


def score_findings(card: ModelCard | str | Path, csv_paths: Sequence[str | Path], split: str | None = None,
                   device: Any = None, batch_size: int = 32, progress: bool = False) -> FindingScores:
    """Run a sigmoid card's model over labelled rows (selected as in its training run).

    Raises:
        ValueError: the card is not multi-label, lacks its label record, or no rows remain.
    """
    from medcnn.models import load_model
    from medcnn.preprocess import Pipeline

    model, card = load_model(card, device=device)
    df, targets = finding_rows(card, csv_paths, split)
    if progress:
        print(f"evaluating {card.name} on {len(df)} images" + (f" (split {split})" if split else ""),
              file=sys.stderr)
    rows = CardRows(df["path"].astype(str).tolist(), Pipeline.from_config(card.preprocessing))
    logits = predict_dataset(model, rows, batch_size=batch_size)
    return FindingScores(card, df, np.asarray(logits, dtype=np.float64), targets)


def finding_rows(card: ModelCard, csv_paths: Sequence[str | Path], split: str | None = None) -> tuple[Any, np.ndarray]:
    """The labelled rows of a sigmoid card's findings, selected as its training run selected them
    (recorded exclusions and duplicate keys), and their (N, C) targets (NaN = unknown).

    Raises:
        ValueError: the card is not multi-label, lacks its label record, or no rows remain.
    """
    card.head_rule.require_per_finding(card.name, "the single-label evaluation")
    specs, column, exclude, dedupe_by = specs_from_card(card.training)
    if [s.name for s in specs] != list(card.labels):
        raise ValueError(f"card {card.name!r}: recorded findings {[s.name for s in specs]} differ from its labels")
    df = read_labels([str(p) for p in csv_paths], split=split)
    df, _, _ = prepare_rows(df, exclude, dedupe_by)
    if len(df) == 0:
        raise ValueError("no rows to evaluate after selecting the split")
    return df, finding_targets(df, specs, column)


def finding_scores_metrics(scores: FindingScores, by: Sequence[str] = (), n_boot: int = 1000,
                           seed: int = 0) -> dict[str, Any]:
    """Per-finding metrics (patient bootstrap) with a summary table, plus subgroups by ``by`` columns."""
    cols = {c: scores.df[c].astype(str).fillna("NA").to_numpy() for c in by if c in scores.df.columns}
    per = finding_metrics(scores.prob(), scores.targets, scores.card.labels, scores.card.finding_thresholds(),
                          groups=scores.df["group"].astype(str).to_numpy(), by=cols, n_boot=n_boot, seed=seed)
    return {"model": scores.card.name, "n": int(len(scores.df)), **summarize_findings(per), "per_finding": per}


def stored_finding_scores(scores: FindingScores) -> dict[str, dict[str, list]]:
    """Per finding, the known rows' outcome and calibrated probability, sorted by probability (no file
    names or identifiers): ``{finding: {"y": [...], "prob": [...]}}``."""
    prob = scores.prob()
    out = {}
    for j, name in enumerate(scores.card.labels):
        ok = ~np.isnan(scores.targets[:, j])
        y, p = scores.targets[ok, j].astype(int), prob[ok, j]
        order = np.lexsort((y, -p))
        out[name] = {"y": [int(v) for v in y[order]], "prob": [float(v) for v in p[order]]}
    return out


def evaluate_findings_card(card_path: str | Path, csv_paths: Sequence[str | Path], by: Sequence[str] = (),
                           n_boot: int = 1000, write: bool = True, device: Any = None, batch_size: int = 32,
                           min_lower: float = MIN_AUC_LOWER) -> ModelCard:
    """Score the **test** split with the val-fitted temperatures and operating points; write the card.

    The card gets ``metrics["test"]`` (summary, per-finding metrics with CIs and ``by_<column>``
    subgroups, and per-image ``scores``) and, per finding, ``shown`` / ``reason``: a finding whose
    test AUC CI lower bound is below ``min_lower`` is kept in the output but not presented.
    Nothing is fitted on test.

    Raises:
        ValueError: no test rows (see also :func:`score_findings`).
    """
    scores = score_findings(card_path, csv_paths, split="test", device=device, batch_size=batch_size, progress=True)
    card = scores.card
    m = finding_scores_metrics(scores, by=by, n_boot=n_boot)
    m["scores"] = stored_finding_scores(scores)
    card.metrics["test"] = m
    shortcut = (card.audit.get("shortcut_findings") or {}).get("findings")
    for name, v in finding_visibility(m["per_finding"], min_lower, shortcut).items():
        f = card.findings[name]
        if v["shown"] and f.get("operating_point_shown") is False:  # the operating-point policy's verdict stands
            v = {"shown": False, "reason": f"{v['reason']}; but {f.get('operating_point_reason')}"}
        f.update(v)
    if write:
        card.save(card.path)
    return card
