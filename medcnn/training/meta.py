"""Calibration, metrics and model-card assembly for :mod:`medcnn.training.loop` (private)."""
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
import torch

from medcnn.training import losses as _losses
from medcnn.models.card import ModelCard
from medcnn.training.data import label_counts
from medcnn.models import default_target_layer

DICOM_MODALITIES = {"CXR": ["CR", "DX"], "CT": ["CT"]}


def _metrics_module():
    """The evaluation helper's module with ``compute_metrics`` etc., or None."""
    for name in ("medcnn.evaluation.metrics", "medcnn.evaluation.evaluate"):
        try:
            mod = __import__(name, fromlist=["compute_metrics"])
        except ImportError:
            continue
        if hasattr(mod, "compute_metrics"):
            return mod
    return None


def _softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, 1).numpy()


def calibrate(logits: np.ndarray, targets: np.ndarray, pos: int, enabled: bool = True) -> dict[str, Any]:
    """Temperature (NLL on val) and Youden threshold on the calibrated val probabilities.

    Uses ``fit_temperature`` / ``youden_threshold`` of the metrics module when present;
    otherwise keeps T = 1, threshold = 0.5 and says so in ``note``.
    """
    out: dict[str, Any] = {"temperature": 1.0, "threshold": 0.5, "fitted_on": None, "note": ""}
    mod = _metrics_module()
    if not enabled:
        out["note"] = "calibration disabled (--no-calibrate): T = 1, threshold = 0.5"
        return out
    if mod is None or not hasattr(mod, "fit_temperature") or not hasattr(mod, "youden_threshold"):
        out["note"] = "no fit_temperature/youden_threshold available: T = 1, threshold = 0.5 placeholders"
        return out
    yb = (np.asarray(targets) == pos).astype(int)
    if len(np.unique(yb)) < 2:
        out["note"] = "validation has one class only: T = 1, threshold = 0.5"
        return out
    t = float(mod.fit_temperature(logits, targets))
    thr = float(mod.youden_threshold(yb, _softmax(logits, t)[:, pos]))
    return {"temperature": t, "threshold": thr, "fitted_on": "val",
            "note": "temperature: NLL on val; threshold: Youden's J on calibrated val probabilities"}


def final_metrics(logits: np.ndarray, val_ds, pos: int, cal: dict[str, Any], val_by: str | None,
                  n_boot: int, seed: int) -> dict[str, Any]:
    """``metrics["val"]``: compute_metrics on calibrated val probabilities (+ per group)."""
    prob = _softmax(logits, cal["temperature"])[:, pos]
    yb = (val_ds.targets == pos).astype(int)
    groups = val_ds.df["group"].to_numpy() if "group" in val_ds.df else None
    mod = _metrics_module()
    labels = ("not " + val_ds.labels[pos], val_ds.labels[pos]) if len(val_ds.labels) > 2 else \
        (val_ds.labels[1 - pos], val_ds.labels[pos])
    if mod is not None:
        out = mod.compute_metrics(yb, prob, cal["threshold"], labels=labels, n_boot=n_boot, seed=seed, groups=groups)
    else:
        out = {"n": int(len(yb)), "auc": _losses.roc_auc(yb, prob), "threshold": cal["threshold"]}
    if val_by:
        vals = val_ds.df[val_by].astype(str).fillna("NA").to_numpy()
        by = {}
        for v in sorted(set(vals)):
            m = vals == v
            if mod is not None and hasattr(mod, "compute_metrics"):
                by[v] = mod.compute_metrics(yb[m], prob[m], cal["threshold"], labels=labels,
                                            n_boot=n_boot, seed=seed, groups=None if groups is None else groups[m])
            else:
                by[v] = {"n": int(m.sum()), "auc": _losses.roc_auc(yb[m], prob[m])}
        out[f"by_{val_by}"] = by
    return out


def fold_metrics(fit: dict[str, Any], val_ds, pos: int, val_by: str | None) -> dict[str, Any]:
    """Scalar metrics of one fold at its best epoch (uncalibrated, threshold 0.5)."""
    prob = _softmax(fit["val_logits"])[:, pos]
    yb = (val_ds.targets == pos).astype(int)
    mod = _metrics_module()
    row: dict[str, Any] = {"best_epoch": fit["best_epoch"], "epochs_run": fit["epochs_run"]}
    if mod is not None:
        m = mod.compute_metrics(yb, prob, 0.5, n_boot=0)
        row.update({k: m[k] for k in getattr(mod, "SCALAR_METRICS", ("auc",)) if k in m})
    else:
        row["auc"] = _losses.roc_auc(yb, prob)
    row["val_loss"] = fit["history"][fit["best_epoch"] - 1]["val_loss"] if fit["history"] else None
    if val_by:
        vals = val_ds.df[val_by].astype(str).fillna("NA").to_numpy()
        for v in sorted(set(vals)):
            row[f"auc_{val_by}={v}"] = _losses.roc_auc(yb[vals == v], prob[vals == v])
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
    head = "python -m medcnn" if argv and argv[0].endswith(("__main__.py", "medcnn")) else shlex.quote(argv[0] if argv else "python")
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


def build_card(cfg, classes, positive, pipe, df, n_test, fit, cal, metrics, device) -> ModelCard:
    """Model card of a finished run (name is set from the output path when saved)."""
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
