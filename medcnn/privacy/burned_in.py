"""Burned-in annotation: text in the pixels, which the Basic Profile does not clean.

PS3.15 E.3.1 leaves pixel data alone unless the Clean Pixel Data Option is applied, so a name,
date or ID burned into the image survives de-identification. Two signals are reported:

* the header: Burned In Annotation (0028,0301) = YES, or Recognizable Visual Features
  (0028,0302) = YES (a face can be reconstructed from the volume);
* the pixels: glyph-like marks in the margins. The pixel test is the one
  :mod:`medcnn.audit.features` uses for its ``text_*`` features (on the viewer's rendering, a 512 px
  copy: near-white, >= 0.9 and above the image's 99.5th percentile minus 0.02, on a strong edge,
  Sobel magnitude >= 0.3, within the 12 % margin bands). On top of it, to tell letters from
  anatomy: a bright connected component counts as a glyph only if it lies wholly inside the
  margin frame, is small (bounding box <= 8 % of the short side), has at least 30 % of its pixels
  on a strong edge and does not touch the outer border (image edges and collimator borders do).
  Two or more glyphs, covering >= 0.1 % of the margin, raise the warning; a lone L/R lead marker
  does not. Checked by eye on 91 images (the 24 DICOM samples and 60 chest radiographs of
  shared/data, 7 pydicom test files): 18 flagged, of which 12 radiographs with real "AP" /
  "PORTABLE" labels, an ultrasound and two test patterns with text, and two false alarms (a CT
  head whose skull edge breaks into fragments, a noisy colour test image); misses were not
  counted. It is a prompt to look, not a verdict: text inside the image, dim text or text wider
  than the margins is not found, and no warning is no guarantee that the image is free of text.

:func:`text_regions` returns the detected glyphs as a mask (grown by a few pixels), which a caller
may use to black out or crop the margins; nothing here modifies an image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from medcnn.notices import collected
from medcnn.io import MedImage, UnsupportedImageError, read_image

__all__ = ["TEXT_MARGIN_THRESHOLD", "TextRegions", "burned_in_warnings", "text_region_mask", "text_regions"]

#: Fraction of margin pixels that must be bright sharp edges for the pixel warning.
TEXT_MARGIN_THRESHOLD = 0.001
_WORK_SIZE = 512  # long side of the working copy (as the audit's text features)
_BAND = 0.12  # margin band, fraction of each side
_MIN_LEVEL, _LEVEL_BELOW_P995, _MIN_EDGE = 0.9, 0.02, 0.3
_GROW = 5  # px at the working size: the mask covers this much around each glyph
_MAX_GLYPH = 0.08  # a glyph's bounding box is at most this fraction of the short side
_MIN_AREA, _MIN_EDGE_SHARE = 6, 0.3  # px at the working size; share of its pixels on a strong edge
_MIN_GLYPHS = 2  # a single mark (an L/R lead marker) is not flagged on its own
_PROFILE_NOTE = ("the Basic Profile does not clean pixel data, so this text is still in the "
                 "de-identified image: look at it and crop or mask it before sharing")


@dataclass
class TextRegions:
    """Bright text-like marks found in an image's margins.

    Attributes:
        mask: bool (H, W), True on the detected marks (grown to cover whole glyphs).
        bands: fraction of bright sharp-edged pixels in each margin band
            (``"top"``, ``"bottom"``, ``"left"``, ``"right"``).
        margin_fraction: the same fraction over the whole margin frame.
        glyphs: number of glyph-like marks.
        found: ``margin_fraction >= threshold`` and at least two glyphs (one mark alone, such as an
            L/R lead marker, is not text).
    """

    mask: np.ndarray
    bands: dict[str, float]
    margin_fraction: float
    glyphs: int
    found: bool

    @property
    def flagged_bands(self) -> list[str]:
        """Margin bands whose own fraction reaches the threshold that decided ``found``."""
        return [name for name, value in self.bands.items() if value >= TEXT_MARGIN_THRESHOLD]


def _display(image: MedImage | np.ndarray) -> np.ndarray:
    """The viewer's rendering in [0, 1] (VOI, MONOCHROME1 inverted), float32 (H, W)."""
    if isinstance(image, MedImage):
        from medcnn.preprocess import render  # lazy: imports torch

        return render(image)
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 2 or min(arr.shape) < 2:
        raise ValueError(f"expected a greyscale display image (H, W) with H, W >= 2, got shape {arr.shape}")
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise ValueError(f"a display image must be finite and in [0, 1]; got min {lo}, max {hi}")
    return arr


