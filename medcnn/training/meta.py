"""Calibration, validation metrics and model-card assembly of a training run (for :mod:`medcnn.training.heads`).

Every metric comes from :mod:`medcnn.evaluation`; this module only decides which rows and
settings a run reports.
"""
from __future__ import annotations

import datetime as _dt
import math
import shlex
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medcnn.evaluation.metrics import (
    SCALAR_METRICS,
    compute_metrics,
    fit_temperature,
    roc_auc,
    softmax_t,
    youden_threshold,
)
from medcnn.models import default_target_layer
from medcnn.models.card import ModelCard
from medcnn.training.config import TrainConfig
from medcnn.training.data import label_counts

DICOM_MODALITIES = {"CXR": ["CR", "DX"], "CT": ["CT"]}


def calibrate(logits: np.ndarray, targets: np.ndarray, pos: int, enabled: bool = True) -> dict[str, Any]:
    """Temperature (NLL on val) and Youden threshold on the calibrated val probabilities.

    Args:
        logits: (N, C) validation logits.
        targets: (N,) class indices.
        pos: Index of the positive label.
        enabled: False keeps T = 1 and threshold 0.5 (``--no-calibrate``).

    Returns:
        ``{"temperature", "threshold", "fitted_on", "note"}``; with one class in validation
        T = 1 and threshold 0.5, and ``note`` says why.
    """
    out: dict[str, Any] = {"temperature": 1.0, "threshold": 0.5, "fitted_on": None, "note": ""}
    if not enabled:
        out["note"] = "calibration disabled (--no-calibrate): T = 1, threshold = 0.5"
        return out
    yb = (np.asarray(targets) == pos).astype(int)
    if len(np.unique(yb)) < 2:
        out["note"] = "validation has one class only: T = 1, threshold = 0.5"
        return out
    t = float(fit_temperature(logits, targets))
    thr = float(youden_threshold(yb, softmax_t(logits, t)[:, pos]))
    return {"temperature": t, "threshold": thr, "fitted_on": "val",
            "note": "temperature: NLL on val; threshold: Youden's J on calibrated val probabilities"}


def _binary_labels(labels: list[str], pos: int) -> tuple[str, str]:
    """(negative name, positive name) of the positive-vs-rest task."""
    return ("not " + labels[pos], labels[pos]) if len(labels) > 2 else (labels[1 - pos], labels[pos])


def _column(ds: Any, column: str) -> np.ndarray:
    return ds.df[column].astype(str).fillna("NA").to_numpy()


def final_metrics(logits: np.ndarray, val_ds: Any, pos: int, cal: dict[str, Any], val_by: str | None,
                  n_boot: int, seed: int) -> dict[str, Any]:
    """``metrics["val"]``: compute_metrics on calibrated val probabilities (+ per ``val_by`` group).

    The bootstrap resamples patients (the dataset's ``group`` column) when present.
    """
    prob = softmax_t(logits, cal["temperature"])[:, pos]
    yb = (val_ds.targets == pos).astype(int)
    groups = val_ds.df["group"].to_numpy() if "group" in val_ds.df else None
    kw = dict(labels=_binary_labels(val_ds.labels, pos), n_boot=n_boot, seed=seed)
    out = compute_metrics(yb, prob, cal["threshold"], groups=groups, **kw)
    if val_by:
        vals = _column(val_ds, val_by)
        out[f"by_{val_by}"] = {
            v: compute_metrics(yb[vals == v], prob[vals == v], cal["threshold"],
                               groups=None if groups is None else groups[vals == v], **kw)
            for v in sorted(set(vals))}
    return out


