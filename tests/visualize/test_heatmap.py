"""Tests for medcnn.visualize: overlays, colour bar, PNG (the normalisation: tests/explain/test_normalize.py)."""
from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from medcnn.explain import normalize
from medcnn.visualize import colorbar_image, figure_side_by_side, normalize_heatmap, overlay, to_png_bytes
from medcnn.visualize import heatmap as visualize_heatmap


def _pair(size=32):
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    display = xx.astype(np.float32)
    heat = np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.02).astype(np.float32)
    return display, heat


def test_overlay_blend_values():
    display, heat = _pair()
    out = overlay(display, heat, cmap="jet", alpha=0.4)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    colour = np.array(matplotlib.colormaps["jet"](heat[16, 16])[:3])
    expected = np.round((0.6 * display[16, 16] + 0.4 * colour) * 255)
    np.testing.assert_allclose(out[16, 16], expected, atol=1)
    np.testing.assert_array_equal(overlay(display, heat, alpha=0.0)[..., 0], np.round(display * 255))


def test_overlay_scale_by_probability():
    display, heat = _pair()
    low = overlay(display, heat, scale=0.0)
    cold = overlay(display, np.zeros_like(heat))
    np.testing.assert_array_equal(low, cold)  # confident negative: no glow at all
    assert (overlay(display, heat, scale=1.0)[16, 16] != low[16, 16]).any()
    with pytest.raises(ValueError, match="scale"):
        overlay(display, heat, scale=2.0)


def test_overlay_contour_top_percent():
    display, heat = _pair()
    out = overlay(display * 0.5, heat, contour_top_percent=10, alpha=0.0)
    white = (out == 255).all(axis=2)
    top = heat >= np.percentile(heat, 90)
    assert 0.08 < top.mean() < 0.12
    assert white.any() and not white[~top].any()  # outline lies on the region's inner border
    assert not white[16, 16]  # interior not painted
    inner = top.copy()
    inner[1:-1, 1:-1] = top[:-2, 1:-1] & top[2:, 1:-1] & top[1:-1, :-2] & top[1:-1, 2:] & top[1:-1, 1:-1]
    np.testing.assert_array_equal(white, top & ~inner)


def test_overlay_errors():
    display, heat = _pair()
    with pytest.raises(ValueError, match="same shape"):
        overlay(display, heat[:10])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay(display * 3, heat)
    with pytest.raises(ValueError, match="colormap"):
        overlay(display, heat, cmap="nope")


def test_colorbar_top_is_high():
    bar = colorbar_image("viridis", height=50, width=7)
    assert bar.shape == (50, 7, 3) and bar.dtype == np.uint8
    top = np.round(np.array(matplotlib.colormaps["viridis"](1.0)[:3]) * 255)
    np.testing.assert_allclose(bar[0, 0], top, atol=1)


def test_png_roundtrip_and_figure():
    display, heat = _pair()
    rgb = overlay(display, heat)
    png = to_png_bytes(rgb)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), rgb)
    with pytest.raises(ValueError, match="uint8"):
        to_png_bytes(rgb.astype(np.float32))
    fig = figure_side_by_side(display, heat, rgb, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # 3 panels + colour bar
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:4] == b"\x89PNG"


def test_visualize_re_exports_the_one_normalisation():
    # the convention is defined once, in medcnn.explain.normalize; the public paths here stay
    assert normalize_heatmap is normalize.normalize_heatmap
    assert visualize_heatmap.evidence is normalize.evidence
    assert {"evidence", "normalize_heatmap"} <= set(visualize_heatmap.__all__)
