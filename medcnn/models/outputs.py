"""What a model's logits mean: calibrated probabilities, and where they stand against an operating point.

A softmax head (one label per image) shows ``softmax(logits / T)`` with the temperature ``T`` stored
in the model card. A sigmoid head (multi-label: one independent finding per output) shows
``sigmoid(z_f / T_f)`` per finding, each with its own temperature and operating point. Both
serving (:mod:`medcnn.inference`) and evaluation apply these; fitting ``T`` stays in evaluation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit, softmax

__all__ = ["card_probabilities", "relative_to_threshold", "sigmoid_t", "softmax_t"]


def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``; (N, C) -> (N, C) float64."""
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)


def sigmoid_t(logits: np.ndarray, temperatures: Any = 1.0) -> np.ndarray:
    """Calibrated per-output probabilities ``sigmoid(z / T)``; (N, C) -> (N, C) float64.

    ``temperatures`` is a scalar or one value per output (C,).
    """
    z = np.asarray(logits, dtype=np.float64)
    return expit(z / np.asarray(temperatures, dtype=np.float64))


def card_probabilities(card: Any, logits: np.ndarray) -> np.ndarray:
    """The probabilities a model card defines for its logits, (N, C) float64 (its head decides:
    :meth:`medcnn.models.head.Head.probabilities`)."""
    return card.head_rule.probabilities(logits)


def relative_to_threshold(prob: Any, threshold: Any) -> np.ndarray:
    """A probability rescaled piecewise-linearly so that its operating point maps to 0.5.

    ``p <= t`` maps to ``p / (2 t)`` and ``p > t`` to ``0.5 + (p - t) / (2 (1 - t))``: 0 and 1 stay
    put, the order is kept, and findings with different operating points become comparable
    (0.5 = "at its threshold"), as TorchXRayVision's ``op_threshs`` do.
    """
    p = np.asarray(prob, dtype=np.float64)
    t = np.clip(np.asarray(threshold, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.where(p <= t, p / (2 * t), 0.5 + (p - t) / (2 * (1 - t)))