def text_regions(image: MedImage | np.ndarray, *, threshold: float = TEXT_MARGIN_THRESHOLD) -> TextRegions:
    """Find bright burned-in text in the margins of one image (module docstring).

    Args:
        image: a decoded :class:`~medcnn.io.MedImage` (rendered as a viewer shows it), or a
            display image float (H, W) in [0, 1], bright = white.
        threshold: margin fraction from which ``found`` is True.

    Returns:
        :class:`TextRegions` with a mask of the input's shape (H, W).

    Raises:
        ValueError: an array that is not (H, W) in [0, 1].
    """
    import cv2

    disp = _display(image)
    h, w = disp.shape
    scale = min(1.0, _WORK_SIZE / max(h, w))
    small = disp if scale >= 1.0 else cv2.resize(
        np.ascontiguousarray(disp), (max(2, round(w * scale)), max(2, round(h * scale))),
        interpolation=cv2.INTER_AREA)
    sh, sw = small.shape
    gx = cv2.Sobel(small, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(small, cv2.CV_32F, 0, 1, ksize=3)
    edge = np.sqrt(gx * gx + gy * gy) / 4.0  # the 3x3 Sobel gain is 4 for a unit step
    level = max(_MIN_LEVEL, float(np.percentile(small, 99.5)) - _LEVEL_BELOW_P995)
    bright = small >= level
    hits = bright & (edge >= _MIN_EDGE)
    bh, bw = max(1, round(sh * _BAND)), max(1, round(sw * _BAND))
    margin = np.zeros_like(hits)
    margin[:bh], margin[sh - bh:], margin[:, :bw], margin[:, sw - bw:] = True, True, True, True
    glyphs = _glyphs(bright, hits, margin, max_side=_MAX_GLYPH * min(sh, sw))
    bands = {"top": glyphs[:bh], "bottom": glyphs[sh - bh:], "left": glyphs[:, :bw], "right": glyphs[:, sw - bw:]}
    fractions = {name: float(band.mean()) for name, band in bands.items()}
    margin_fraction = float(glyphs[margin].mean())
    n_glyphs = cv2.connectedComponents(glyphs.astype(np.uint8), connectivity=8)[0] - 1
    grown = cv2.dilate(glyphs.astype(np.uint8), np.ones((_GROW, _GROW), np.uint8)).astype(bool)
    mask = grown if grown.shape == (h, w) else cv2.resize(
        grown.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    found = margin_fraction >= threshold and n_glyphs >= _MIN_GLYPHS
    return TextRegions(mask=mask, bands=fractions, margin_fraction=margin_fraction, glyphs=n_glyphs, found=found)


def _glyphs(bright: np.ndarray, hits: np.ndarray, margin: np.ndarray, *, max_side: float) -> np.ndarray:
    """Bool mask of the glyph-like components of ``bright``: wholly inside the margin frame, small,
    sharp-edged, and clear of the image's outer border (edge lines and collimator borders touch it)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(bright)
    edge_px = np.bincount(labels[hits], minlength=n)
    inside = np.bincount(labels[~margin], minlength=n)
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    rows, cols = bright.shape
    keep = ((np.maximum(bw, bh) <= max_side) & (np.minimum(bw, bh) >= 2) & (area >= _MIN_AREA)
            & (edge_px >= _MIN_EDGE_SHARE * area) & (inside == 0)
            & (x > 0) & (y > 0) & (x + bw < cols) & (y + bh < rows))
    keep[0] = False
    return keep[labels]


def text_region_mask(image: MedImage | np.ndarray) -> np.ndarray:
    """Bool (H, W) mask of the bright text-like marks in the margins (see :func:`text_regions`)."""
    return text_regions(image).mask


def burned_in_warnings(ds: Dataset, data: bytes | None = None) -> list[str]:
    """Warnings that the pixels may carry identifying content the Basic Profile leaves in place.

    Args:
        ds: the data set (its Burned In Annotation / Recognizable Visual Features are read).
        data: the file's bytes, to decode the image and look at its margins; ``None`` skips that.

    Returns:
        zero or more messages, none quoting a value.
    """
    out = []
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        out.append(f"the file declares burned-in annotation (Burned In Annotation = YES): {_PROFILE_NOTE}")
    if str(ds.get("RecognizableVisualFeatures", "")).strip().upper() == "YES":
        out.append("the file declares recognizable visual features (a face may be reconstructed "
                   "from the images); the Basic Profile does not change them")
    if data is None:
        return out
    try:
        with collected():  # decode notes (colour -> grey, ...) are not privacy findings
            regions = text_regions(read_image(data))
    except UnsupportedImageError:
        out.append("the image could not be decoded, so its margins were not checked for burned-in text")
        return out
    if regions.found:
        where = ", ".join(regions.flagged_bands) or "margins"
        out.append(f"bright text-like marks found in the image margins ({where}): {_PROFILE_NOTE}")
    return out
