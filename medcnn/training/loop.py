"""Training entry points: one training run for every head, and patient-grouped cross-validation.

``train(config)`` is the one skeleton of a run, for a softmax (``--classes``) and a sigmoid
(``--findings``) model alike:

1. validate the settings that fail fast, seed, pick the device (``cuda:LOCAL_RANK`` under torchrun);
2. read the train + val rows (the head's :meth:`~medcnn.training.heads.HeadStrategy.rows`; the ``test``
   split is dropped when the labels are read: it is never used for training, early stopping,
   calibration or the threshold);
3. build the model's preprocessing pipeline and decode every image once into a shared cache;
4. train with early stopping on validation (:func:`medcnn.training.fit.fit`: optimiser, schedule,
   mixed precision, the data-parallel wrapper, resumable ``<out>.state.pt``);
5. calibrate on validation and fill the model card (the head's
   :meth:`~medcnn.training.heads.HeadStrategy.card`);
6. write ``<out>.pt`` + ``<out>.json``.

Under ``torchrun`` the processes train one model data-parallel; rank 0 alone writes the state,
the checkpoint and the card, and prints progress. What differs between the heads (targets, loss,
monitored metrics, box targets, calibration and card fields) is the head strategy
(:mod:`medcnn.training.heads`); nothing else in a run asks which head it trains.

``cross_validate(config)`` runs patient-grouped stratified K-fold over train+val (softmax heads).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medcnn.distributed.ddp import World, current_world, process_group, rank_device
from medcnn.models import create_model, get_device, save_checkpoint
from medcnn.training.augment import Augment
from medcnn.training.config import MONITORS, TrainConfig
from medcnn.training.data import DisplayCache, ImageDataset, grouped_kfold, load_training_data
from medcnn.training.fit import fit
from medcnn.training.heads import HeadStrategy, head_for
from medcnn.training.meta import fold_metrics, summarize_folds
from medcnn.training.state import say

if TYPE_CHECKING:
    from medcnn.models.card import ModelCard
    from medcnn.preprocess import Pipeline

__all__ = ["TrainConfig", "TrainResult", "cross_validate", "load_training_data", "state_path", "train"]


@dataclass
class TrainResult:
    """Outcome of :func:`train`: best model (eval mode), its card and the history."""

    model: nn.Module
    card: Any
    history: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    card_path: Path | None = None


def state_path(cfg: TrainConfig) -> Path | None:
    """Where a run writes its resumable state (``<out>.state.pt``, folder created), or None."""
    if not (cfg.out and cfg.save_state):
        return None
    path = Path(cfg.out).with_suffix("").with_suffix(".state.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _pipeline(cfg: TrainConfig) -> Pipeline:
    """The run's preprocessing (``cfg.preprocess``, else the task's default at ``cfg.size``)."""
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
    """:func:`train` inside the (possibly one-process) process group: the skeleton of every run."""
    device = _setup(cfg)
    head = head_for(cfg)
    _check_folds(head, cfg)
    world = current_world()
    rows = head.rows(cfg)
    pipe = _pipeline(cfg)
    cache = DisplayCache(pipe)
    train_ds, val_ds = rows.dataset("train", pipe, cache), rows.dataset("val", pipe, cache)
    say(f"train {len(train_ds)} / val {len(val_ds)} images {rows.note}; {cfg.arch} on {device}")
    cache.fill(train_ds.paths + val_ds.paths, progress=cfg.progress and world.is_main)
    result = fit(cfg, head, train_ds, val_ds, rows.pos, device, state_path(cfg))
    card = head.card(cfg, rows, pipe, val_ds, result, device)
    card_path = _write(cfg, result["model"], card, world)
    return TrainResult(result["model"], card, result["history"], result["best_epoch"], result["best_score"],
                       card_path)


def _write(cfg: TrainConfig, model: nn.Module, card: ModelCard, world: World) -> Path | None:
    """Rank 0 writes ``<out>.pt`` + ``<out>.json``; every rank returns the card's path (None without ``out``).

    The other ranks name their card as :func:`medcnn.models.save_checkpoint` names rank 0's, so all
    ranks report the same card.
    """
    if not cfg.out:
        return None
    if world.is_main:
        card_path = save_checkpoint(model, card, cfg.out)
    else:
        stem = Path(cfg.out).with_suffix("") if Path(cfg.out).suffix in (".pt", ".json") else Path(cfg.out)
        card_path = stem.with_suffix(".json")
        card.name = stem.name
    say(f"wrote {card_path.with_suffix('.pt')} and {card_path}")
    return card_path


def _check_folds(head: HeadStrategy, cfg: TrainConfig) -> None:
    """Refuse ``--folds`` for a head that cannot be cross-validated."""
    if cfg.folds and not head.cross_validates:
        raise ValueError(f"cross-validation (--folds) is not available for {head.title} training")


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
    head = head_for(cfg)
    _check_folds(head, cfg)
    if cfg.folds < 2:
        raise ValueError(f"--folds must be >= 2, got {cfg.folds}")
    rows = head.rows(cfg)
    df, classes, pos = rows.df, rows.labels, rows.pos
    pipe = _pipeline(cfg)
    cache = DisplayCache(pipe)
    cache.fill(df["path"].tolist(), progress=cfg.progress and current_world().is_main)
    fold_cfg = copy.copy(cfg)
    fold_cfg.resume = None
    folds = []
    for i, (tr, va) in enumerate(grouped_kfold(df, cfg.folds, cfg.seed), start=1):
        train_ds = ImageDataset(df.iloc[tr], pipe, classes, cache=cache)
        val_ds = ImageDataset(df.iloc[va], pipe, classes, cache=cache)
        say(f"fold {i}/{cfg.folds}: train {len(train_ds)} / val {len(val_ds)}")
        result = fit(fold_cfg, head, train_ds, val_ds, pos, device, None, tag=f"[fold {i}] ")
        folds.append({"fold": i, "n_train": len(train_ds), "n_val": len(val_ds),
                      **fold_metrics(result, val_ds, pos, cfg.val_by)})
    return {"folds": folds, "summary": summarize_folds(folds), "classes": classes, "positive_label": rows.positive,
            "n_rows": len(df), "test_rows_excluded": rows.n_test,
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}}
