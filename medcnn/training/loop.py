"""Training entry points: data selection, the run, calibration, checkpoint + model card writing.

``train(config)`` reads labels.csv files, builds the model's preprocessing pipeline,
caches the decoded images, trains with early stopping on validation AUC of the positive
label (the epoch loop is :func:`medcnn.training.fit.fit`), calibrates on validation
(temperature + Youden threshold), and writes ``<out>.pt`` + ``<out>.json``. The ``test`` split is dropped when the labels are read:
it is never used for training, early stopping, calibration or the threshold.

``cross_validate(config)`` runs patient-grouped stratified K-fold over train+val.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medcnn.distributed.ddp import current_world, process_group, rank_device
from medcnn.evaluation.labels import STANDARD_SPLITS
from medcnn.models import create_model, get_device, save_checkpoint
from medcnn.models.card import card_file
from medcnn.training.augment import Augment
from medcnn.training.config import MONITORS, TrainConfig
from medcnn.training.data import DisplayCache, ImageDataset, grouped_kfold, grouped_split, read_labels
from medcnn.training.fit import fit
from medcnn.training.meta import build_card, calibrate, final_metrics, fold_metrics, summarize_folds
from medcnn.training.state import _print, _warn

if TYPE_CHECKING:
    from medcnn.preprocess import Pipeline

__all__ = ["TrainConfig", "TrainResult", "cross_validate", "load_training_data", "train"]


@dataclass
class TrainResult:
    """Outcome of :func:`train`: best model (eval mode), its card and the history."""

    model: nn.Module
    card: Any
    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    card_path: Path | None = None


# --------------------------------------------------------------------------- data
def load_training_data(cfg: TrainConfig) -> tuple[pd.DataFrame, list[str], str, int]:
    """Rows for training (split ``train``/``val``; ``test`` dropped), classes, positive label.

    Returns:
        ``(df, classes, positive, n_test_dropped)``.
    """
    df = read_labels(cfg.data)
    n_test = int((df["split"] == "test").sum())
    other = sorted(set(df["split"]) - set(STANDARD_SPLITS))
    if other:
        _warn(f"rows of split(s) {other} are not used for training ({int(df['split'].isin(other).sum())} rows)")
    df = df[df["split"].isin(["train", "val"])].copy()
    for old, new in cfg.train_relabel.items():
        df.loc[(df["split"] == "train") & (df["label"] == old), "label"] = new
    classes = list(cfg.classes) if cfg.classes else sorted(df["label"].unique())
    present = set(df["label"])
    missing = [c for c in classes if c not in present]
    if missing:
        raise ValueError(f"class(es) {missing} not in the train/val rows; available: {', '.join(sorted(present))}")
    df = df[df["label"].isin(classes)].reset_index(drop=True)
    positive = cfg.positive or classes[-1]
    if positive not in classes:
        raise ValueError(f"--positive {positive!r} is not one of the classes {classes}")
    if not (df["split"] == "val").any():
        _warn(f"no 'val' rows: holding out a patient-grouped {cfg.val_fraction:.0%} of train for validation")
        mask = grouped_split(df, cfg.val_fraction, cfg.seed)
        df.loc[mask, "split"] = "val"
    if cfg.max_train:
        tr = df[df["split"] == "train"]
        if len(tr) > cfg.max_train:
            drop = tr.sample(n=len(tr) - cfg.max_train, random_state=cfg.seed).index
            df = df.drop(index=drop).reset_index(drop=True)
    for col in (cfg.val_by, cfg.balance_by):
        if col and col not in df.columns:
            raise ValueError(f"column {col!r} not in the labels; columns: {', '.join(map(str, df.columns))}")
    return df, classes, positive, n_test


def state_path(cfg: TrainConfig) -> Path | None:
    """Where a run writes its resumable state (``<out>.state.pt``, folder created), or None."""
    if not (cfg.out and cfg.save_state):
        return None
    path = Path(cfg.out).with_suffix("").with_suffix(".state.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _pipeline(cfg: TrainConfig) -> Pipeline:
    from medcnn.preprocess import Pipeline, default_config

    return Pipeline.from_config(cfg.preprocess or default_config(cfg.task, cfg.size))


# --------------------------------------------------------------------------- entry points
def _setup(cfg: TrainConfig) -> torch.device:
    """Validate the settings that fail fast, seed numpy and torch, and pick the device."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.monitor not in MONITORS:
        raise ValueError(f"unknown monitor {cfg.monitor!r}; valid: {', '.join(MONITORS)}")
    if cfg.monitor == "min_group_auc" and not cfg.val_by:
        raise ValueError("--monitor min_group_auc needs --val-by COLUMN")
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ValueError(f"need epochs >= 1 and batch size >= 2, got {cfg.epochs} and {cfg.batch_size}")
    Augment(**cfg.augment)  # validate early
    create_model(cfg.arch)  # validate the name early (cheap)
    world = current_world()
    if world.distributed and cfg.batch_size < 2 * world.size:
        raise ValueError(f"--batch-size is the global batch over all {world.size} processes: "
                         f"use at least {2 * world.size}, got {cfg.batch_size}")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    return rank_device(get_device(cfg.device))


