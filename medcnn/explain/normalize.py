"""The heat-map convention: how a signed attribution becomes a map in [0, 1] (the ONE place).

It lives next to its producer (:func:`medcnn.explain.explain` returns ``Explanation.heatmap``
in this convention); :mod:`medcnn.visualize` draws such maps and re-exports both functions.
numpy only: importing it imports neither torch nor matplotlib.

Convention: float32, (H, W), [0, 1], 1 = most important.

1. Sign (:func:`evidence`): ``signed=False`` uses the magnitude ``|a|`` (evidence for or
   against the class both count as "important", the usual IG / SmoothGrad display);
   ``signed=True`` keeps only the positive part ``max(a, 0)`` (evidence *for* the class:
   Grad-CAM, occlusion). Each attribution method declares which one it uses
   (:class:`medcnn.explain.base.Display`).
   A pixel-level method may declare a smoothed display (``Display.SMOOTHED_MAGNITUDE``):
   :func:`smooth` then blurs the shown part with a Gaussian before step 2 (display only).
2. Scale: divide by the ``clip_percentile``-th percentile of the values (99.5 by
   default) and clip to [0, 1], so a handful of extreme pixels cannot make the rest of the
   map invisible. No minimum is subtracted: 0 always means "no evidence". If the
   percentile is 0 (sparse map) the maximum is used; an all-zero map stays all zero.
"""
from __future__ import annotations

import numpy as np

__all__ = ["evidence", "normalize_heatmap", "smooth"]


def evidence(attr: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """Step 1 of the convention: the part of a signed attribution that a heat map shows.

    Args:
        attr: (H, W) raw attribution (any real dtype).
        signed: False: magnitude ``|attr|``; True: positive part ``max(attr, 0)``.

    Returns:
        float64 array of the same shape, >= 0.

    Raises:
        ValueError: non-finite values.
    """
    a = np.asarray(attr, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError("attribution contains NaN or infinite values")
    return np.maximum(a, 0.0) if signed else np.abs(a)


def normalize_heatmap(attr: np.ndarray, *, signed: bool = False, clip_percentile: float | None = 99.5) -> np.ndarray:
    """Map a raw attribution to the heat-map convention: float32, [0, 1], 1 = most important.

    Args:
        attr: (H, W) raw attribution (any real dtype).
        signed: False: magnitude ``|attr|``; True: positive part only (:func:`evidence`).
        clip_percentile: Percentile used as the value of 1.0 (None or 100: the maximum).

    Returns:
        float32 array of the same shape in [0, 1].

    Raises:
        ValueError: non-finite values or a percentile outside (0, 100].
    """
    a = evidence(attr, signed=signed)
    if clip_percentile is not None and not 0 < clip_percentile <= 100:
        raise ValueError(f"clip_percentile must be in (0, 100], got {clip_percentile}")
    hi = float(np.percentile(a, clip_percentile)) if clip_percentile is not None and a.size else 0.0
    if hi <= 0:
        hi = float(a.max()) if a.size else 0.0
    if hi <= 0:
        return np.zeros(a.shape, dtype=np.float32)
    return np.clip(a / hi, 0.0, 1.0).astype(np.float32)


def smooth(shown: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a shown (non-negative) map, for display: separable, edges reflected.

    The total is kept up to the edges (the kernel sums to 1), so a smoothed map says where the
    attribution mass is at the scale ``sigma``; finer detail is averaged away.

    Args:
        shown: (H, W) map (the output of :func:`evidence`).
        sigma: Standard deviation in pixels (0: unchanged). The kernel spans +- 3 sigma,
            cut to the image.

    Returns:
        float64 array of the same shape.

    Raises:
        ValueError: negative ``sigma``.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    a = np.asarray(shown, dtype=np.float64)
    if sigma == 0 or a.size == 0:
        return a
    for axis in (0, 1):
        radius = min(int(np.ceil(3 * sigma)), a.shape[axis] - 1)
        kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
        kernel /= kernel.sum()
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(a, pad, mode="reflect") if radius else a
        a = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="valid"), axis, padded)
    return a
