"""Training a multi-label findings model (``python -m medcnn train --findings ...``).

The run mirrors :func:`medcnn.training.loop.train` (same pipeline, cache, epoch loop, early stopping
and checkpoint), with a (N, C) target matrix instead of one class per image: masked BCE over the
known labels, early stopping on the mean validation AUC over findings, and per finding a
temperature and an operating point fitted on validation. The test split is dropped when the
labels are read, after excluded rows and duplicate images are removed from every split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from medcnn.evaluation.findings import finding_metrics, summarize_findings
from medcnn.evaluation.labels import STANDARD_SPLITS, read_labels
from medcnn.models import save_checkpoint
from medcnn.models.outputs import sigmoid_t
from medcnn.training.config import TrainConfig
from medcnn.training.data import DisplayCache, ImageDataset
from medcnn.training.fit import fit
from medcnn.training.meta import build_card
from medcnn.evaluation.finding_labels import (FindingSpec, finding_counts, finding_targets, parse_findings,
                                              prepare_rows)
from medcnn.training.multilabel import calibrate_findings
from medcnn.training.state import _print, _warn

__all__ = ["FindingsData", "load_findings_data", "train_findings"]


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


def train_findings(cfg: TrainConfig, device: torch.device) -> Any:
    """Train, calibrate per finding on val and write ``<out>.pt`` + ``<out>.json`` (a sigmoid card).

    Returns:
        :class:`medcnn.training.loop.TrainResult`.
    """
    from medcnn.training.loop import TrainResult, _pipeline, state_path

    data = load_findings_data(cfg)
    names = data.names
    positive = cfg.positive or names[0]
    if positive not in names:
        raise ValueError(f"--positive {positive!r} is not one of the findings {names}")
    pos = names.index(positive)
    if cfg.folds:
        raise ValueError("cross-validation (--folds) is not available for multi-label training")
    pipe = _pipeline(cfg)
    cache = DisplayCache(pipe)
    split = data.df["split"].to_numpy()
    tr, va = split == "train", split == "val"
    train_ds = ImageDataset(data.df[tr], pipe, names, cache=cache, targets=data.targets[tr])
    val_ds = ImageDataset(data.df[va], pipe, names, cache=cache, targets=data.targets[va])
    _print(f"train {len(train_ds)} / val {len(val_ds)} images ({data.n_test} test rows left out, "
           f"{data.duplicates} duplicate images and {sum(data.excluded.values())} excluded rows dropped); "
           f"findings {names}; {cfg.arch} on {device}")
    cache.fill(train_ds.paths + val_ds.paths, progress=cfg.progress)
    result = fit(cfg, train_ds, val_ds, pos, device, state_path(cfg))
    cal = calibrate_findings(result["val_logits"], val_ds.targets, names, enabled=cfg.calibrate)
    temps = np.array([cal[n]["temperature"] for n in names])
    thresholds = np.array([cal[n]["threshold"] for n in names])
    prob = sigmoid_t(result["val_logits"], temps)
    by = {cfg.val_by: val_ds.df[cfg.val_by].astype(str).to_numpy()} if cfg.val_by else None
    per = finding_metrics(prob, val_ds.targets, names, thresholds, groups=val_ds.df["group"].to_numpy(),
                          by=by, n_boot=cfg.n_boot, seed=cfg.seed)
    card = build_card(cfg, names, positive, pipe, data.df, data.n_test, result,
                      {"temperature": 1.0, "threshold": float(cal[positive]["threshold"])}, {}, device)
    card.head = "sigmoid"
    card.findings = {n: {"temperature": float(cal[n]["temperature"]), "threshold": float(cal[n]["threshold"]),
                         "shown": True, "reason": "not yet evaluated on test", "label_source": s.source}
                     for n, s in zip(names, data.specs)}
    card.metrics = {"val": {"model": card.name, **summarize_findings(per), "per_finding": per}}
    card.training["calibration"] = cal
    card.training["findings"] = {
        "specs": [{"name": s.name, "column": s.column or cfg.findings_column, "kind": "binary" if s.column else "list"}
                  for s in data.specs],
        "counts": data.counts, "excluded_rows": data.excluded, "duplicate_images_dropped": data.duplicates,
        "dedupe_by": list(cfg.dedupe_by), "exclude": list(cfg.exclude), "init": cfg.init,
    }
    card_path = save_checkpoint(result["model"], card, cfg.out) if cfg.out else None
    if card_path:
        _print(f"wrote {card_path.with_suffix('.pt')} and {card_path}")
    if any(c.get("fitted_on") is None for c in cal.values()):
        _warn("some findings kept T = 1 / threshold 0.5: " + ", ".join(n for n in names if cal[n]["fitted_on"] is None))
    return TrainResult(result["model"], card, result["history"], result["best_epoch"], result["best_score"],
                       card_path)