def train(cfg: TrainConfig) -> TrainResult:
    """Train one model on the train split, early-stop/calibrate on val, write the checkpoint.

    Returns:
        :class:`TrainResult` with the best model (eval mode) and its card. When
        ``cfg.out`` is set, ``<out>.pt`` + ``<out>.json`` are written (and
        ``<out>.state.pt`` after every epoch if ``cfg.save_state``). Launched by ``torchrun``,
        the processes train one model data-parallel and only rank 0 writes these files
        (:mod:`medcnn.distributed.ddp`).

    Raises:
        ValueError: bad settings or labels (messages say what to change).
        FileNotFoundError: missing labels or image files.
    """
    with process_group(cfg.device):
        return _train(cfg)


def _train(cfg: TrainConfig) -> TrainResult:
    """:func:`train` inside the (possibly one-process) process group."""
    device = _setup(cfg)
    if cfg.findings:
        from medcnn.training.findings import train_findings

        return train_findings(cfg, device)
    main = current_world().is_main
    df, classes, positive, n_test = load_training_data(cfg)
    pos = classes.index(positive)
    pipe = _pipeline(cfg)
    cache = DisplayCache(pipe)
    train_ds = ImageDataset(df[df["split"] == "train"], pipe, classes, cache=cache)
    val_ds = ImageDataset(df[df["split"] == "val"], pipe, classes, cache=cache)
    _print(f"train {len(train_ds)} / val {len(val_ds)} images ({n_test} test rows left out); "
           f"classes {classes}, positive {positive!r}; {cfg.arch} on {device}")
    cache.fill(train_ds.paths + val_ds.paths, progress=cfg.progress and main)
    result = fit(cfg, train_ds, val_ds, pos, device, state_path(cfg))
    cal = calibrate(result["val_logits"], val_ds.targets, pos, enabled=cfg.calibrate)
    metrics = final_metrics(result["val_logits"], val_ds, pos, cal, cfg.val_by, cfg.n_boot, cfg.seed)
    card = build_card(cfg, classes, positive, pipe, df, n_test, result, cal, metrics, device)
    card_path = None
    if cfg.out and main:
        card_path = save_checkpoint(result["model"], card, cfg.out)
    elif cfg.out:  # rank 0 writes the checkpoint; the other ranks report the same card
        card_path = card_file(cfg.out)  # as save_checkpoint names it
        card.name = card_path.stem
    if card_path:
        _print(f"wrote {card_path.with_suffix('.pt')} and {card_path}")
    return TrainResult(result["model"], card, result["history"], result["best_epoch"], result["best_score"],
                       card_path)


def cross_validate(cfg: TrainConfig) -> dict[str, Any]:
    """Patient-grouped stratified K-fold over train+val rows (test untouched).

    Returns:
        ``{"folds": [per-fold metrics], "summary": {metric: {"mean", "sd"}}, "config": ...}``.
    """
    with process_group(cfg.device):
        return _cross_validate(cfg)


def _cross_validate(cfg: TrainConfig) -> dict[str, Any]:
    """:func:`cross_validate` inside the (possibly one-process) process group."""
    device = _setup(cfg)
    if cfg.folds < 2:
        raise ValueError(f"--folds must be >= 2, got {cfg.folds}")
    df, classes, positive, n_test = load_training_data(cfg)
    pos = classes.index(positive)
    pipe = _pipeline(cfg)
    cache = DisplayCache(pipe)
    cache.fill(df["path"].tolist(), progress=cfg.progress and current_world().is_main)
    fold_cfg = copy.copy(cfg)
    fold_cfg.resume = None
    rows = []
    for i, (tr, va) in enumerate(grouped_kfold(df, cfg.folds, cfg.seed), start=1):
        train_ds = ImageDataset(df.iloc[tr], pipe, classes, cache=cache)
        val_ds = ImageDataset(df.iloc[va], pipe, classes, cache=cache)
        _print(f"fold {i}/{cfg.folds}: train {len(train_ds)} / val {len(val_ds)}")
        result = fit(fold_cfg, train_ds, val_ds, pos, device, None, tag=f"[fold {i}] ")
        rows.append({"fold": i, "n_train": len(train_ds), "n_val": len(val_ds),
                     **fold_metrics(result, val_ds, pos, cfg.val_by)})
    return {"folds": rows, "summary": summarize_folds(rows), "classes": classes, "positive_label": positive,
            "n_rows": len(df), "test_rows_excluded": n_test,
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}}
