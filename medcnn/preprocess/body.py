"""Body mask of a CT slice: the patient's body without the table and the air around it.

A slice straight from a scanner shows the patient small inside a wide field of view, with the
table below and air (or the black outside of a circular field of view) around; the CT model is
trained on lung-windowed crops of the body with black outside it. :func:`body_mask` finds the
body on the windowed display image; the ``body_crop`` step (:class:`medcnn.preprocess.BodyCrop`,
after ``window`` / ``invert``, before ``crop_or_pad``) crops to it::

    x  float32 (H, W) in [0, 1]
      -> threshold (adaptive, after Otsu 1979; or a fixed level)   uint8 (H, W)
      -> opening   (cuts off thin structures: table top, cables, blankets)
                 -> edge contact: share of each image edge the opened foreground covers
      -> largest connected component                              (the body)
      -> closing, hole filling (lungs, bowel gas)                  body mask uint8 (H, W)

When no plausible body is found (constant or low-contrast image, nothing or only a small region
above the threshold, no single dominant region) there is no mask, and the reason is returned
for the step's parameters (``note``), which the app shows under the step's image.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

__all__ = ["body_mask", "edge_contact"]

#: Mean difference (on [0, 1]) between the two Otsu classes below which there is no body to find.
_MIN_CONTRAST = 0.08
#: Above this fraction of bright pixels there is no background to remove (an all-white image).
_MAX_BRIGHT = 0.98
#: Least share of the bright (opened) area that must lie inside the body mask.
_MIN_INSIDE = 0.8
#: Depth of the band along each image edge in which contact is measured, as a fraction of H or W.
_EDGE_BAND = 0.02
#: Below this area / convex-hull area the body wall is broken (a narrow window turned fat to black):
#: the convex hull is used as the mask so the lungs are not blacked out.
_MIN_SOLIDITY = 0.8


def _threshold(u8: np.ndarray, threshold: str | float) -> tuple[float, str | None]:
    """Binarisation level on the 0..255 scale, or a reason why there is nothing to separate.

    ``"otsu"``: Otsu's level, lowered three quarters of the way towards the median of the darker
    class. Otsu alone splits air from soft tissue in a lung window, but in a narrow (mediastinal)
    window it also cuts away subcutaneous fat and with it the body wall; the darker class's
    median is the background level (air, or the clipped black of air and lung), and a quarter
    of the way above it keeps the fat while staying clear of the air's noise (lung window: air
    0.23, threshold 0.32-0.38; mediastinal window: air 0, fat 0.1-0.3, threshold 0.07-0.10).
    """
    if threshold != "otsu":
        return float(threshold) * 255.0, None
    t_otsu = int(cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0])
    hist = cv2.calcHist([u8], [0], None, [256], [0, 256]).ravel()
    dark, bright = hist[:t_otsu + 1], hist[t_otsu + 1:]
    n_dark, n_bright = dark.sum(), bright.sum()
    if n_dark == 0 or n_bright == 0:
        return float(t_otsu), "no contrast between body and background"
    levels = np.arange(256, dtype=np.float64)
    contrast = levels[t_otsu + 1:] @ bright / n_bright - levels[:t_otsu + 1] @ dark / n_dark
    if contrast < _MIN_CONTRAST * 255:
        return float(t_otsu), "no contrast between body and background"
    low = float(np.searchsorted(np.cumsum(dark), n_dark / 2))  # median of the darker class
    return low + 0.25 * (t_otsu - low), None


def _fill_holes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill the holes of a one-region mask (lungs, bowel gas), also those the image edge opens.

    A slice cropped through the body (the training crops often are) leaves a lung open towards
    the image edge, so it is not a hole of the mask. The image frame is therefore closed where
    the body meets it before filling: along each edge between the first and last pixel the body
    touches, and round a corner when the body touches both edges that meet there. Air reaching
    an edge outside those stretches (above and below a body that spans the width, say) stays
    outside.

    Returns:
        ``(filled, outline)``: uint8 (H, W) mask and its outer contour (in mask coordinates).
    """
    framed = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    # edges in order round the frame: top, right, bottom, left; each as (frame line, mask line)
    edges = [(framed[0, 1:-1], mask[0]), (framed[1:-1, -1], mask[:, -1]),
             (framed[-1, 1:-1], mask[-1]), (framed[1:-1, 0], mask[:, 0])]
    touched = [np.flatnonzero(line) for _, line in edges]
    # top and bottom run left -> right, left and right top -> bottom: the edges met at a line's
    # first and at its last index
    first, last = (3, 0, 3, 0), (1, 2, 1, 2)
    for i, ((edge, _), touch) in enumerate(zip(edges, touched)):
        if touch.size:
            lo = 0 if touched[first[i]].size else int(touch[0])
            hi = len(edge) if touched[last[i]].size else int(touch[-1]) + 1
            edge[lo:hi] = 255
    for r, c, a, b in ((0, 0, 0, 3), (0, -1, 0, 1), (-1, 0, 2, 3), (-1, -1, 2, 1)):
        if touched[a].size and touched[b].size:
            framed[r, c] = 255
    contours, _ = cv2.findContours(framed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max(contours, key=cv2.contourArea)
    cv2.drawContours(framed, [outline], -1, 255, cv2.FILLED)  # the outer outline: holes filled
    return np.ascontiguousarray(framed[1:-1, 1:-1]), outline - 1


def edge_contact(fg: np.ndarray) -> dict[str, float]:
    """Share of each image edge that the foreground covers (within a band of :data:`_EDGE_BAND`).

    An axial slice in a scanner's field of view has air in front of the body: the top edge is
    free; a reformat or a crop runs off the image at the top and the bottom (the plane rule of
    :mod:`medcnn.ood.scope` reads this).
    """
    h, w = fg.shape
    bh, bw = max(1, int(_EDGE_BAND * h)), max(1, int(_EDGE_BAND * w))
    on = fg > 0
    return {"top": round(float(on[:bh].mean()), 3), "bottom": round(float(on[-bh:].mean()), 3),
            "left": round(float(on[:, :bw].mean()), 3), "right": round(float(on[:, -bw:].mean()), 3)}


def body_mask(x: np.ndarray, threshold: str | float = "otsu", kernel: float = 0.02,
              min_area: float = 0.05) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The patient's body in a windowed slice.

    Args:
        x: float32 (H, W) in [0, 1], body brighter than the air around it.
        threshold: ``"otsu"`` (adaptive, see :func:`_threshold`) or a level in (0, 1).
        kernel: diameter of the opening / closing disc as a fraction of min(H, W); structures
            thinner than this (the table top, cables) are cut off the body.
        min_area: smallest plausible body as a fraction of the image.

    Returns:
        ``(mask, info)``: mask uint8 (H, W) with 255 on the body, or None when no plausible body
        was found; info holds ``level`` (the threshold used, on [0, 1]), ``edges`` (the
        :func:`edge_contact` of the opened foreground, whenever it was computed),
        ``body_fraction`` (the mask's share of the image) and, when the mask is None or was
        replaced by its convex hull, a ``note`` saying why.
    """
    h, w = x.shape
    info: dict[str, Any] = {}
    lo, hi = float(x.min()), float(x.max())
    if not hi - lo > 1e-6:
        return None, {"note": "constant image"}
    u8 = cv2.convertScaleAbs(x, alpha=255.0)  # saturating round to 0..255
    level, reason = _threshold(u8, threshold)
    info["level"] = round(level / 255.0, 4)
    if reason:
        return None, {**info, "note": reason}
    _, fg = cv2.threshold(u8, level, 255, cv2.THRESH_BINARY)
    if cv2.countNonZero(fg) > _MAX_BRIGHT * h * w:
        return None, {**info, "note": f"bright almost everywhere (> {_MAX_BRIGHT:.0%}): "
                                      "no background to remove"}
    k = max(3, int(round(kernel * min(h, w))) | 1)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, disc)
    info["edges"] = edge_contact(fg)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n < 2:
        return None, {**info, "note": "nothing above the threshold after opening"}
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = int(np.argmax(areas))
    if areas[best] < min_area * h * w:
        return None, {**info, "note": f"largest region covers {areas[best] / (h * w):.1%} of the image "
                                      f"(< {min_area:.0%})"}
    mask = cv2.compare(labels, best + 1, cv2.CMP_EQ)
    # Close before filling: one pixel gap in the body wall would leave the lungs unfilled.
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, disc)
    mask, outline = _fill_holes(mask)
    # Regions inside the body (mediastinum, vessels) are part of it once holes are filled; what is
    # left outside is table, arms, or a second body-sized region that makes the crop ambiguous.
    inside = cv2.countNonZero(cv2.bitwise_and(fg, mask)) / max(1, cv2.countNonZero(fg))
    if inside < _MIN_INSIDE:
        return None, {**info, "note": f"no single body region (only {inside:.0%} of the bright area "
                                      f"in the largest)"}
    hull = cv2.convexHull(outline)
    hull_area, area = cv2.contourArea(hull), cv2.countNonZero(mask)
    if hull_area > 0 and area < _MIN_SOLIDITY * hull_area:
        cv2.drawContours(mask, [hull], -1, 255, cv2.FILLED)
        info["note"] = f"body wall not closed (solidity {area / hull_area:.2f}): convex hull used"
        area = cv2.countNonZero(mask)
    info["body_fraction"] = round(area / (h * w), 4)
    return mask, info
