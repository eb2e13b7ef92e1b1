"""Every setting of a training run, as one dataclass (recorded in the model card)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MONITORS", "TrainConfig"]

#: Early-stopping criteria on validation (``TrainConfig.monitor``); ``last`` keeps the final epoch (a fixed
#: epoch count chosen by cross-validation, with no choice on the validation split).
MONITORS = ("auc", "loss", "min_group_auc", "last")


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
    findings: list[str] | None = None
    findings_column: str | None = "finding_labels_v2020"
    dedupe_by: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    init: str | None = None
    head_bias: float | None = None
    nonneg_head: bool = False
