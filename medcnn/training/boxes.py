"""Radiologists' boxes: parsing, display geometry and masks.

Boxes come as a CSV column (``rsna_boxes_1024``: ``"x y w h;x y w h"`` in the pixel grid of
the original 1024 x 1024 film). :func:`boxes_to_display` maps them through the file's own size
and the preprocessing pipeline's pad/crop and resize (read from ``PipelineResult.steps``), so a
mask lines up with the display image the model sees. Used by box supervision
(:mod:`medcnn.training.boxsup`) and the saliency-location audit (:mod:`medcnn.audit.saliency`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["boxes_mask", "boxes_to_display", "display_geometry", "parse_boxes"]


def boxes_mask(shape: tuple[int, int], boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """bool (H, W): union of boxes ``(x, y, w, h)`` in display pixel coordinates (clipped).

    A pixel (r, c) is inside when its centre (c + 0.5, r + 0.5) lies in a box.
    """
    h, w = (int(v) for v in shape)
    m = np.zeros((h, w), bool)
    for b in boxes:
        if len(b) != 4:
            raise ValueError(f"a box must be (x, y, w, h), got {b!r}")
        x0, y0, bw, bh = (float(v) for v in b)
        c0, c1 = max(0, math.ceil(x0 - 0.5)), min(w, math.ceil(x0 + bw - 0.5))
        r0, r1 = max(0, math.ceil(y0 - 0.5)), min(h, math.ceil(y0 + bh - 0.5))
        if c1 > c0 and r1 > r0:
            m[r0:r1, c0:c1] = True
    return m


def parse_boxes(text: Any) -> list[tuple[float, float, float, float]]:
    """``'x y w h;x y w h'`` (e.g. ``rsna_boxes_1024``) -> list of boxes; empty/NaN -> []."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    out = []
    for part in str(text).split(";"):
        part = part.strip()
        if not part:
            continue
        vals = part.replace(",", " ").split()
        if len(vals) != 4:
            raise ValueError(f"a box must be 'x y w h', got {part!r}")
        out.append(tuple(float(v) for v in vals))
    return out


def display_geometry(steps: Sequence[Any], image_shape: tuple[int, int]) -> dict[str, float]:
    """Affine map from original-image pixels to display pixels, from a pipeline's steps.

    Args:
        steps: ``PipelineResult.steps`` (needs the ``offset``/``to`` params of the cropping
            steps, ``body_crop``, ``lung_crop`` and ``crop_or_pad``, when present, and ``resize``
            params ``size``).
            Crop offsets compose: each says where its input's corner lands in its output.
        image_shape: (H0, W0) of the decoded image.

    Returns:
        ``{"sx", "sy", "tx", "ty"}`` with display = (x * sx + tx, y * sy + ty).

    Raises:
        ValueError: the ``orient`` step turned or mirrored the image (no such affine map).
    """
    h, w = (float(v) for v in image_shape)
    off_y = off_x = 0.0
    for st in steps:
        if st.name == "orient" and any(st.params.get(k) for k in ("transposed", "flipped_rows", "flipped_columns")):
            raise ValueError(f"the slice was {st.params.get('orientation')}; boxes drawn on the stored pixels "
                             "cannot be mapped by a shift and scale")
        if st.name in ("body_crop", "lung_crop", "crop_or_pad") and "offset" in st.params:
            dy, dx = (float(v) for v in st.params["offset"])
            off_y, off_x = off_y + dy, off_x + dx
            h, w = (float(v) for v in st.params["to"])
        elif st.name == "resize":
            th, tw = (float(v) for v in st.params["size"])
            sy, sx = th / h, tw / w
            return {"sx": sx, "sy": sy, "tx": off_x * sx, "ty": off_y * sy}
    return {"sx": 1.0, "sy": 1.0, "tx": off_x, "ty": off_y}


def boxes_to_display(boxes: Sequence[Sequence[float]], image_shape: tuple[int, int],
                     steps: Sequence[Any], ref_size: float | tuple[float, float] = 1024) -> list[tuple[float, ...]]:
    """Boxes given in a reference grid (RSNA: 1024 x 1024) -> display pixel coordinates.

    The file's own size relative to ``ref_size`` gives the first scale (a 512 px file
    of a 1024 px original: 0.5), then the pipeline's pad/crop offset and resize.

    Args:
        boxes: ``(x, y, w, h)`` in ``ref_size`` coordinates.
        image_shape: (H0, W0) of the decoded file.
        steps: ``PipelineResult.steps`` of that file.
        ref_size: side (or (H, W)) of the grid the boxes are expressed in.
    """
    rh, rw = (ref_size, ref_size) if isinstance(ref_size, (int, float)) else ref_size
    fy, fx = image_shape[0] / float(rh), image_shape[1] / float(rw)
    g = display_geometry(steps, image_shape)
    return [(x * fx * g["sx"] + g["tx"], y * fy * g["sy"] + g["ty"], bw * fx * g["sx"], bh * fy * g["sy"])
            for x, y, bw, bh in boxes]
