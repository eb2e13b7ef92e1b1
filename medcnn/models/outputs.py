"""What a model's logits mean: calibrated class probabilities.

The probability the app shows is ``softmax(logits / T)`` with the temperature ``T`` stored in the
model card (fitted on validation data by :mod:`medcnn.evaluation.calibration`). It lives with the
models because both serving (:mod:`medcnn.inference`) and evaluation apply it; fitting ``T`` stays
in evaluation.
"""
from __future__ import annotations

import numpy as np
from scipy.special import softmax

__all__ = ["softmax_t"]


def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)``; (N, C) -> (N, C) float64."""
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)
