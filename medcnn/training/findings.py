"""The rows of a multi-label findings run (``python -m medcnn train --findings ...``).

A findings run is the one training run of :mod:`medcnn.training.loop` with the sigmoid head
(:class:`medcnn.training.heads.SigmoidHead`); this module reads its data: a (N, C) target matrix
(1 / 0 / NaN = unknown) instead of one class per image. The test split is dropped when the labels
are read, after excluded rows and duplicate images are removed from every split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from medcnn.evaluation.finding_labels import (FindingSpec, finding_counts, finding_targets, parse_findings,
                                              prepare_rows)
from medcnn.evaluation.labels import STANDARD_SPLITS, read_labels
from medcnn.training.config import TrainConfig

__all__ = ["FindingsData", "load_findings_data"]


@dataclass
class FindingsData:
    """Train/val rows of a multi-label run and what was done to get them."""

    df: pd.DataFrame  # train + val rows
    specs: list[FindingSpec]
    targets: np.ndarray  # (len(df), C) 1 / 0 / NaN
    n_test: int
    excluded: dict[str, int]
    duplicates: int
    counts: dict[str, dict[str, Any]]  # per finding and split (test included): pos / neg / unknown

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]


def load_findings_data(cfg: TrainConfig) -> FindingsData:
    """Rows, finding targets and counts for ``cfg.findings`` (test rows counted, then dropped).

    Raises:
        ValueError: bad finding specs / columns, a finding without positives or negatives in
            train or val, or duplicates crossing splits.
    """
    specs = parse_findings(cfg.findings or [])
    df = read_labels(cfg.data)
    df = df[df["split"].isin(STANDARD_SPLITS)].reset_index(drop=True)
    df, excluded, dups = prepare_rows(df, list(cfg.exclude), list(cfg.dedupe_by))
    targets = finding_targets(df, specs, cfg.findings_column)
    counts = finding_counts(targets, df["split"].to_numpy(), [s.name for s in specs])
    for name, c in counts.items():
        for split in ("train", "val"):
            if not c.get(split, {}).get("pos") or not c.get(split, {}).get("neg"):
                raise ValueError(f"finding {name!r} needs positives and negatives in {split} "
                                 f"(found {c.get(split)}); drop it from --findings")
    keep = df["split"].isin(["train", "val"]).to_numpy()
    n_test = int((~keep).sum())
    df = df[keep].reset_index(drop=True)
    targets = targets[keep]
    if cfg.max_train:
        tr = np.flatnonzero(df["split"].to_numpy() == "train")
        if len(tr) > cfg.max_train:
            rng = np.random.default_rng(cfg.seed)
            drop = rng.choice(tr, size=len(tr) - cfg.max_train, replace=False)
            keep_rows = np.setdiff1d(np.arange(len(df)), drop)
            df, targets = df.iloc[keep_rows].reset_index(drop=True), targets[keep_rows]
    for col in (cfg.val_by, cfg.balance_by):
        if col and col not in df.columns:
            raise ValueError(f"column {col!r} not in the labels; columns: {', '.join(map(str, df.columns))}")
    return FindingsData(df, specs, targets, n_test, excluded, dups, counts)
