"""The per-head strategy of a training run: what differs between a softmax and a sigmoid model.

One training run (:func:`medcnn.training.loop.train`, with the epoch loop
:func:`medcnn.training.fit.fit`) owns everything two kinds of model share: the data loaders and
their cache, epochs, optimiser and schedule, device and mixed precision, the data-parallel wrapper,
early stopping, resumable state, progress lines and the rank-0-only checkpoint. What depends on the
output layer is a :class:`HeadStrategy`, a small strategy object the run asks:

* :meth:`HeadStrategy.rows`: the train + val rows and their targets (softmax: one class per image;
  sigmoid: an (N, C) findings matrix, 1 / 0 / NaN = unknown);
* :meth:`HeadStrategy.loss`: cross-entropy, focal or class-weighted (softmax); BCE over the known labels (sigmoid);
* :meth:`HeadStrategy.val_metrics`: what early stopping monitors (the positive label's AUC; the mean AUC over
  findings);
* :meth:`HeadStrategy.box_masks`: box supervision's targets (sigmoid: no box loss where the boxed finding is
  unknown);
* :meth:`HeadStrategy.card`: calibration and the card's fields (one temperature and Youden threshold; a
  temperature and operating point per finding, chosen and vetted by the policy of
  :mod:`medcnn.evaluation.operating_points`). The single-label head keeps Youden's J: its one
  threshold separates two classes that are both reported, not a finding called against its absence.

The final-layer options are the same for both heads, so :meth:`HeadStrategy.shape_model` implements them once:
``--head-bias`` (a fixed, untrained bias) and ``--nonneg-head`` (weights projected onto >= 0 at build
and, through :func:`project_nonneg`, after every step). :data:`HEADS` maps the card's ``head`` field
to the strategy; :func:`head_for` picks the one of a run's settings.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from medcnn.evaluation.findings import finding_metrics, summarize_findings
from medcnn.evaluation.metrics import roc_auc
from medcnn.evaluation.operating_points import choose_operating_point
from medcnn.models.outputs import sigmoid_t
from medcnn.training import losses, multilabel
from medcnn.training.config import TrainConfig
from medcnn.training.data import DisplayCache, ImageDataset, load_training_data
from medcnn.training.findings import FindingsData, load_findings_data
from medcnn.training.meta import build_card, calibrate, final_metrics
from medcnn.training.state import warn

if TYPE_CHECKING:
    from medcnn.models.card import ModelCard

__all__ = ["HEADS", "HeadStrategy", "RunRows", "SigmoidHead", "SoftmaxHead", "freeze_head_bias", "head_for",
           "head_layer", "nonneg_head", "project_nonneg"]


@dataclass
class RunRows:
    """The train + val rows of a run, as its head reads them.

    Attributes:
        df: Train and val rows (``split`` column), test rows dropped.
        labels: The model's outputs in logit order (classes or findings).
        positive: The label the run monitors and whose threshold is the card's ``threshold``.
        n_test: Test rows left out.
        note: How the rows were chosen, for the run's first progress line.
        targets: (len(df), C) float 1 / 0 / NaN for a sigmoid head; None: class indices from ``label``.
        findings: What a sigmoid head read besides (specs, counts, dropped rows).
    """

    df: pd.DataFrame
    labels: list[str]
    positive: str
    n_test: int
    note: str
    targets: np.ndarray | None = None
    findings: FindingsData | None = None

    @property
    def pos(self) -> int:
        """Index of :attr:`positive` among :attr:`labels`."""
        return self.labels.index(self.positive)

    def dataset(self, split: str, pipeline: Any, cache: DisplayCache) -> ImageDataset:
        """The rows of one split (``"train"`` / ``"val"``) as a cached dataset."""
        sel = self.df["split"].to_numpy() == split
        return ImageDataset(self.df[sel], pipeline, self.labels, cache=cache,
                            targets=None if self.targets is None else self.targets[sel])


class HeadStrategy(ABC):
    """What a training run needs to know about its output layer (one subclass per head kind).

    Not the decision rule (:class:`medcnn.models.head.Head`, ``card.head_rule``): that one says what
    a trained model's outputs mean; this one says how a run trains them.

    A head holds no state of a run: the run passes it what each hook needs.
    """

    #: The card's ``head`` field.
    name: ClassVar[str]
    #: What the head trains, in messages ("single-label", "multi-label").
    title: ClassVar[str]
    #: Whether ``cross_validate`` (``--folds``) is available for this head.
    cross_validates: ClassVar[bool] = False

    @abstractmethod
    def rows(self, cfg: TrainConfig) -> RunRows:
        """Read the labels of ``cfg.data`` and choose the train + val rows.

        Raises:
            ValueError: labels or settings that do not fit this head (the message says what to change).
        """

    @abstractmethod
    def loss(self, cfg: TrainConfig, train_ds: ImageDataset) -> nn.Module:
        """The training loss ``(logits (B, C) float32, targets) -> scalar`` (mean over the batch).

        Raises:
            ValueError: an ``--imbalance`` setting this head has no form of.
        """

    @abstractmethod
    def val_metrics(self, logits: np.ndarray, ds: ImageDataset, pos: int, val_by: str | None) -> dict[str, Any]:
        """Validation metrics of one epoch from the (N, C) logits of ``ds``.

        Returns:
            At least ``val_loss`` and ``val_auc`` (None when undefined), and ``val_auc_by``
            (group -> AUC) with ``val_by``: what the early-stopping monitors read.
        """

    def box_masks(self, masks: torch.Tensor, train_ds: ImageDataset, pos: int) -> torch.Tensor:
        """The box masks (N, H, W) of the training rows, NaN for rows with no box label."""
        return masks

    @abstractmethod
    def card(self, cfg: TrainConfig, rows: RunRows, pipeline: Any, val_ds: ImageDataset,
             result: dict[str, Any], device: torch.device) -> ModelCard:
        """Calibrate on validation and fill the model card of a finished run.

        Args:
            cfg: The run's settings.
            rows: What :meth:`rows` returned.
            pipeline: The run's preprocessing pipeline.
            val_ds: The validation rows.
            result: What :func:`medcnn.training.fit.fit` returned (best weights' ``val_logits``).
            device: Where the run trained.
        """

    def shape_model(self, model: nn.Module, cfg: TrainConfig) -> nn.Linear | None:
        """Apply ``--head-bias`` and ``--nonneg-head`` to a fresh model (in place).

        Returns:
            The final layer whose weights :func:`project_nonneg` keeps >= 0 after every step, or None.
        """
        if cfg.head_bias is not None:
            freeze_head_bias(model, cfg.head_bias)
        return nonneg_head(model) if cfg.nonneg_head else None


class SoftmaxHead(HeadStrategy):
    """One class per image (``--classes``): softmax over the classes, one operating point."""

    name = "softmax"
    title = "single-label"
    cross_validates = True

    def rows(self, cfg: TrainConfig) -> RunRows:
        df, classes, positive, n_test = load_training_data(cfg)
        return RunRows(df, classes, positive, n_test,
                       note=f"({n_test} test rows left out); classes {classes}, positive {positive!r}")

    def loss(self, cfg: TrainConfig, train_ds: ImageDataset) -> nn.Module:
        return losses.make_loss(cfg.imbalance, train_ds.targets, len(train_ds.labels), cfg.focal_gamma)

    def val_metrics(self, logits: np.ndarray, ds: ImageDataset, pos: int, val_by: str | None) -> dict[str, Any]:
        """Cross-entropy, the AUC of the positive label against the rest and, with ``val_by``, per group."""
        t = torch.from_numpy(logits)
        y = torch.from_numpy(ds.targets)
        prob = torch.softmax(t, 1)[:, pos].numpy()
        yb = (ds.targets == pos).astype(int)
        m: dict[str, Any] = {"val_loss": float(F.cross_entropy(t, y)) if len(y) else float("nan"),
                             "val_auc": roc_auc(yb, prob)}
        if val_by:
            vals = ds.df[val_by].astype(str).fillna("NA").to_numpy()
            m["val_auc_by"] = {str(v): roc_auc(yb[vals == v], prob[vals == v]) for v in sorted(set(vals))}
        return m

    def card(self, cfg: TrainConfig, rows: RunRows, pipeline: Any, val_ds: ImageDataset,
             result: dict[str, Any], device: torch.device) -> ModelCard:
        """Temperature and Youden threshold of the positive label; metrics at that threshold."""
        cal = calibrate(result["val_logits"], val_ds.targets, rows.pos, enabled=cfg.calibrate)
        metrics = final_metrics(result["val_logits"], val_ds, rows.pos, cal, cfg.val_by, cfg.n_boot, cfg.seed)
        return build_card(cfg, rows.labels, rows.positive, pipeline, rows.df, rows.n_test, result, cal, metrics,
                          device)


class SigmoidHead(HeadStrategy):
    """Findings (``--findings``): one sigmoid per finding, unknown labels left out of every loss."""

    name = "sigmoid"
    title = "multi-label"

    def rows(self, cfg: TrainConfig) -> RunRows:
        data = load_findings_data(cfg)
        names = data.names
        positive = cfg.positive or names[0]
        if positive not in names:
            raise ValueError(f"--positive {positive!r} is not one of the findings {names}")
        note = (f"({data.n_test} test rows left out, {data.duplicates} duplicate images and "
                f"{sum(data.excluded.values())} excluded rows dropped); findings {names}")
        return RunRows(data.df, names, positive, data.n_test, note, targets=data.targets, findings=data)

    def loss(self, cfg: TrainConfig, train_ds: ImageDataset) -> nn.Module:
        return multilabel.make_multilabel_loss(cfg.imbalance, train_ds.targets)

    def val_metrics(self, logits: np.ndarray, ds: ImageDataset, pos: int, val_by: str | None) -> dict[str, Any]:
        """Masked BCE, the mean AUC over findings (``val_auc``) and the AUC of each finding."""
        groups = ds.df[val_by].astype(str).fillna("NA").to_numpy() if val_by else None
        return multilabel.multilabel_val_metrics(logits, ds.targets, ds.labels, groups)

    def box_masks(self, masks: torch.Tensor, train_ds: ImageDataset, pos: int) -> torch.Tensor:
        """No box loss where the boxed finding (``pos``) itself is unknown."""
        masks[torch.from_numpy(np.isnan(train_ds.targets[:, pos]))] = float("nan")
        return masks

    def card(self, cfg: TrainConfig, rows: RunRows, pipeline: Any, val_ds: ImageDataset,
             result: dict[str, Any], device: torch.device) -> ModelCard:
        """Per finding a temperature and the policy's operating point on validation, and its metrics there.

        A finding whose point has no useful CI on validation is not presented (``shown: False``, the
        reason in words); the test-AUC rule of ``evaluate --write-card`` may hide more."""
        names, data = rows.labels, rows.findings
        cal = multilabel.calibrate_findings(result["val_logits"], val_ds.targets, names, enabled=cfg.calibrate)
        temps = np.array([cal[n]["temperature"] for n in names])
        thresholds = np.array([cal[n]["threshold"] for n in names])
        prob = sigmoid_t(result["val_logits"], temps)
        by = {cfg.val_by: val_ds.df[cfg.val_by].astype(str).to_numpy()} if cfg.val_by else None
        per = finding_metrics(prob, val_ds.targets, names, thresholds, groups=val_ds.df["group"].to_numpy(),
                              by=by, n_boot=cfg.n_boot, seed=cfg.seed)
        card = build_card(cfg, names, rows.positive, pipeline, rows.df, rows.n_test, result,
                          {"temperature": 1.0, "threshold": float(cal[rows.positive]["threshold"])}, {}, device)
        card.head = self.name
        card.findings = {n: {"temperature": float(cal[n]["temperature"]), "threshold": float(cal[n]["threshold"]),
                             "shown": True, "reason": "not yet evaluated on test", "label_source": s.source,
                             **self._operating_point(prob[:, j], val_ds, j, cal[n], cfg)}
                         for j, (n, s) in enumerate(zip(names, data.specs))}
        card.metrics = {"val": {"model": card.name, **summarize_findings(per), "per_finding": per}}
        card.training["calibration"] = cal
        card.training["findings"] = {
            "specs": [{"name": s.name, "column": s.column or cfg.findings_column,
                       "kind": "binary" if s.column else "list"} for s in data.specs],
            "counts": data.counts, "excluded_rows": data.excluded, "duplicate_images_dropped": data.duplicates,
            "dedupe_by": list(cfg.dedupe_by), "exclude": list(cfg.exclude), "init": cfg.init,
        }
        unfitted = [n for n in names if cal[n]["fitted_on"] is None]
        if unfitted:
            warn("some findings kept T = 1 / threshold 0.5: " + ", ".join(unfitted))
        return card

    @staticmethod
    def _operating_point(prob: np.ndarray, val_ds: ImageDataset, j: int, cal: dict[str, Any],
                         cfg: TrainConfig) -> dict[str, Any]:
        """The policy's verdict on finding ``j``'s validation point (patient bootstrap): card fields."""
        if cal["fitted_on"] is None:
            return {"shown": False, "operating_point_shown": False,
                    "reason": f"no operating point could be chosen: {cal['note']}",
                    "operating_point_reason": cal["note"]}
        ok = ~np.isnan(val_ds.targets[:, j])
        op = choose_operating_point(val_ds.targets[ok, j], prob[ok], groups=val_ds.df["group"].to_numpy()[ok],
                                    n_boot=cfg.n_boot, seed=cfg.seed)
        return {"threshold": float(np.clip(op.threshold, 1e-4, 1 - 1e-4)), "rule": op.rule, "val": op.val,
                "shown": op.shown, "operating_point_shown": op.shown, "operating_point_reason": op.reason,
                "reason": f"not yet evaluated on test; {op.reason}" if op.shown else op.reason}


#: The card's ``head`` field -> the strategy that trains it.
HEADS: dict[str, type[HeadStrategy]] = {"softmax": SoftmaxHead, "sigmoid": SigmoidHead}


def head_for(cfg: TrainConfig) -> HeadStrategy:
    """The head a run trains: sigmoid with ``cfg.findings``, else softmax."""
    return HEADS["sigmoid" if cfg.findings else "softmax"]()


# --------------------------------------------------------------------------- final-layer options
def head_layer(model: nn.Module, option: str) -> nn.Linear:
    """The model's last linear layer (with a bias); ``option`` names the setting that needs it.

    Raises:
        ValueError: the model has no linear layer with a bias.
    """
    fc = next((m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear)), None)
    if fc is None or fc.bias is None:
        raise ValueError(f"{option} needs a model whose last layer is a linear layer with a bias")
    return fc


def project_nonneg(fc: nn.Linear) -> nn.Linear:
    """Clamp ``fc``'s weights to >= 0 in place (the projection of ``train --nonneg-head``)."""
    with torch.no_grad():
        fc.weight.clamp_(min=0.0)
    return fc


def nonneg_head(model: nn.Module) -> nn.Linear:
    """Project the final layer's weights onto >= 0 (``train --nonneg-head``); returns that layer, which
    :func:`project_nonneg` projects again after every step.

    On a global-pool + linear head over non-negative (post-ReLU) features, every class activation map
    is then >= 0: an output can only be raised by image features, never lowered, so "normal" is the
    absence of evidence, not negative evidence. A film's Grad-CAM map is empty only when its score is
    at its floor (the bias), so no film above an operating point set above the bias has an empty map,
    and the map holds all of the evidence for the score.
    """
    return project_nonneg(head_layer(model, "--nonneg-head"))


def freeze_head_bias(model: nn.Module, value: float) -> nn.Linear:
    """Fix the bias of the model's last linear layer at ``value`` and leave it out of training.

    With a global-pool + linear head the logit is ``mean(CAM) + bias``. A bias below every operating
    point's logit means no film reaches the operating point without positive evidence, so its
    Grad-CAM map on the layer before the pooling cannot be empty (the map's mean is ``logit - bias``
    > 0). Trained freely, the bias settles near 0, above the thresholds of rare findings, and the
    network can call a finding by "too little normal evidence" with an all-negative map.

    Raises:
        ValueError: the model has no linear layer with a bias.
    """
    fc = head_layer(model, "--head-bias")
    with torch.no_grad():
        fc.bias.fill_(float(value))
    fc.bias.requires_grad_(False)
    return fc
