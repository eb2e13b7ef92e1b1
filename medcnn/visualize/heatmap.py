"""Overlays, colour bars and figures of heat maps.

Heat maps follow the one convention of :mod:`medcnn.explain.normalize` (float32, H x W,
[0, 1], 1 = most important); :func:`normalize_heatmap` and :func:`evidence` are defined there,
next to the explanations that produce the maps, and re-exported here.

Colour: the overlay's opacity grows with the map value (zero evidence leaves the film
untouched, so only evidence tints it), and the default colour map is ``inferno``: perceptually
uniform, so equal steps of the map look like equal steps of colour, and readable in grey
(Nunez et al. 2018, "Optimizing colormaps with consideration for color vision deficiency",
PLoS ONE; Borland & Taylor 2007, "Rainbow color map (still) considered harmful"). ``jet``
stays selectable.

Library code never uses ``pyplot`` (global state, not thread-safe): figures are built on
``matplotlib.figure.Figure`` with the Agg canvas.
"""
from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from scipy import ndimage

from medcnn.explain.normalize import evidence, normalize_heatmap  # re-exported: public here too

__all__ = [
    "DEFAULT_CMAP",
    "EVIDENCE_FLOOR",
    "heatmap_rgb",
    "to_uint8",
    "evidence",
    "normalize_heatmap",
    "overlay",
    "colorbar_image",
    "figure_side_by_side",
    "to_png_bytes",
]


#: Default colour map of every overlay, colour bar and figure (perceptually uniform).
DEFAULT_CMAP = "inferno"
#: Map values below this (after scaling) are drawn fully transparent: faint noise tints nothing.
EVIDENCE_FLOOR = 0.02


def _check_unit(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be (H, W), got shape {a.shape}")
    if not np.isfinite(a).all() or a.min() < -1e-6 or a.max() > 1 + 1e-6:
        raise ValueError(f"{name} must be finite and in [0, 1], got range [{a.min()}, {a.max()}]")
    return np.clip(a, 0.0, 1.0)


def _cmap(name: str):
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; e.g. 'jet', 'inferno', 'viridis'") from None


def _scaled(heatmap: np.ndarray, scale: float | None) -> np.ndarray:
    h = _check_unit("heatmap", heatmap)
    if scale is not None:
        if not 0 <= scale <= 1:
            raise ValueError(f"scale must be in [0, 1], got {scale}")
        h = h * float(scale)
    return h


def overlay(
    display: np.ndarray,
    heatmap: np.ndarray,
    *,
    cmap: str = DEFAULT_CMAP,
    alpha: float = 0.4,
    contour_top_percent: float | None = None,
    scale: float | None = None,
    floor: float = EVIDENCE_FLOOR,
) -> np.ndarray:
    """Tint the grey display image with a heat map where, and as strongly as, the map has evidence.

    Each pixel's opacity is ``alpha * h`` (``h`` the scaled map value), and 0 where ``h < floor``:
    a zero map returns the display image unchanged (as :func:`to_uint8` gives it), and a map with
    one hot pixel tints that pixel only. So a map with no evidence never washes the film in the
    colour map's low colour.

    Args:
        display: (H, W) float in [0, 1] (``PipelineResult.display``).
        heatmap: (H, W) float in [0, 1], same shape.
        cmap: Matplotlib colormap name (default :data:`DEFAULT_CMAP`).
        alpha: Opacity of the colour layer where the map is 1, in [0, 1].
        contour_top_percent: If given (0-100), draw a white outline around the pixels in
            the top ``contour_top_percent`` % of the (scaled) map.
        scale: Multiply the map by this factor in [0, 1] before colouring, e.g. the
            predicted probability of the explained class, so a confident negative image
            does not glow like a positive one.
        floor: Scaled map values below this are fully transparent (default :data:`EVIDENCE_FLOOR`).

    Returns:
        uint8 (H, W, 3) RGB.

    Raises:
        ValueError: arrays not (H, W) in [0, 1] or of different shapes, ``alpha``, ``scale`` or
            ``contour_top_percent`` out of range, or an unknown colour map.
    """
    d = _check_unit("display", display)
    h = _scaled(heatmap, scale)
    if d.shape != h.shape:
        raise ValueError(f"display {d.shape} and heatmap {h.shape} must have the same shape")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colour = _cmap(cmap)(h)[..., :3]
    grey = np.repeat(d[..., None], 3, axis=2)
    a = (alpha * np.where(h >= floor, h, 0.0))[..., None]
    out = (1 - a) * grey + a * colour
    if contour_top_percent is not None:
        if not 0 < contour_top_percent <= 100:
            raise ValueError(f"contour_top_percent must be in (0, 100], got {contour_top_percent}")
        thr = np.percentile(h, 100 - contour_top_percent)
        mask = (h >= thr) & (h > 0)
        edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
        out[edge] = 1.0
    return to_uint8(out)


def heatmap_rgb(heatmap: np.ndarray, *, cmap: str = DEFAULT_CMAP, scale: float | None = None) -> np.ndarray:
    """The heat map alone in its colour map (the panel next to the overlay, read with its colour bar).

    Args:
        heatmap: (H, W) float in [0, 1].
        cmap: Matplotlib colormap name.
        scale: Optional factor in [0, 1] applied first, as in :func:`overlay`.

    Returns:
        uint8 (H, W, 3) RGB.
    """
    return to_uint8(_cmap(cmap)(_scaled(heatmap, scale))[..., :3])


def colorbar_image(cmap: str = DEFAULT_CMAP, height: int = 256, width: int = 16) -> np.ndarray:
    """Vertical colour bar, top = 1 (most important), bottom = 0: uint8 (height, width, 3)."""
    if height < 2 or width < 1:
        raise ValueError("height must be >= 2 and width >= 1")
    v = np.linspace(1.0, 0.0, height)
    col = (_cmap(cmap)(v)[:, :3] * 255).round().astype(np.uint8)
    return np.repeat(col[:, None, :], width, axis=1)


def figure_side_by_side(
    display: np.ndarray,
    heatmap: np.ndarray,
    overlay_rgb: np.ndarray,
    title: str | None = None,
    *,
    cmap: str = DEFAULT_CMAP,
    titles: tuple[str, str, str] = ("Image", "Heat map", "Overlay"),
) -> Figure:
    """Three panels (image, heat map with colour bar, overlay) on an Agg ``Figure``."""
    fig = Figure(figsize=(10.5, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    axes[0].imshow(display, cmap="gray", vmin=0, vmax=1)
    im = axes[1].imshow(heatmap, cmap=cmap, vmin=0, vmax=1)
    axes[2].imshow(overlay_rgb)
    for ax, t in zip(axes, titles):
        ax.set_title(t)
        ax.axis("off")
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return fig


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Display image -> uint8: float images are taken as [0, 1] (clipped, rounded); uint8 passes through.

    The one conversion used by the pages, the overlays' inputs and the PDF reports.
    """
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a
    return (np.clip(a.astype(np.float32), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def to_png_bytes(rgb: np.ndarray) -> bytes:
    """Encode uint8 (H, W, 3) RGB or (H, W) grey as PNG bytes (no metadata)."""
    a = np.asarray(rgb)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"expected uint8 (H, W) or (H, W, 3|4), got {a.dtype} {a.shape}")
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
