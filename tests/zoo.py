"""Tiny networks shared by the tests (``from zoo import SmallCNN``; tests/ is on ``sys.path`` through
its conftest, as for ``from test_pages import ...``).

Every network is deterministic: seeded, or with its weights written here, so the numbers a test
asserts do not depend on which test ran before.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["RegionMean", "SmallCNN", "linear", "multilabel_cnn"]


class SmallCNN(nn.Module):
    """conv(1->4) - relu ``r1`` - conv(4->width, stride 2) ``c2`` - relu ``r2`` - GAP - linear(width->n).

    ``(N, 1, H, W) -> (N, n_classes)`` logits; Grad-CAM reads the named layers (``"c2"``, ``"r2"``).
    Weights: PyTorch's default initialisation after ``torch.manual_seed(seed)``.
    """

    def __init__(self, n_classes: int = 2, width: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(4, width, 3, stride=2, padding=1)
        self.r2 = nn.ReLU()
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.r2(self.c2(self.r1(self.c1(x)))).mean(dim=(2, 3)))


def multilabel_cnn(n_findings: int = 3, seed: int = 0) -> SmallCNN:
    """A multi-label (sigmoid head) network: one independent logit per finding, ``c2`` 6 wide."""
    return SmallCNN(n_findings, width=6, seed=seed)


def linear(pixels: int, n_classes: int = 2, weight: Sequence[Sequence[float]] | None = None,
           bias: Sequence[float] | None = None) -> nn.Sequential:
    """``flatten - linear(pixels -> n_classes)``: logits exactly linear in the image.

    Args:
        pixels: ``H * W`` of the (N, 1, H, W) input.
        n_classes: Outputs.
        weight: ``(n_classes, pixels)`` weights written by hand; default initialisation when None.
        bias: ``(n_classes,)`` biases written by hand (zero when ``weight`` is given without one).
    """
    model = nn.Sequential(nn.Flatten(), nn.Linear(pixels, n_classes))
    if weight is not None:
        with torch.no_grad():
            model[1].weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            model[1].bias.copy_(torch.as_tensor(bias if bias is not None else [0.0] * n_classes,
                                                dtype=torch.float32))
    return model


class RegionMean(nn.Module):
    """Logits ``(-s, s)`` with ``s`` the mean of the input inside a fixed region: it attends there by
    construction. ``scale`` (1) is its one parameter."""

    def __init__(self, region: np.ndarray):
        super().__init__()
        self.register_buffer("region", torch.from_numpy(region.astype(np.float32)))
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x[:, 0] * self.region).sum((1, 2)) / self.region.sum() * self.scale
        return torch.stack([-s, s], 1)
