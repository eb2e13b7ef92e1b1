"""Losses, class-imbalance strategies, optimisers and learning-rate schedules (private)."""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

IMBALANCE = ("none", "class_weight", "focal", "oversample")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("fixed", "exponential", "inverse_time", "cosine", "onecycle", "warm_restarts")


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017, eq. 5): ``-alpha_t (1 - p_t)^gamma log p_t``.

    Args:
        gamma: Focusing parameter (0 gives cross-entropy).
        weight: Optional (C,) per-class alpha.
    """

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("weight", weight if weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None])[:, 0]
        loss = -((1 - logp.exp()) ** self.gamma) * logp
        if self.weight is not None:
            loss = loss * self.weight[target]
        return loss.mean()


def class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C * n_c)`` (sklearn's "balanced"); (C,) float32."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError(f"a class has no training rows (counts per class: {counts.astype(int).tolist()})")
    return torch.tensor(len(targets) / (num_classes * counts), dtype=torch.float32)


def make_loss(imbalance: str, targets: np.ndarray, num_classes: int, focal_gamma: float = 2.0) -> nn.Module:
    """Training loss for an imbalance strategy (``oversample`` / ``none``: plain CE)."""
    if imbalance not in IMBALANCE:
        raise ValueError(f"unknown imbalance strategy {imbalance!r}; valid: {', '.join(IMBALANCE)}")
    if imbalance == "class_weight":
        return nn.CrossEntropyLoss(weight=class_weights(targets, num_classes))
    if imbalance == "focal":
        return FocalLoss(focal_gamma, class_weights(targets, num_classes))
    return nn.CrossEntropyLoss()


def sample_weights(df: pd.DataFrame, by_label: bool, balance_by: str | None) -> np.ndarray | None:
    """Per-row sampling weights making each label (and each ``balance_by`` value) equally likely.

    With ``balance_by`` every (label, value) cell gets the same total weight; missing
    values form their own cell. Returns None when no re-weighting is asked for.
    """
    if balance_by:
        if balance_by not in df.columns:
            raise ValueError(f"--balance-by column {balance_by!r} not in the labels; "
                             f"columns: {', '.join(map(str, df.columns))}")
        cell = df["label"].astype(str) + "\x00" + df[balance_by].astype(str).fillna("NA")
    elif by_label:
        cell = df["label"].astype(str)
    else:
        return None
    counts = cell.map(cell.value_counts())
    return (1.0 / counts.to_numpy(dtype=np.float64)) / cell.nunique()


def make_optimizer(name: str, params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD (Nesterov momentum). Weight decay is L2 (decoupled for AdamW)."""
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


def lr_factor(schedule: str, epochs: int, decay: float | None, restart_epochs: float,
              warmup_epochs: float) -> Callable[[float], float]:
    """Multiplier of the base LR as a function of the (fractional) epoch.

    fixed: 1. exponential: ``decay**e`` (default 0.9). inverse_time: ``1 / (1 + decay*e)``
    (default 0.1). cosine: half cosine to 0 over ``epochs``. warm_restarts: cosine over
    periods of ``restart_epochs`` (SGDR, Loshchilov & Hutter 2017). An optional linear
    warm-up of ``warmup_epochs`` precedes every schedule.
    """
    if schedule not in SCHEDULES or schedule == "onecycle":
        raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    if schedule == "exponential":
        d = 0.9 if decay is None else decay
        base = lambda e: d ** e  # noqa: E731
    elif schedule == "inverse_time":
        d = 0.1 if decay is None else decay
        base = lambda e: 1.0 / (1.0 + d * e)  # noqa: E731
    elif schedule == "cosine":
        base = lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / max(epochs, 1e-9)))  # noqa: E731
    elif schedule == "warm_restarts":
        period = max(restart_epochs, 1e-9)
        base = lambda e: 0.5 * (1 + math.cos(math.pi * (e % period) / period))  # noqa: E731
    else:
        base = lambda e: 1.0  # noqa: E731
    if warmup_epochs > 0:
        return lambda e: base(e) * min(1.0, (e + 1e-3) / warmup_epochs)
    return base


def make_scheduler(opt: torch.optim.Optimizer, schedule: str, epochs: int, steps_per_epoch: int,
                   decay: float | None = None, restart_epochs: float = 5.0,
                   warmup_epochs: float = 0.0) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step scheduler (call ``.step()`` after every optimiser step)."""
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=max(1, epochs * steps_per_epoch),
            pct_start=0.3 if warmup_epochs <= 0 else min(0.9, warmup_epochs / max(epochs, 1)),
        )
    f = lr_factor(schedule, epochs, decay, restart_epochs, warmup_epochs)
    spe = max(1, steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: f(step / spe))