def fold_metrics(fit: dict[str, Any], val_ds: Any, pos: int, val_by: str | None) -> dict[str, Any]:
    """Scalar metrics of one fold at its best epoch (uncalibrated, threshold 0.5)."""
    prob = softmax_t(fit["val_logits"])[:, pos]
    yb = (val_ds.targets == pos).astype(int)
    row: dict[str, Any] = {"best_epoch": fit["best_epoch"], "epochs_run": fit["epochs_run"]}
    m = compute_metrics(yb, prob, 0.5, n_boot=0)
    row.update({k: m[k] for k in SCALAR_METRICS})
    row["val_loss"] = fit["history"][fit["best_epoch"] - 1]["val_loss"] if fit["history"] else None
    if val_by:
        vals = _column(val_ds, val_by)
        for v in sorted(set(vals)):
            row[f"auc_{val_by}={v}"] = roc_auc(yb[vals == v], prob[vals == v])
    return row


def summarize_folds(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample sd of every numeric metric over folds (None values skipped)."""
    keys = [k for k in rows[0] if k not in ("fold",)]
    out = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        vals = [float(v) for v in vals if isinstance(v, (int, float)) and v is not None and math.isfinite(v)]
        if vals:
            out[k] = {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
                      "n": len(vals)}
    return out


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the package's repository, or None."""
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def command_line() -> str:
    """The command that is running, as a shell line (``python -m medcnn train ...``)."""
    argv = list(sys.argv)
    is_module = bool(argv) and argv[0].endswith(("__main__.py", "medcnn"))
    head = "python -m medcnn" if is_module else shlex.quote(argv[0] if argv else "python")
    return " ".join([head, *map(shlex.quote, argv[1:])])


def _sources(csvs: list[str]) -> list[dict[str, Any]]:
    out = []
    for c in csvs:
        p = Path(c).resolve()
        folder = p if p.is_dir() else p.parent
        src = folder / "SOURCE.md"
        entry: dict[str, Any] = {"labels": str(c), "dataset": folder.name}
        if src.is_file():
            first = next((ln for ln in src.read_text(errors="replace").splitlines() if ln.strip()), "")
            entry["source_md"] = str(src)
            entry["title"] = first.lstrip("# ").strip()
        out.append(entry)
    return out


def build_card(cfg: TrainConfig, classes: list[str], positive: str, pipe: Any, df: pd.DataFrame, n_test: int,
               fit: dict[str, Any], cal: dict[str, Any], metrics: dict[str, Any], device: torch.device) -> ModelCard:
    """Model card of a finished run (name is set from the output path when saved).

    Args:
        cfg: The run's settings (recorded as hyperparameters).
        classes: Labels in logit order; ``positive`` is one of them.
        pipe: The run's :class:`medcnn.preprocess.Pipeline` (its config travels with the weights).
        df: The train/val rows (split counts).
        n_test: Test rows left out of training.
        fit: Output of :func:`medcnn.training.fit.fit`.
        cal: Output of :func:`calibrate`.
        metrics: Output of :func:`final_metrics` (stored as ``metrics["val"]``).
        device: Where the run trained.
    """
    hyper = {k: v for k, v in asdict(cfg).items()
             if k not in ("data", "progress", "augment", "preprocess", "command")}
    training = {
        "data": list(map(str, cfg.data)),
        "sources": _sources(cfg.data),
        "classes": classes,
        "train_relabel": cfg.train_relabel,
        "split_counts": label_counts(df),
        "test_rows_excluded": n_test,
        "command": cfg.command or command_line(),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hyperparameters": hyper,
        "augmentation": cfg.augment,
        "epochs_run": fit["epochs_run"],
        "best_epoch": fit["best_epoch"],
        "monitor": cfg.monitor,
        "seed": cfg.seed,
        "device": str(device),
        "torch": torch.__version__,
        "calibration": cal,
        "history": fit["history"],
    }
    return ModelCard(
        name=Path(cfg.out).with_suffix("").name if cfg.out else f"{cfg.arch}_{cfg.task.lower()}",
        architecture=cfg.arch,
        modality=cfg.task.upper(),
        labels=list(classes),
        positive_label=positive,
        input_size=tuple(pipe.input_size),
        preprocessing=pipe.config,
        target_layer=default_target_layer(cfg.arch),
        dicom_modalities=DICOM_MODALITIES.get(cfg.task.upper(), []),
        threshold=float(cal["threshold"]),
        temperature=float(cal["temperature"]),
        training=training,
        metrics={"val": metrics},
    )
