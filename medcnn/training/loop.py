"""Training loop, early stopping, checkpoint + model card writing.

``train(config)`` reads labels.csv files, builds the model's preprocessing pipeline,
caches the decoded images, trains with early stopping on validation AUC of the positive
label, calibrates on validation (temperature + Youden threshold), and writes
``<out>.pt`` + ``<out>.json``. The ``test`` split is dropped when the labels are read:
it is never used for training, early stopping, calibration or the threshold.

``cross_validate(config)`` runs patient-grouped stratified K-fold over train+val.
"""
from __future__ import annotations

import contextlib
import copy
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from medcnn.training import losses as _losses
from medcnn.training.meta import build_card, calibrate, final_metrics
from medcnn.training.state import _print, _print_epoch, _resume, _save_state, _warn
from medcnn.training.augment import Augment
from medcnn.training.boxsup import BoxSupervision, box_masks
from medcnn.training.data import DisplayCache, ImageDataset, grouped_kfold, grouped_split, read_labels
from medcnn.models import create_model, default_target_layer, get_device, prepare_for_device, save_checkpoint

__all__ = ["TrainConfig", "TrainResult", "cross_validate", "load_training_data", "train"]

MONITORS = ("auc", "loss", "min_group_auc")


@dataclass
class TrainConfig:
    """Every setting of a training run (recorded in the model card).

    See ``python -m medcnn train --help`` for the meaning of each field.
    """

    data: list[str]
    classes: list[str] | None = None
    positive: str | None = None
    arch: str = "smallresnet"
    task: str = "CXR"
    size: int = 256
    preprocess: dict[str, Any] | None = None
    epochs: int = 30
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    lr_decay: float | None = None
    restart_epochs: float = 5.0
    warmup_epochs: float = 0.0
    imbalance: str = "none"
    focal_gamma: float = 2.0
    balance_by: str | None = None
    box_column: str | None = None
    box_weight: float = 1.0
    box_mode: str = "mask"
    box_ref_size: float = 1024.0
    augment: dict[str, Any] = field(default_factory=dict)
    train_relabel: dict[str, str] = field(default_factory=dict)
    patience: int = 10
    monitor: str = "auc"
    seed: int = 0
    out: str | None = None
    resume: str | None = None
    save_state: bool = False
    folds: int = 0
    val_by: str | None = None
    val_fraction: float = 0.2
    threads: int | None = None
    max_train: int | None = None
    device: str | None = None
    channels_last: str = "auto"
    calibrate: bool = True
    progress: bool = True
    n_boot: int = 1000
    command: str | None = None


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
    other = sorted(set(df["split"]) - {"train", "val", "test"})
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


def _pipeline(cfg: TrainConfig):
    from medcnn.preprocess import Pipeline, default_config

    return Pipeline.from_config(cfg.preprocess or default_config(cfg.task, cfg.size))


# --------------------------------------------------------------------------- loop
@torch.no_grad()
def predict_logits_ds(model: nn.Module, ds: ImageDataset, device: torch.device,
                      batch_size: int = 64) -> np.ndarray:
    """Logits (N, C) float32 of every row of ``ds`` (no augmentation)."""
    model.eval()
    out = []
    for s in range(0, len(ds), batch_size):
        x = ds.pipeline.to_tensor(ds.display_batch(range(s, min(s + batch_size, len(ds)))))
        out.append(_forward(model, x, device).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(ds.labels)), np.float32)


