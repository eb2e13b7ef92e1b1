"""Is there anything in the image? A flat field or a smooth gradient is not an image of anatomy.

Every radiograph or CT slice has detail at the scale of a few pixels of the model's input: ribs,
vessels, borders, detector noise. An image that a quadratic surface fits almost exactly (a blank
frame, a ramp, a vignette) has none, and no learned statistic is needed to say it is not what a
model reads: the gate's kind question, taught that exposure and contrast vary between hospitals, can
otherwise take a grey ramp for a very blurred film. The rule is fixed, not fitted: the image is
featureless when, on a 64 x 64 area-downsampled copy of the model's input, the RMS residual of the
best quadratic surface is below :data:`MIN_DETAIL` of the image's 1-99% intensity range (a single
grey level counts as none). Measured on the default model's input: validation films 0.064 at the
least (1st percentile 0.092), their acquisition variants 0.106, other hospitals' films 0.126, CT
slices 0.197; grey ramps 0.001.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MIN_DETAIL", "detail", "featureless"]

#: Residual RMS / intensity range below which an image has no detail.
MIN_DETAIL = 0.01
_SIDE = 64


def _design(side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1) - 0.5
    return np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], axis=-1).reshape(-1, 6)


_A = _design(_SIDE)
_PINV = np.linalg.pinv(_A)


def detail(x: Any) -> np.ndarray:
    """Residual RMS of a quadratic surface over the 1-99% range, per image: float64 (N,).

    Args:
        x: float (N, 1, H, W) pipeline output (torch tensor or array).
    """
    import torch
    import torch.nn.functional as F

    small = F.adaptive_avg_pool2d(torch.as_tensor(x).float().cpu(), _SIDE).reshape(len(x), -1).double().numpy()
    residual = small - (small @ _PINV.T) @ _A.T
    lo, hi = np.quantile(small, [0.01, 0.99], axis=1)
    span = hi - lo
    flat = span < 1e-6  # one grey level: nothing at all
    return np.where(flat, 0.0, np.sqrt((residual ** 2).mean(1)) / np.where(flat, 1.0, span))


def featureless(x: Any) -> list[str | None]:
    """Per image: None when it has detail, else the sentence that withholds it."""
    return [None if d >= MIN_DETAIL else
            "the image has no detail (a flat field or a smooth gradient): it is not an image this model reads"
            for d in detail(x)]
