"""Lung box of a CT slice: the one scale both kinds of CT source share.

Scanner DICOM shows the whole body in its field of view; the 8-bit slices of the main training set
(``sarscov2_ct``) were cut by their authors to the lungs with a thin rim (median margin 4% of the
lung box left and right, 6% above and below; measured on 80 of them). After ``body_crop`` a
scanner slice still has 20-30% of body wall, fat and arms round its lungs, so the same lungs
filled half the network's input they fill in training, and the gate saw a different kind of
picture. The ``lung_crop`` step (:class:`LungCrop`, after ``body_crop``) cuts both kinds of source
to the lungs' box plus a margin of the box's size, so a lung has the same size in the input
whatever the scanner's field of view, pixel spacing or the PNG's crop. There is no physical
scale to use instead: an 8-bit PNG carries no pixel spacing.

::

    x  float32 (H, W) in [0, 1], lung window, outside the body 0 (``body_crop``)
      -> body mask (:func:`medcnn.preprocess.body.body_mask`)
      -> Otsu level of the pixels inside the body (aerated lung vs soft tissue; any window in
         which the lungs are darker than the body wall); the two sides must differ as air and
         tissue do, else there is no aerated lung (an abdomen's fat against its organs)
      -> dark pixels inside the body, opened; the two largest regions (the lungs; trachea,
         bowel gas and small cavities fall away)                       lung box
      -> made symmetric about the body's midline (a lung that is all consolidation, effusion or
         tumour is not dark: the crop must not then cut the patient in half)
      -> crop to the box plus ``margin`` x its height / width on each side, grown in height to
         at most ``max_aspect`` width : height (the flattest training crops are 1.75 : 1; a
         slice through the lung bases is not stretched into a strip), clipped to the image

A slice with no plausible lungs (a head, the pelvis, a slice below the lung bases, a non-CT
image) is returned unchanged, with the reason in ``note``: the step never invents a crop, and the
out-of-distribution gate judges such an image as it is.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from medcnn.io import ImageMeta
from medcnn.preprocess.body import body_mask
from medcnn.preprocess.base import Step

__all__ = ["LungCrop", "lung_box"]

#: Least difference (on [0, 1]) between the dark and the bright pixels inside the body for the
#: dark ones to be aerated lung: lung against soft tissue is 0.5-0.6 in a lung window (-850 vs
#: +40 HU), fat against muscle (an abdomen) under 0.1.
_MIN_AIR_CONTRAST = 0.3


def lung_box(x: np.ndarray, min_lung: float = 0.02, kernel: float = 0.01
             ) -> tuple[tuple[int, int, int, int] | None, dict[str, Any]]:
    """The bounding box of the lungs in a windowed CT slice.

    Args:
        x: float32 (H, W) in [0, 1], lungs darker than the soft tissue round them.
        min_lung: least area of a lung region as a fraction of the body's area.
        kernel: diameter of the opening disc as a fraction of min(H, W) (cuts vessels' gaps and
            noise off the dark regions).

    Returns:
        ``(box, info)``: box ``(top, left, bottom, right)`` (exclusive ends, symmetric about the
        body's midline) or None; info holds
        ``lung_level`` (the threshold on [0, 1]), ``lung_fraction`` (the lungs' share of the
        body) and, when there is no box, ``note`` saying why.
    """
    mask, body = body_mask(x)
    if mask is None:
        return None, {"note": f"no body found ({body.get('note', 'no mask')})"}
    u8 = cv2.convertScaleAbs(x, alpha=255.0)
    inside = u8[mask > 0].reshape(-1, 1)
    level = float(cv2.threshold(inside, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0])
    info: dict[str, Any] = {"lung_level": round(level / 255.0, 4)}
    contrast = (float(inside[inside > level].mean()) - float(inside[inside <= level].mean())) / 255.0
    if contrast < _MIN_AIR_CONTRAST:
        return None, {**info, "note": f"no aerated lung (dark and bright parts of the body differ by "
                                      f"{contrast:.2f}, < {_MIN_AIR_CONTRAST})"}
    dark = cv2.bitwise_and(cv2.compare(u8, level, cv2.CMP_LE), mask)
    k = max(3, int(round(kernel * min(x.shape))) | 1)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    body_area = float(cv2.countNonZero(mask))
    areas = stats[1:, cv2.CC_STAT_AREA]
    lungs = [i for i in np.argsort(-areas)[:2] if areas[i] >= min_lung * body_area]
    if not lungs:
        largest = float(areas.max()) / body_area if n > 1 else 0.0
        return None, {**info, "note": f"no lungs found (largest dark region inside the body covers "
                                      f"{largest:.1%} of it, < {min_lung:.0%})"}
    s = stats[[i + 1 for i in lungs]]
    top, left = int(s[:, cv2.CC_STAT_TOP].min()), int(s[:, cv2.CC_STAT_LEFT].min())
    bottom = int((s[:, cv2.CC_STAT_TOP] + s[:, cv2.CC_STAT_HEIGHT]).max())
    right = int((s[:, cv2.CC_STAT_LEFT] + s[:, cv2.CC_STAT_WIDTH]).max())
    moments = cv2.moments(mask, binaryImage=True)
    mid = moments["m10"] / moments["m00"]  # the body's midline (its centroid's column)
    left, right = max(0, min(left, int(np.floor(2 * mid - right)))), min(x.shape[1], max(right, int(np.ceil(2 * mid - left))))
    info["lung_fraction"] = round(float(areas[lungs].sum()) / body_area, 4)
    return (top, left, bottom, right), info


class LungCrop(Step):
    """Crop a lung-windowed CT slice to its lungs' box plus a margin (see the module docstring).

    Deterministic; a few milliseconds at 512 x 512. Never raises on a valid image: without
    plausible lungs the input is returned unchanged and ``note`` says why.
    """

    name = "lung_crop"

    def __init__(self, margin: float = 0.05, min_lung: float = 0.02, kernel: float = 0.01, max_aspect: float = 1.75):
        if not 0 <= margin < 1:
            raise ValueError(f"lung_crop margin must be a fraction of the lung box in [0, 1), got {margin}")
        if not 0 < min_lung < 1 or not 0 < kernel < 0.5:
            raise ValueError(f"lung_crop needs min_lung in (0, 1) and kernel in (0, 0.5), "
                             f"got {min_lung} and {kernel}")
        if not max_aspect >= 1:
            raise ValueError(f"lung_crop max_aspect (width : height) must be >= 1, got {max_aspect}")
        self.margin, self.min_lung, self.kernel = float(margin), float(min_lung), float(kernel)
        self.max_aspect = float(max_aspect)

    def config(self) -> dict[str, Any]:
        return {"margin": self.margin, "min_lung": self.min_lung, "kernel": self.kernel, "max_aspect": self.max_aspect}

    def apply(self, x: np.ndarray, meta: ImageMeta | None) -> tuple[np.ndarray, dict[str, Any]]:
        """Returns the crop and ``{settings, lung_level, lung_fraction, from, to, offset[, note]}``.

        ``offset`` is where the input's (0, 0) lands in the output, as in ``body_crop``.
        """
        h, w = x.shape
        box, info = lung_box(x, self.min_lung, self.kernel)
        params = {**self.config(), **info, "from": [h, w]}
        if box is None:
            return x, {**params, "to": [h, w], "offset": [0, 0]}
        top, left, bottom, right = box
        dy, dx = int(round(self.margin * (bottom - top))), int(round(self.margin * (right - left)))
        width = right - left + 2 * dx
        dy = max(dy, int(np.ceil((width / self.max_aspect - (bottom - top)) / 2)))
        y0, x0 = max(0, top - dy), max(0, left - dx)
        y1, x1 = min(h, bottom + dy), min(w, right + dx)
        return x[y0:y1, x0:x1], {**params, "to": [y1 - y0, x1 - x0], "offset": [-y0, -x0]}
