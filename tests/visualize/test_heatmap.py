"""Tests for medcnn.visualize: overlays, colour bar, PNG (the normalisation: tests/explain/test_normalize.py)."""
from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from medcnn.explain import normalize
from medcnn.visualize import (DEFAULT_CMAP, colorbar_image, figure_side_by_side, heatmap_rgb, normalize_heatmap, overlay,
                              to_png_bytes, to_uint8)
from medcnn.visualize import heatmap as visualize_heatmap
from medcnn.visualize.heatmap import EVIDENCE_FLOOR


def _pair(size=32):
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    display = xx.astype(np.float32)
    heat = np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.02).astype(np.float32)
    return display, heat


def test_overlay_blend_values():
    display, heat = _pair()
    out = overlay(display, heat, cmap="jet", alpha=0.4)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    h = float(heat[16, 16])
    colour = np.array(matplotlib.colormaps["jet"](h)[:3])
    a = 0.4 * h  # opacity grows with the evidence
    expected = np.round(((1 - a) * display[16, 16] + a * colour) * 255)
    np.testing.assert_allclose(out[16, 16], expected, atol=1)
    np.testing.assert_array_equal(overlay(display, heat, alpha=0.0), np.repeat(to_uint8(display)[..., None], 3, 2))


@pytest.mark.parametrize("cmap", ["inferno", "jet"])
def test_overlay_of_a_zero_map_is_the_display_image_unchanged(cmap):
    rng = np.random.default_rng(0)
    display = rng.random((24, 20)).astype(np.float32)
    out = overlay(display, np.zeros_like(display), cmap=cmap, alpha=1.0)
    np.testing.assert_array_equal(out, np.repeat(to_uint8(display)[..., None], 3, axis=2))


def test_overlay_with_one_hot_pixel_tints_only_that_pixel():
    display = np.full((16, 16), 0.5, np.float32)
    heat = np.zeros_like(display)
    heat[5, 9] = 1.0
    out = overlay(display, heat, alpha=0.6)
    grey = np.repeat(to_uint8(display)[..., None], 3, axis=2)
    changed = (out != grey).any(axis=2)
    assert changed[5, 9] and changed.sum() == 1


def test_overlay_leaves_values_below_the_floor_transparent():
    display = np.full((8, 8), 0.3, np.float32)
    faint = np.full_like(display, EVIDENCE_FLOOR / 2)
    np.testing.assert_array_equal(overlay(display, faint, alpha=1.0), overlay(display, np.zeros_like(display)))


def test_default_colour_map_is_perceptually_uniform_and_jet_stays_selectable():
    assert DEFAULT_CMAP in ("inferno", "magma", "viridis", "cividis")
    display, heat = _pair()
    np.testing.assert_array_equal(overlay(display, heat), overlay(display, heat, cmap=DEFAULT_CMAP))
    assert not np.array_equal(overlay(display, heat, cmap="jet"), overlay(display, heat))


def test_heatmap_rgb_is_the_colour_map_alone():
    heat = np.array([[0.0, 1.0]], np.float32)
    rgb = heatmap_rgb(heat, cmap="viridis")
    expected = np.round(np.array(matplotlib.colormaps["viridis"]([0.0, 1.0])[:, :3]) * 255)
    np.testing.assert_allclose(rgb[0], expected, atol=1)
    np.testing.assert_array_equal(heatmap_rgb(heat, cmap="viridis", scale=0.0)[0, 1], rgb[0, 0])


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
