"""The gate's statistics: a probabilistic-PCA Gaussian per stage and its Mahalanobis distance.

Tipping & Bishop (1999): the top ``k`` principal directions of the standardised features keep
their own variance, the rest share one residual variance, so ~1,000 images estimate a covariance
of thousands of dimensions. The distance is the Mahalanobis detector of Lee et al. (2018).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Stage", "fit_stage", "stages_from", "stages_state"]


@dataclass
class Stage:
    """One stage's fitted Gaussian (standardisation, principal directions, variances)."""

    mean: np.ndarray  # (D,) standardisation
    scale: np.ndarray  # (D,)
    components: np.ndarray  # (k, D) principal directions of the standardised features
    variances: np.ndarray  # (k,)
    residual_variance: float
    median: float = 1.0  # median distance on validation

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of ``x`` (N, D) -> (N,)."""
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        proj = z @ self.components.T
        residual = np.maximum((z * z).sum(1) - (proj * proj).sum(1), 0.0)
        return ((proj * proj) / self.variances).sum(1) + residual / self.residual_variance


def fit_stage(x: np.ndarray, k: int) -> Stage:
    """Fit one stage on in-distribution features (N, D) keeping ``k`` principal directions.

    Raises:
        ValueError: fewer than 3 images.
    """
    x = np.asarray(x, np.float64)
    n, d = x.shape
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    lam = s**2 / max(n - 1, 1)
    k = int(min(k, len(lam) - 1, d - 1))
    if k < 1:
        raise ValueError(f"need at least 3 in-distribution images to fit the gate, got {n}")
    rest = lam[k:].sum() / max(d - k, 1)
    return Stage(mean, scale, vt[:k].copy(), np.maximum(lam[:k], 1e-9), float(max(rest, 1e-9)))


def stages_state(stages: Sequence[Stage], prefix: str) -> dict[str, Any]:
    """Plain tensors of ``stages`` under keys ``{prefix}{i}.{name}`` (for :func:`torch.save`)."""
    import torch

    out: dict[str, Any] = {}
    for i, s in enumerate(stages):
        for name in ("mean", "scale", "components", "variances"):
            out[f"{prefix}{i}.{name}"] = torch.from_numpy(np.asarray(getattr(s, name), np.float32))
        out[f"{prefix}{i}.residual_variance"] = s.residual_variance
        out[f"{prefix}{i}.median"] = s.median
    return out


def stages_from(st: dict[str, Any], prefix: str, n: int) -> list[Stage]:
    """The ``n`` stages stored by :func:`stages_state` under ``prefix``."""
    stages = []
    for i in range(n):
        arr = {k: st[f"{prefix}{i}.{k}"].double().numpy() for k in ("mean", "scale", "components", "variances")}
        stages.append(Stage(**arr, residual_variance=float(st[f"{prefix}{i}.residual_variance"]),
                            median=float(st[f"{prefix}{i}.median"])))
    return stages
