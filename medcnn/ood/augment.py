"""Acquisition changes of an in-distribution film: what another hospital's film differs by.

The gate's *kind* question (is this the kind of image the model reads?) must not move when only
the acquisition changes: another scanner's exposure and processing, detector noise, sharpness and
resolution, JPEG compression, collimation borders and framing, a slightly tilted patient, burned-in
text and side markers. :func:`acquisition_variant` draws a random combination of those changes for
one film; the kind statistics are fitted on the training films *and* such variants of them, so
these differences fall inside what the gate calls "the kind of image this model reads". No image
of another kind is used.

Each change is one small function ``(pixels in 0..1, rng) -> pixels in 0..1`` in
:data:`ACQUISITION`, so a test can apply one change at a time (``only=...``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["ACQUISITION", "IN_FRAME", "acquisition_variant", "apply_change"]


def _gamma(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return p ** float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))


def _contrast(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo, hi = np.quantile(p, [rng.uniform(0.0, 0.15), rng.uniform(0.85, 1.0)])
    if rng.random() < 0.5:  # a flatter film: the range squeezed instead of stretched
        return 0.5 + (p - 0.5) * rng.uniform(0.5, 0.9) + rng.uniform(-0.1, 0.1)
    return (p - lo) / max(hi - lo, 1e-3)


def _equalise(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    u8 = np.clip(p * 255, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        return cv2.equalizeHist(u8) / 255.0
    clahe = cv2.createCLAHE(clipLimit=float(rng.uniform(1.5, 4.0)), tileGridSize=(8, 8))
    return clahe.apply(u8) / 255.0


def _noise(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return p + rng.normal(0.0, rng.uniform(0.01, 0.05), p.shape)


def _blur(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(p, (0, 0), float(rng.uniform(0.5, 2.5)) * max(p.shape) / 512)


def _resolution(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    side = int(rng.uniform(96, 256))
    h, w = p.shape
    small = cv2.resize(p, (max(8, side * w // max(h, w)), max(8, side * h // max(h, w))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", np.clip(p * 255, 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 70))])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) / 255.0 if ok else p


def _collimation(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = p.copy()
    h, w = p.shape
    value = float(rng.choice([0.0, 1.0, rng.uniform(0.0, 1.0)]))
    for side in range(4):
        if rng.random() < 0.6:
            k = int(rng.uniform(0.02, 0.12) * (h if side < 2 else w))
            if side == 0:
                p[:k] = value
            elif side == 1:
                p[h - k:] = value
            elif side == 2:
                p[:, :k] = value
            else:
                p[:, w - k:] = value
    return p


def _crop(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = p.shape
    if rng.random() < 0.7:  # framed tighter (or wider, below) than the training films
        fh, fw = rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)
        y, x = int(rng.uniform(0, 1 - fh) * h), int(rng.uniform(0, 1 - fw) * w)
        return p[y:y + int(fh * h), x:x + int(fw * w)]
    pad = int(rng.uniform(0.03, 0.15) * max(h, w))
    return cv2.copyMakeBorder(p, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=float(rng.uniform(0, 0.2)))


def _rotation(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = p.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-10, 10)), 1.0)
    return cv2.warpAffine(p, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=float(p.min()))


def _text(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    h, w = p.shape
    scale = max(h, w) / 512
    words = ["R", "L", "AP", "PA", "PORTABLE", "SUPINE", "ERECT", f"{int(rng.integers(1, 28)):02d}/{int(rng.integers(1, 12)):02d}"]
    out = p.copy()
    for _ in range(int(rng.integers(1, 4))):
        mask = np.zeros((h, w), np.uint8)  # OpenCV draws text on 8-bit images only
        text = str(rng.choice(words))
        x = int(rng.choice([rng.uniform(0.02, 0.2), rng.uniform(0.7, 0.9)]) * w)
        y = int(rng.choice([rng.uniform(0.06, 0.2), rng.uniform(0.85, 0.97)]) * h)
        cv2.putText(mask, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.5, 1.2)) * scale,
                    255, max(1, int(2 * scale)))
        out[mask > 0] = float(rng.choice([1.0, 0.0]))
    return out


#: name -> one acquisition change ``(pixels in 0..1, rng) -> pixels``.
ACQUISITION: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "gamma": _gamma, "contrast": _contrast, "equalise": _equalise, "noise": _noise, "blur": _blur,
    "resolution": _resolution, "jpeg": _jpeg, "collimation": _collimation, "crop": _crop,
    "rotation": _rotation, "text": _text,
}
#: Order the changes are applied in (geometry and burn-in first, then the detector, then storage).
_ORDER = ("crop", "rotation", "collimation", "text", "gamma", "contrast", "equalise", "blur",
          "resolution", "noise", "jpeg")
#: The changes that keep every pixel where it was (no crop, no turn): safe beside labels drawn on
#: the image (radiologists' boxes) and beside training's own geometric augmentation.
IN_FRAME: tuple[str, ...] = tuple(n for n in _ORDER if n not in ("crop", "rotation"))


def _unit(pixels: np.ndarray) -> tuple[np.ndarray, float, float]:
    p = np.asarray(pixels, np.float64)
    lo, hi = float(p.min()), float(p.max())
    return (p - lo) / max(hi - lo, 1e-6), lo, hi


def apply_change(pixels: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """One change of :data:`ACQUISITION` applied to a greyscale image, in its own value range.

    Raises:
        KeyError: ``name`` is not a known change.
    """
    fn = ACQUISITION[name]
    p, lo, hi = _unit(pixels)
    out = np.clip(fn(p, rng), 0.0, 1.0)
    return (out * (hi - lo) + lo).astype(np.float32)


def acquisition_variant(pixels: np.ndarray, rng: np.random.Generator, p_change: float = 0.4,
                        changes: tuple[str, ...] = _ORDER) -> np.ndarray:
    """A random combination of acquisition changes (each applied with probability ``p_change``).

    Args:
        pixels: Greyscale (H, W) image, any value range.
        rng: Random generator (seed it for reproducible fits).
        p_change: Chance of each change; at least one is always applied.
        changes: The changes to draw from, applied in the fixed order of :data:`ACQUISITION`'s
            use (all of them by default; :data:`IN_FRAME` keeps the geometry).

    Returns:
        float32 (H', W') image in the input's value range (crops and borders change the size).

    Raises:
        KeyError: a name in ``changes`` is not a known change.
    """
    unknown = sorted(set(changes) - set(_ORDER))
    if unknown:
        raise KeyError(f"unknown acquisition change(s) {unknown}; known: {list(_ORDER)}")
    order = tuple(n for n in _ORDER if n in changes)
    p, lo, hi = _unit(pixels)
    chosen = [name for name in order if rng.random() < p_change] or [str(rng.choice(order))]
    for name in chosen:
        p = np.clip(ACQUISITION[name](p, rng), 0.0, 1.0)
    return (p * (hi - lo) + lo).astype(np.float32)
