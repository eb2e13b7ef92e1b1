"""Multi-label training: masked loss over known labels, validation metrics and one operating point per finding.

Targets are a (N, C) matrix with NaN where a finding is unknown for an image
(:mod:`medcnn.evaluation.finding_labels`); the loss ignores those entries (TorchXRayVision's
masked loss), and each finding gets its own temperature and operating point on validation, the
point by the one policy of :mod:`medcnn.evaluation.operating_points` (the lowest threshold reaching
specificity 0.85 on validation).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medcnn.evaluation.calibration import fit_temperature
from medcnn.evaluation.metrics import roc_auc
from medcnn.evaluation.operating_points import PURPOSE, choose_threshold
from medcnn.models.outputs import sigmoid_t

__all__ = ["MaskedBCE", "calibrate_findings", "make_multilabel_loss", "multilabel_val_metrics", "positive_weights"]


class MaskedBCE(nn.Module):
    """Binary cross-entropy over the known entries of a (N, C) target matrix (NaN = unknown).

    The mean is over known entries, so a batch's loss does not shrink with how many labels it
    lacks. ``pos_weight`` (C,) up-weights positives per finding (``--imbalance class_weight``).
    """

    def __init__(self, pos_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("pos_weight", pos_weight if pos_weight is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(target)
        if not bool(known.any()):
            return logits.sum() * 0.0
        loss = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(target), reduction="none",
                                                  pos_weight=self.pos_weight)
        return loss[known].mean()

    @staticmethod
    def mean_weights(targets: np.ndarray | torch.Tensor) -> np.ndarray:
        """How much each row counts in the mean: its known labels, (N,) (for
        :func:`medcnn.distributed.ddp.share_scale`, which splits a batch over ranks)."""
        return (~np.isnan(np.asarray(targets, dtype=np.float64))).sum(axis=1)


def make_multilabel_loss(imbalance: str, targets: np.ndarray) -> nn.Module:
    """Masked BCE, with per-finding positive weights for ``class_weight``.

    Raises:
        ValueError: an imbalance strategy that has no multi-label form here (focal, oversample).
    """
    if imbalance == "class_weight":
        return MaskedBCE(positive_weights(targets))
    if imbalance != "none":
        raise ValueError(f"--imbalance {imbalance} is not available for multi-label training; "
                         f"use none or class_weight")
    return MaskedBCE()


def positive_weights(targets: np.ndarray) -> torch.Tensor:
    """``neg / pos`` per finding over known training entries, (C,) float32.

    Raises:
        ValueError: a finding without positives or negatives in training.
    """
    pos = np.nansum(targets == 1, axis=0).astype(np.float64)
    neg = np.nansum(targets == 0, axis=0).astype(np.float64)
    if (pos == 0).any() or (neg == 0).any():
        raise ValueError(f"every finding needs positives and negatives in training "
                         f"(positives {pos.astype(int).tolist()}, negatives {neg.astype(int).tolist()})")
    return torch.tensor(neg / pos, dtype=torch.float32)


def _known(targets: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    col = targets[:, j]
    ok = ~np.isnan(col)
    return ok, col[ok].astype(int)


def multilabel_val_metrics(logits: np.ndarray, targets: np.ndarray, names: Sequence[str],
                           groups: np.ndarray | None = None) -> dict[str, Any]:
    """Validation loss (masked BCE), mean AUC over findings and AUC per finding.

    ``groups`` (e.g. a view column) adds ``val_auc_by``: the mean finding AUC within each group.
    """
    t = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    y = torch.from_numpy(np.asarray(targets, dtype=np.float32))
    per = {}
    for j, name in enumerate(names):
        ok, yj = _known(targets, j)
        per[name] = roc_auc(yj, logits[ok, j])
    vals = [v for v in per.values() if v is not None]
    m: dict[str, Any] = {"val_loss": float(MaskedBCE()(t, y)) if len(y) else float("nan"),
                         "val_auc": float(np.mean(vals)) if vals else None, "val_auc_findings": per}
    if groups is not None:
        m["val_auc_by"] = {}
        for g in sorted(set(groups)):
            sel = groups == g
            sub = [roc_auc(*_pair(targets[sel], logits[sel], j)) for j in range(len(names))]
            sub = [v for v in sub if v is not None]
            m["val_auc_by"][str(g)] = float(np.mean(sub)) if sub else None
    return m


def _pair(targets: np.ndarray, logits: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
    ok, yj = _known(targets, j)
    return yj, logits[ok, j]


def calibrate_findings(logits: np.ndarray, targets: np.ndarray, names: Sequence[str],
                       enabled: bool = True) -> dict[str, dict[str, Any]]:
    """Per finding: temperature (NLL on val) and the policy's operating point on the calibrated probability
    (:func:`medcnn.evaluation.operating_points.choose_threshold`: lowest threshold with validation
    specificity >= 0.85).

    A finding with one class only in validation keeps T = 1 and threshold 0.5, with a note.
    """
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        ok, yj = _known(targets, j)
        entry: dict[str, Any] = {"temperature": 1.0, "threshold": 0.5, "fitted_on": None, "note": ""}
        if not enabled:
            entry["note"] = "calibration disabled: T = 1, threshold = 0.5"
        elif len(np.unique(yj)) < 2:
            entry["note"] = "validation has one class only for this finding: T = 1, threshold = 0.5"
        else:
            z = logits[ok, j].astype(np.float64)
            # sigmoid(z / T) = softmax([0, z] / T)[1]: the softmax temperature fit applies as is
            temp = float(fit_temperature(np.stack([np.zeros_like(z), z], axis=1), yj))
            thr = float(choose_threshold(yj, sigmoid_t(z, temp)))
            entry = {"temperature": temp, "threshold": float(np.clip(thr, 1e-4, 1 - 1e-4)), "fitted_on": "val",
                     "rule": PURPOSE, "note": f"temperature: NLL on val; threshold: {PURPOSE} (calibrated)",
                     "n_val_pos": int(yj.sum()), "n_val_neg": int((yj == 0).sum())}
        out[name] = entry
    return out