def _forward(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if device.type == "cuda" or getattr(model, "_medcnn_channels_last", False):
        x = x.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast("cuda", dtype=dtype):
            return model(x)
    return model(x)


def _val_metrics(logits: np.ndarray, ds: ImageDataset, pos: int, val_by: str | None) -> dict[str, Any]:
    t = torch.from_numpy(logits)
    y = torch.from_numpy(ds.targets)
    prob = torch.softmax(t, 1)[:, pos].numpy()
    yb = (ds.targets == pos).astype(int)
    m: dict[str, Any] = {"val_loss": float(F.cross_entropy(t, y)) if len(y) else float("nan"),
                         "val_auc": _losses.roc_auc(yb, prob)}
    if val_by:
        vals = ds.df[val_by].astype(str).fillna("NA").to_numpy()
        m["val_auc_by"] = {str(v): _losses.roc_auc(yb[vals == v], prob[vals == v]) for v in sorted(set(vals))}
    return m


# On CPU (oneDNN), channels_last measured 1.3-2x faster training for our own ResNets and
# slightly slower for torchvision resnet18 (benchmarks/bench_models.py).
_CPU_CHANNELS_LAST = ("smallresnet", "tinyresnet", "simplecnn")


def _use_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    if cfg.channels_last == "auto":
        return device.type == "cuda" or cfg.arch in _CPU_CHANNELS_LAST
    if cfg.channels_last not in ("on", "off"):
        raise ValueError(f"channels_last must be auto, on or off, got {cfg.channels_last!r}")
    return cfg.channels_last == "on"


def _score(m: dict[str, Any], monitor: str) -> float:
    if monitor == "loss":
        return -m["val_loss"]
    if monitor == "min_group_auc" and m.get("val_auc_by"):
        vals = [v for v in m["val_auc_by"].values() if v is not None]
        if vals:
            return min(vals)
    return m["val_auc"] if m["val_auc"] is not None else -m["val_loss"]


def _fit(cfg: TrainConfig, train_ds: ImageDataset, val_ds: ImageDataset, pos: int,
         device: torch.device, state_path: Path | None, tag: str = "") -> dict[str, Any]:
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    model = prepare_for_device(create_model(cfg.arch, len(train_ds.labels)), device)
    if _use_channels_last(cfg, device):
        model = model.to(memory_format=torch.channels_last)
        model._medcnn_channels_last = True
    loss_fn = _losses.make_loss(cfg.imbalance, train_ds.targets, len(train_ds.labels), cfg.focal_gamma).to(device)
    params = list(model.parameters())
    bsup, masks = None, None
    if cfg.box_column:
        masks = torch.from_numpy(box_masks(train_ds.df, cfg.box_column, train_ds.pipeline, cfg.box_ref_size))
        bsup = BoxSupervision(model, default_target_layer(cfg.arch), cfg.box_weight, cfg.box_mode,
                              target=pos)
        params += list(bsup.parameters())
        _print(f"{tag}box supervision on {default_target_layer(cfg.arch)}: "
               f"{int((masks.flatten(1).max(1).values > 0).sum())} of {len(masks)} training images have boxes")
    opt = _losses.make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay, cfg.momentum)
    n = len(train_ds)
    bs = min(cfg.batch_size, n)
    steps = n // bs if n % bs < 2 else n // bs + 1  # a last batch of 1 breaks BatchNorm: drop it
    sched = _losses.make_scheduler(opt, cfg.schedule, cfg.epochs, steps, cfg.lr_decay,
                                   cfg.restart_epochs, cfg.warmup_epochs)
    weights = _losses.sample_weights(train_ds.df, cfg.imbalance == "oversample", cfg.balance_by)
    weights_t = None if weights is None else torch.as_tensor(weights)
    g_sample = torch.Generator().manual_seed(cfg.seed)
    g_aug = torch.Generator().manual_seed(cfg.seed + 1)
    augment = Augment(**cfg.augment)
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and not torch.cuda.is_bf16_supported() else None

    history: list[dict[str, Any]] = []
    best = {"score": -float("inf"), "epoch": 0, "state": None, "logits": None}
    bad, start = 0, 1
    if cfg.resume:
        start, bad, history, best = _resume(cfg.resume, model, opt, sched, g_sample, g_aug, best)

    # the box-supervision hook lives exactly as long as the training loop
    with bsup if bsup is not None else contextlib.nullcontext():
        for epoch in range(start, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = (torch.multinomial(weights_t, n, replacement=True, generator=g_sample)
                     if weights_t is not None else torch.randperm(n, generator=g_sample))
            total, seen = 0.0, 0
            bar = tqdm(range(steps), desc=f"{tag}epoch {epoch}/{cfg.epochs}", leave=False,
                       disable=not (cfg.progress and sys.stderr.isatty()), unit="batch")
            for b in bar:
                idx = order[b * bs:(b + 1) * bs].tolist()
                x = train_ds.display_batch(idx)
                mb = masks[idx] if masks is not None else None
                if augment.enabled:
                    if mb is not None:
                        x, mb = augment(x, g_aug, masks=mb)
                    else:
                        x = augment(x, g_aug)
                x = train_ds.pipeline.to_tensor(x)
                y = torch.as_tensor(train_ds.targets[idx]).to(device)
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(_forward(model, x, device).float(), y)
                if bsup is not None:
                    loss = loss + bsup.loss(mb)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}; lower --lr")
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    opt.step()
                sched.step()
                total += loss.item() * len(idx)
                seen += len(idx)
                bar.set_postfix(loss=f"{total / seen:.4f}")
            bar.close()
            train_s = time.perf_counter() - t0
            logits = predict_logits_ds(model, val_ds, device)
            m = _val_metrics(logits, val_ds, pos, cfg.val_by)
            rec = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": total / max(seen, 1), **m,
                   "seconds": round(time.perf_counter() - t0, 2), "train_images_per_s": round(seen / train_s, 1)}
            score = _score(m, cfg.monitor)
            improved = score > best["score"]
            if improved:
                best = {"score": score, "epoch": epoch, "logits": logits,
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
                bad = 0
            else:
                bad += 1
            history.append(rec)
            _print_epoch(tag, rec, cfg.epochs, improved, cfg.progress)
            if state_path is not None:
                _save_state(state_path, model, opt, sched, g_sample, g_aug, epoch, bad, history, best, cfg)
            if cfg.patience and bad >= cfg.patience:
                _print(f"{tag}early stop: no improvement of val {cfg.monitor} for {cfg.patience} epochs")
                break
    return _finish(cfg, model, val_ds, device, history, best)


def _finish(cfg, model, val_ds, device, history, best):
    if best["state"] is None:  # resumed past the last epoch: keep the current weights
        best["state"] = model.state_dict()
        best["logits"] = predict_logits_ds(model, val_ds, device)
    model.load_state_dict(best["state"])
    # hand back the model as load_model() rebuilds it (default memory format), so the
    # returned model and the reloaded checkpoint give bit-identical logits
    model = model.to(memory_format=torch.contiguous_format)
    model._medcnn_channels_last = False
    if best["logits"] is not None and getattr(cfg, "channels_last", "auto") != "off":
        best["logits"] = predict_logits_ds(model, val_ds, device)
    model.eval()
    return {"model": model, "history": history, "best_epoch": best["epoch"], "best_score": best["score"],
            "val_logits": best["logits"], "epochs_run": len(history)}


# --------------------------------------------------------------------------- entry points
def _setup(cfg: TrainConfig) -> torch.device:
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
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    return get_device(cfg.device)


def train(cfg: TrainConfig) -> TrainResult:
    """Train one model on the train split, early-stop/calibrate on val, write the checkpoint.

    Returns:
        :class:`TrainResult` with the best model (eval mode) and its card. When
        ``cfg.out`` is set, ``<out>.pt`` + ``<out>.json`` are written (and
        ``<out>.state.pt`` after every epoch if ``cfg.save_state``).

    Raises:
        ValueError: bad settings or labels (messages say what to change).
        FileNotFoundError: missing labels or image files.
    """
    device = _setup(cfg)
    df, classes, positive, n_test = load_training_data(cfg)
    pos = classes.index(positive)
    pipe = _pipeline(cfg)
    cache = DisplayCache(pipe)
    train_ds = ImageDataset(df[df["split"] == "train"], pipe, classes, cache=cache)
    val_ds = ImageDataset(df[df["split"] == "val"], pipe, classes, cache=cache)
    _print(f"train {len(train_ds)} / val {len(val_ds)} images ({n_test} test rows left out); "
           f"classes {classes}, positive {positive!r}; {cfg.arch} on {device}")
    cache.fill(train_ds.paths + val_ds.paths, progress=cfg.progress)
    state_path = None
    if cfg.out and cfg.save_state:
        state_path = Path(cfg.out).with_suffix("").with_suffix(".state.pt")
        state_path.parent.mkdir(parents=True, exist_ok=True)
    fit = _fit(cfg, train_ds, val_ds, pos, device, state_path)
    cal = calibrate(fit["val_logits"], val_ds.targets, pos, enabled=cfg.calibrate)
    metrics = final_metrics(fit["val_logits"], val_ds, pos, cal, cfg.val_by, cfg.n_boot, cfg.seed)
    card = build_card(cfg, classes, positive, pipe, df, n_test, fit, cal, metrics, device)
    card_path = save_checkpoint(fit["model"], card, cfg.out) if cfg.out else None
    if card_path:
        _print(f"wrote {card_path.with_suffix('.pt')} and {card_path}")
    return TrainResult(fit["model"], card, fit["history"], fit["best_epoch"], fit["best_score"], card_path)


def cross_validate(cfg: TrainConfig) -> dict[str, Any]:
    """Patient-grouped stratified K-fold over train+val rows (test untouched).

    Returns:
        ``{"folds": [per-fold metrics], "summary": {metric: {"mean", "sd"}}, "config": ...}``.
    """
    from medcnn.training.meta import fold_metrics, summarize_folds

    device = _setup(cfg)
    if cfg.folds < 2:
        raise ValueError(f"--folds must be >= 2, got {cfg.folds}")
    df, classes, positive, n_test = load_training_data(cfg)
    pos = classes.index(positive)
    pipe = _pipeline(cfg)
    cache = DisplayCache(pipe)
    cache.fill(df["path"].tolist(), progress=cfg.progress)
    fold_cfg = copy.copy(cfg)
    fold_cfg.resume = None
    rows = []
    for i, (tr, va) in enumerate(grouped_kfold(df, cfg.folds, cfg.seed), start=1):
        train_ds = ImageDataset(df.iloc[tr], pipe, classes, cache=cache)
        val_ds = ImageDataset(df.iloc[va], pipe, classes, cache=cache)
        _print(f"fold {i}/{cfg.folds}: train {len(train_ds)} / val {len(val_ds)}")
        fit = _fit(fold_cfg, train_ds, val_ds, pos, device, None, tag=f"[fold {i}] ")
        rows.append({"fold": i, "n_train": len(train_ds), "n_val": len(val_ds),
                     **fold_metrics(fit, val_ds, pos, cfg.val_by)})
    return {"folds": rows, "summary": summarize_folds(rows), "classes": classes, "positive_label": positive,
            "n_rows": len(df), "test_rows_excluded": n_test,
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}}
