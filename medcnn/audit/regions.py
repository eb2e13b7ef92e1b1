"""Image regions for the saliency-location audit, in display-image coordinates, and
where a map's mass lies in them.

:func:`thorax_mask` (a rough thorax / lung-field estimate for a frontal chest X-ray),
:func:`margin_mask` (where burned-in text and markers sit), :func:`boxes_mask` and the
geometry that maps radiologists' boxes from the original film to the display image
(:func:`display_geometry`, :func:`boxes_to_display`; defined in :mod:`medcnn.training.boxes`,
shared with box supervision, and re-exported here). :func:`location_metrics` measures one
map against the regions, :func:`random_baseline` the same for maps that ignore the image.

Thorax estimate (:func:`thorax_mask`), for a [0, 1] display image with bone bright:
constant padding is cut off first; Otsu threshold of a smoothed 128 px copy of the
content gives dark pixels (air: lungs and outside); dark connected components that touch
the border (outside air) are discarded; the largest remaining component of plausible
size (1.5-40 % of the image, at least a quarter of its height tall) in each half is a
lung field. The anatomical prior is the convex hull of two ellipses at the usual lung
positions of a frontal film (x 0.12-0.88, y 0.13-0.83 of the content). The thorax is
the convex hull of the two lung fields *and* the prior, dilated by 3 % of the side: Otsu
finds the dark upper lungs well but often stops at the diaphragm, the heart or an
opacity, so the prior keeps the lower lungs in; the hull adds what the segmentation
finds beyond it (large or off-centre lungs). When no lung is found on one side (or the
hull covers > 85 % of the content) the prior alone is used. Checked by eye on 16 RSNA
pneumonia films (3 segmented, 13 prior): both outline the chest roughly, and hold
69-100 % (median 100 %) of the radiologists' box area. Limits: lungs that merge with
outside air (tight crops, lateral films), large effusions or white-out lungs, and heavy
rotation defeat the segmentation; the result is a rough region, good for "mass outside
the chest", not for lung-boundary precision.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from medcnn.training.boxes import boxes_mask, boxes_to_display, display_geometry, parse_boxes  # re-exported

__all__ = [
    "boxes_mask",
    "boxes_to_display",
    "display_geometry",
    "location_metrics",
    "margin_mask",
    "parse_boxes",
    "random_baseline",
    "thorax_mask",
]

_WORK = 128  # working size of the thorax estimate


# --------------------------------------------------------------------------- regions
def _prior_thorax(h: int, w: int) -> np.ndarray:
    """Convex hull of two lung-shaped ellipses at typical PA positions (fallback)."""
    m = np.zeros((h, w), np.uint8)
    for cx in (0.30, 0.70):
        cv2.ellipse(m, (round(cx * w), round(0.48 * h)), (round(0.18 * w), round(0.35 * h)), 0, 0, 360, 1, -1)
    pts = cv2.findNonZero(m)
    cv2.fillConvexPoly(m, cv2.convexHull(pts), 1)
    return m.astype(bool)


def _content_box(x: np.ndarray, eps: float = 0.02) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the image content inside constant padding."""
    rows = np.flatnonzero(np.ptp(x, axis=1) > eps)
    cols = np.flatnonzero(np.ptp(x, axis=0) > eps)
    if rows.size < 8 or cols.size < 8:
        return 0, x.shape[0], 0, x.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _segment_lungs(x: np.ndarray) -> np.ndarray | None:
    """Thorax hull of a (h, w) [0, 1] image from its two lung fields, or None (see module doc)."""
    small = cv2.GaussianBlur(cv2.resize(x, (_WORK, _WORK), interpolation=cv2.INTER_AREA), (5, 5), 0)
    u8 = np.clip(small * 255, 0, 255).astype(np.uint8)
    if int(u8.max()) - int(u8.min()) <= 10:
        return None
    _, dark = cv2.threshold(u8, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, stats, cent = cv2.connectedComponentsWithStats(dark, connectivity=4)
    area = _WORK * _WORK
    sides: dict[str, tuple[int, int]] = {}
    for i in range(1, n):
        x0, y0, bw, bh, a = (int(v) for v in stats[i])
        touches = x0 == 0 or y0 == 0 or x0 + bw >= _WORK or y0 + bh >= _WORK
        cx, cy = cent[i] / _WORK
        if touches or not (0.015 * area <= a <= 0.40 * area) or bh < 0.25 * _WORK or not 0.15 <= cy <= 0.85:
            continue
        side = "left" if cx < 0.5 else "right"
        if a > sides.get(side, (0, 0))[0]:
            sides[side] = (a, i)
    if len(sides) < 2:
        return None
    lungs = np.isin(lab, [i for _, i in sides.values()]).astype(np.uint8)
    # Otsu finds the dark upper lungs well but often stops at the diaphragm / heart / an
    # opacity: take the hull of the lungs together with the prior (a conservative region)
    lungs |= _prior_thorax(_WORK, _WORK).astype(np.uint8)
    hull = np.zeros_like(lungs)
    cv2.fillConvexPoly(hull, cv2.convexHull(cv2.findNonZero(lungs)), 1)
    k = max(1, round(0.03 * _WORK))
    hull = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    if hull.mean() > 0.85:
        return None
    return cv2.resize(hull, (x.shape[1], x.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def thorax_mask(display: np.ndarray, *, return_method: bool = False) -> np.ndarray | tuple[np.ndarray, str]:
    """Rough thorax (lung fields + mediastinum) of a chest X-ray display image.

    See the module docstring for the method and its limits. Constant padding (from the
    pipeline's pad-to-square) is excluded first; both methods work inside the content.

    Args:
        display: float32 (H, W) in [0, 1], bone bright (``PipelineResult.display``).
        return_method: also return ``"segmented"`` or ``"prior"``.

    Returns:
        bool (H, W) mask (and the method used).

    Raises:
        ValueError: ``display`` is not a 2-D image of at least 8 x 8.
    """
    x = np.asarray(display, dtype=np.float32)
    if x.ndim != 2 or min(x.shape) < 8:
        raise ValueError(f"display must be a 2-D image of at least 8x8, got shape {x.shape}")
    top, bottom, left, right = _content_box(x)
    content = np.ascontiguousarray(x[top:bottom, left:right])
    inner = _segment_lungs(content)
    method = "segmented" if inner is not None else "prior"
    if inner is None:
        inner = _prior_thorax(*content.shape)
    out = np.zeros(x.shape, bool)
    out[top:bottom, left:right] = inner
    return (out, method) if return_method else out


def margin_mask(shape: tuple[int, int], frac: float = 0.08) -> np.ndarray:
    """bool (H, W): True in the outer ``frac`` of each side (where text markers sit)."""
    if not 0 < frac < 0.5:
        raise ValueError(f"frac must be in (0, 0.5), got {frac}")
    h, w = (int(v) for v in shape)
    bh, bw = max(1, round(h * frac)), max(1, round(w * frac))
    m = np.ones((h, w), bool)
    m[bh:h - bh, bw:w - bw] = False
    return m


# --------------------------------------------------------------------------- metrics
def _check_mask(m: np.ndarray | None, shape: tuple[int, int], name: str) -> np.ndarray | None:
    if m is None:
        return None
    m = np.asarray(m, bool)
    if m.shape != shape:
        raise ValueError(f"{name} mask has shape {m.shape}, the heat map {shape}")
    return m


def location_metrics(heatmap: np.ndarray, *, thorax: np.ndarray | None = None,
                     margin: np.ndarray | None = None, boxes: np.ndarray | None = None) -> dict[str, Any]:
    """Where the saliency mass lies, for one map.

    Negative values are clipped to 0; mass shares are of the remaining total.

    Args:
        heatmap: float (H, W), larger = more important.
        thorax, margin, boxes: optional bool (H, W) masks (``boxes`` may be empty).

    Returns:
        ``outside_thorax`` / ``thorax_area`` (area share of the complement),
        ``margin_share`` / ``margin_area``, ``in_box`` / ``box_area`` and ``pointing``
        (share of the map's maximal pixels inside a box: 1 or 0 when the maximum is
        unique). Keys are present only for the masks given; ``None`` for a map without
        mass or an empty box mask.

    Raises:
        ValueError: not a 2-D map, non-finite values or a mask of another shape.
    """
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("heatmap has non-finite values")
    h = np.clip(h, 0, None)
    total = h.sum()
    p = h / total if total > 0 else None
    out: dict[str, Any] = {}

    def share(m: np.ndarray) -> float | None:
        return None if p is None else float(p[m].sum())

    if (t := _check_mask(thorax, h.shape, "thorax")) is not None:
        out["outside_thorax"] = share(~t)
        out["outside_thorax_area"] = float((~t).mean())
    if (m := _check_mask(margin, h.shape, "margin")) is not None:
        out["margin_share"] = share(m)
        out["margin_area"] = float(m.mean())
    if (b := _check_mask(boxes, h.shape, "boxes")) is not None:
        has = bool(b.any())
        out["in_box"] = share(b) if has else None
        out["box_area"] = float(b.mean()) if has else None
        out["pointing"] = float(b[h == h.max()].mean()) if has and p is not None else None
    return out


def _smooth_random(shape: tuple[int, int], rng: np.random.Generator, grid: int = 8) -> np.ndarray:
    """Grad-CAM-like random map: uniform noise on a coarse grid, bilinearly upsampled."""
    g = rng.random((grid, grid)).astype(np.float32)
    return cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def random_baseline(shape: tuple[int, int], masks: dict[str, np.ndarray | None], n: int = 50,
                    seed: int = 0) -> dict[str, dict[str, float]]:
    """Expected location metrics of maps that ignore the image.

    Args:
        shape: (H, W) of the maps.
        masks: ``{"thorax": m, "margin": m, "boxes": m}`` (any subset; None skipped).
        n: random maps of each kind.
        seed: RNG seed.

    Returns:
        ``{"area": {...}, "uniform": {...}, "smooth": {...}}``, each a dict of the same
        keys as :func:`location_metrics`: ``area`` is the analytic expectation (mass
        share = area share; pointing = area share), ``uniform`` the mean over i.i.d.
        uniform noise maps, ``smooth`` the mean over 8 x 8 noise upsampled like Grad-CAM.
    """
    kw = {k: v for k, v in masks.items() if v is not None and k in ("thorax", "margin", "boxes")}
    flat = np.ones(tuple(shape), np.float32)
    area = location_metrics(flat, **kw)
    if "pointing" in area and area.get("box_area") is not None:
        area["pointing"] = area["box_area"]
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {"area": area}
    for kind, make in (("uniform", lambda: rng.random(tuple(shape))),
                       ("smooth", lambda: _smooth_random(tuple(shape), rng))):
        runs = [location_metrics(make(), **kw) for _ in range(int(n))]
        out[kind] = {k: (None if any(r[k] is None for r in runs) else float(np.mean([r[k] for r in runs])))
                     for k in runs[0]}
    return out
