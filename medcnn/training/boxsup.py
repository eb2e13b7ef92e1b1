"""Box supervision: teach the network *where* the finding is, not just *whether*.

Radiologists' opacity boxes (RSNA: ``rsna_boxes_1024``) become a mask per training
image (all zeros for images without boxes, e.g. NORMAL). During training, a 1x1
convolution reads the Grad-CAM target layer's feature map and is trained with
binary cross-entropy to predict the mask downsampled to that map's size. The auxiliary
head exists only during training: it is not part of the checkpoint, so the shipped
model and its inference are unchanged. Its effect is on the shared features: the
classifier's evidence is pushed into the lungs' opacities instead of acquisition cues
(portable-film markers, borders), and Grad-CAM on that layer localises them.

Related work: attention / localisation supervision for weakly labelled chest X-rays,
e.g. Li et al., "Thoracic disease identification and localization with limited
supervision", CVPR 2018 (a small set of box annotations guiding a CNN's patch scores).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from medcnn.io import read_image
from medcnn.preprocess import Pipeline
from medcnn.training.boxes import boxes_mask, boxes_to_display, parse_boxes

__all__ = ["BOX_MODES", "box_masks", "BoxSupervision"]

#: Box-supervision modes (``--box-mode``); see :class:`BoxSupervision`.
BOX_MODES = ("mask", "cam", "cam_positive", "cam_difference")


def box_masks(df: pd.DataFrame, column: str, pipeline: Pipeline, ref_size: float = 1024) -> np.ndarray:
    """Box masks in display geometry for every row of ``df``.

    Args:
        df: rows with an absolute ``path`` and the box column (``"x y w h;..."`` in
            ``ref_size`` pixel coordinates of the original film; empty = no box).
        column: name of the box column.
        pipeline: the model's preprocessing (for pad/crop and resize geometry).
        ref_size: side of the grid the boxes are expressed in.

    Returns:
        float32 (N, H, W) in {0, 1} at the pipeline's input size.

    Raises:
        ValueError: the column is missing.
    """
    if column not in df.columns:
        raise ValueError(f"box column {column!r} not in the data; columns: {', '.join(map(str, df.columns))}")
    h, w = pipeline.input_size
    out = np.zeros((len(df), h, w), np.float32)
    for i, (path, text) in enumerate(zip(df["path"], df[column])):
        boxes = parse_boxes(text)
        if not boxes:
            continue
        img = read_image(path)
        steps = pipeline(img, keep_steps=True).steps
        disp = boxes_to_display(boxes, img.pixels.shape, steps, ref_size)
        out[i] = boxes_mask((h, w), disp)
    return out


class BoxSupervision:
    """Auxiliary box loss on one layer of a model (training only).

    Two modes:

    * ``"mask"``: a separate 1x1-conv head predicts the box mask from the layer's
      features (BCE). It shapes the shared features but leaves the classifier free to
      use other evidence.
    * ``"cam"``: supervise the class activation map itself. For a network whose head is
      global average pooling + linear (our ResNets), the positive class logit is the
      spatial mean of ``CAM(i, j) = sum_k W[pos, k] A_k(i, j)`` plus a bias, and
      Grad-CAM on that layer is ``ReLU(CAM) / (h w)`` (Zhou et al. 2016; Selvaraju et al.
      2017, sec. 3.1). ``CAM + c`` (c a learned offset) is trained with BCE to be the box
      mask: high inside radiologists' boxes, low elsewhere and everywhere on images
      without boxes. The positive logit then *is* pooled evidence from the boxed regions,
      and Grad-CAM of the positive class points at them. (A loss on the share of ReLU(CAM)
      outside the boxes alone has a degenerate minimum: an all-negative CAM, with the
      decision moved to the other logit.) Similar in spirit to attention supervision in
      GAIN (Li et al., CVPR 2018) and to box-supervised MIL for chest X-rays (Li et al.,
      CVPR 2018, "Thoracic disease identification and localization with limited supervision").

    Use as a context manager around the training loop; the forward hook is removed on
    exit, even after an error.

    Args:
        model: the network being trained.
        layer: dotted name of the supervised layer (the card's Grad-CAM target layer).
        weight: weight of the auxiliary loss added to the classification loss.
        mode: ``"mask"``, ``"cam"``, ``"cam_positive"`` or ``"cam_difference"`` (the map of the
            positive logit minus the mean of the others: for a 2-logit softmax head, the quantity the
            probability depends on, which is what the app explains). ``"cam_positive"`` is ``"cam"``
            with the offset kept at or below 0 (``c = -softplus(r)``): with a free offset the mask can
            be matched by a map that is negative everywhere, boxes included (``c > 0`` lifts it), and
            Grad-CAM, which keeps only the positive part, is then empty on films with boxes. With
            ``c <= 0`` a box can only be predicted by a positive map inside it.
        classifier: dotted name of the final linear layer (``"cam"`` mode).
        target: class index whose CAM is supervised (``"cam"`` mode; the positive label).
    """

    def __init__(self, model: nn.Module, layer: str, weight: float = 1.0, mode: str = "mask",
                 classifier: str = "fc", target: int = 1):
        if weight < 0:
            raise ValueError(f"box loss weight must be >= 0, got {weight}")
        if mode not in BOX_MODES:
            raise ValueError(f"box supervision mode must be one of {', '.join(BOX_MODES)}, got {mode!r}")
        self.model, self.layer, self.weight, self.mode = model, layer, float(weight), mode
        self.target = int(target)
        if mode != "mask":
            try:
                fc = model.get_submodule(classifier)
            except AttributeError:
                fc = None
            if not isinstance(fc, nn.Linear):
                raise ValueError(f"'cam' box supervision needs a global-pool + linear head; {classifier!r} is "
                                 f"not an nn.Linear of this model (use mode 'mask')")
            self.fc = fc
            # c = -2 at the start in every mode; "cam_positive" stores r with c = -softplus(r)
            self.offset = nn.Parameter(torch.tensor(-2.0 if mode != "cam_positive" else math.log(math.expm1(2.0))))
        self.module = model.get_submodule(layer)
        self._features: torch.Tensor | None = None
        self._handle: Any = None
        self.head: nn.Conv2d | None = None
        if mode == "mask":
            self.head = nn.Conv2d(self._probe_channels(), 1, kernel_size=1)
            nn.init.zeros_(self.head.weight)
            nn.init.constant_(self.head.bias, -2.0)  # most of an image holds no opacity

    def _probe_channels(self) -> int:
        """Channels of the supervised layer's output, from one eval-mode forward pass of zeros.

        The model's train/eval mode and its hooks are restored even when the forward raises.
        """
        p = next(self.model.parameters())
        in_ch = next(m for m in self.model.modules() if isinstance(m, nn.Conv2d)).in_channels
        seen: list[int] = []
        was_training = self.model.training
        h = self.module.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
        try:
            self.model.eval()
            with torch.no_grad():
                self.model(torch.zeros(1, in_ch, 64, 64, device=p.device, dtype=p.dtype))
        finally:
            h.remove()
            self.model.train(was_training)
        return seen[0]

    def parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters besides the model's: the mask head (``"mask"``) or the CAM offset (``"cam"``)."""
        return iter([self.offset]) if self.head is None else self.head.parameters()

    def __enter__(self) -> "BoxSupervision":
        def hook(module, inputs, output):
            self._features = output
        self._handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._features = None

    def loss(self, masks: torch.Tensor) -> torch.Tensor:
        """Weighted BCE between the predicted and the true mask at feature resolution.

        Args:
            masks: float (N, H, W) in [0, 1] at input resolution, aligned with the batch
                of the last forward pass (after the same geometric augmentation). Rows holding
                NaN have no box label (multi-label rows where the boxed finding is unknown) and
                are left out of the loss.
        """
        if self._features is None:
            raise RuntimeError("BoxSupervision.loss() needs a forward pass inside the context")
        feats = self._features.float()
        known = ~torch.isnan(masks.flatten(1)).any(1).to(feats.device)  # NaN mask: no box label for this row
        if not bool(known.all()):
            if not bool(known.any()):
                return feats.sum() * 0.0
            feats, masks = feats[known], masks[known.to(masks.device)]
        if self.mode != "mask":
            return self._cam_loss(feats, masks)
        self.head.to(feats.device)
        pred = self.head(feats)  # (N, 1, h, w)
        target = F.adaptive_avg_pool2d(masks[:, None].to(feats.device), pred.shape[-2:])
        return self.weight * F.binary_cross_entropy_with_logits(pred, target)

    def _cam_loss(self, feats: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if feats.shape[1] != self.fc.in_features:
            raise ValueError(f"layer {self.layer!r} has {feats.shape[1]} channels but the classifier expects "
                             f"{self.fc.in_features}: 'cam' mode needs the layer right before the pooling")
        w = self.fc.weight.float()
        weights = w[self.target]
        if self.mode == "cam_difference":
            others = [i for i in range(w.shape[0]) if i != self.target]
            weights = weights - w[others].mean(0)
        cam = torch.einsum("nkhw,k->nhw", feats, weights)
        target = F.adaptive_avg_pool2d(masks[:, None].to(feats.device), cam.shape[-2:])[:, 0]
        offset = self.offset.to(cam.device)
        if self.mode == "cam_positive":
            offset = -F.softplus(offset)
        return self.weight * F.binary_cross_entropy_with_logits(cam + offset, target)
