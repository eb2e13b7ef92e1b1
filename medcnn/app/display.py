"""Display helpers of the Streamlit pages: charts, metadata rows, colour bars, CT sliders.

Pure functions of values the pages already hold (no caching, no model): Vega-Lite specs
for :func:`st.vega_lite_chart`, rows for :func:`st.table`, uint8 images for
:func:`st.image`, and the ``on_change`` callbacks of the CT window widgets.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st

from medcnn.io import ImageMeta

__all__ = [
    "COLORMAPS",
    "META_FIELDS",
    "attention_location",
    "ct_custom",
    "format_params",
    "histogram_chart",
    "is_ct_dicom",
    "meta_rows",
    "ood_message",
    "method_options",
    "probability_chart",
    "sanity_summary",
    "show_sanity",
    "sync_ct_sliders",
    "to_uint8",
    "with_colorbar",
]

#: Non-identifying metadata shown to the user: (ImageMeta attribute, label).
META_FIELDS: tuple[tuple[str, str], ...] = (
    ("source_format", "Format"),
    ("modality", "Modality"),
    ("body_part", "Body part"),
    ("view_position", "View"),
    ("size", "Size (rows x columns)"),
    ("pixel_spacing", "Pixel spacing (mm)"),
    ("window", "Window (centre / width)"),
    ("n_frames", "Frames"),
    ("frame", "Frame shown"),
    ("photometric_interpretation", "Photometric interpretation"),
    ("bits_stored", "Bits stored"),
    ("transfer_syntax", "Transfer syntax"),
)

#: Colormaps offered for the overlay: the default first (perceptually uniform,
#: :data:`medcnn.visualize.DEFAULT_CMAP`), the rainbow ``jet`` still selectable.
COLORMAPS = ["inferno", "magma", "viridis", "jet", "turbo", "hot"]


# --------------------------------------------------------------------------- tables and charts
def method_options() -> dict[str, Any]:
    """Explanation methods for the drop-down, in menu order: a copy of the registry.

    Returns:
        name -> :class:`medcnn.explain.base.AttributionMethod` subclass; its ``label``,
        ``description`` and ``passes_randomisation_check`` are what the page shows. The
        keys are the command line's ``--method`` choices too.
    """
    from medcnn.explain.methods import METHODS

    return dict(METHODS)


def meta_rows(meta: ImageMeta) -> list[dict[str, str]]:
    """Non-identifying metadata as ``[{"Field": ..., "Value": ...}]`` (no patient data)."""
    rows = []
    for attr, label in META_FIELDS:
        if attr == "size":
            value: Any = f"{meta.rows} x {meta.columns}"
        elif attr == "window":
            value = (f"{meta.window_center:g} / {meta.window_width:g}"
                     if meta.window_center is not None and meta.window_width is not None else None)
        elif attr == "pixel_spacing":
            value = (" x ".join(f"{v:.3g}" for v in meta.pixel_spacing) if meta.pixel_spacing else None)
        else:
            value = getattr(meta, attr, None)
        rows.append({"Field": label, "Value": "—" if value in (None, "") else str(value)})
    return rows


def histogram_chart(pixels: np.ndarray, window: dict[str, Any] | None = None, bins: int = 128) -> dict[str, Any]:
    """Vega-Lite spec: histogram of the stored values, the applied window as dashed rules.

    Args:
        pixels: float32 (H, W) modality values (subsampled to ~1k rows for speed).
        window: ``PipelineResult.window`` (``center`` / ``width``), optional.
    """
    sample = pixels[:: max(1, pixels.shape[0] // 1024), :: max(1, pixels.shape[1] // 1024)]
    counts, edges = np.histogram(sample, bins=bins)
    rows = [{"value": float(a), "end": float(b), "count": int(n)} for a, b, n in zip(edges[:-1], edges[1:], counts)]
    layers: list[dict[str, Any]] = [{
        "data": {"values": rows},
        "mark": {"type": "rect", "color": "#1f5f8b"},
        "encoding": {"x": {"field": "value", "type": "quantitative", "title": "stored value"},
                     "x2": {"field": "end"},
                     "y": {"field": "count", "type": "quantitative", "scale": {"type": "symlog"}},
                     "y2": {"datum": 0}},
    }]
    if window and window.get("center") is not None and window.get("width"):
        lo = float(window["center"]) - float(window["width"]) / 2
        hi = float(window["center"]) + float(window["width"]) / 2
        layers.append({"data": {"values": [{"x": lo}, {"x": hi}]},
                       "mark": {"type": "rule", "strokeDash": [4, 3], "color": "#c0392b", "size": 2},
                       "encoding": {"x": {"field": "x", "type": "quantitative"}}})
    return {"height": 220, "layer": layers}


def probability_chart(pred: Any, positive_label: str) -> dict[str, Any]:
    """Vega-Lite spec: one bar per class, the operating threshold as a rule.

    The threshold applies to the probability of ``positive_label``; its rule is drawn
    across the chart with a text label.
    """
    rows = [{"class": k, "probability": float(v), "decision": "predicted" if k == pred.label else "other"}
            for k, v in pred.probabilities.items()]
    thr = float(pred.threshold)
    return {
        "data": {"values": rows},
        "height": {"step": 34},
        "layer": [
            {"mark": {"type": "bar", "cornerRadiusEnd": 3},
             "encoding": {
                 "y": {"field": "class", "type": "nominal", "sort": None, "title": None},
                 "x": {"field": "probability", "type": "quantitative",
                       "scale": {"domain": [0, 1]}, "title": "calibrated probability"},
                 "color": {"field": "decision", "type": "nominal", "legend": None,
                           "scale": {"domain": ["predicted", "other"], "range": ["#c0392b", "#95a5a6"]}},
                 "tooltip": [{"field": "class"}, {"field": "probability", "format": ".3f"}]}},
            {"mark": {"type": "rule", "strokeDash": [4, 3], "color": "#2c3e50", "size": 2},
             "encoding": {"x": {"datum": thr}}},
            {"mark": {"type": "text", "align": "left", "dx": 4, "dy": -6, "color": "#2c3e50"},
             "encoding": {"x": {"datum": thr}, "y": {"value": 0},
                          "text": {"value": f"threshold {thr:.2f} on P({positive_label})"}}},
        ],
    }


def sanity_summary(result: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Verdict text and per-step rows of a :func:`medcnn.explain.sanity.randomisation_test` result.

    A result that is not testable (``testable`` False: the original map is empty or constant) gets
    "Not testable" and why, never a pass: its similarity figures would compare blanks.
    """
    if result.get("testable") is False or result.get("passes") is None:
        why = result.get("reason") or "the original map is empty or constant"
        return (f"Not testable: {why}. The randomisation check compares the map with maps of a model whose "
                "weights are randomised; a map that shows nothing cannot change."), []
    numbers = ""
    if result.get("final_spearman") is not None:
        numbers = (f" (rank correlation with the fully randomised model's map "
                   f"{result['final_spearman']:.2f}, SSIM {result.get('final_ssim', float('nan')):.2f}; "
                   f"pass below {result.get('threshold', 0.5):.2f})")
    if result.get("passes"):
        verdict = ("Passes: the map changes when the learned weights are randomised, so it depends on "
                   "what the model learned" + numbers + ".")
    else:
        verdict = ("Fails: the map barely changes when the learned weights are randomised; it does not "
                   "show what the model learned" + numbers + ".")
    rows = [r for r in result.get("steps", []) if isinstance(r, dict)]
    return verdict, rows


def show_sanity(result: dict[str, Any], key: str = "sanity_table") -> None:
    """Draw a randomisation-test result: green when it passes, a warning when it fails, an info
    message when it is not testable (:func:`sanity_summary`), and the per-step table."""
    verdict, rows = sanity_summary(result)
    if result.get("testable") is False or result.get("passes") is None:
        st.info(verdict)
    else:
        (st.success if result["passes"] else st.warning)(verdict)
    if rows:
        st.dataframe(rows, hide_index=True, key=key)


def format_params(params: dict[str, Any]) -> str:
    """Compact ``k=v`` text of a step's parameters (floats to 4 significant digits)."""
    parts = []
    for k, v in params.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, (list, tuple)):
            v = "x".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v)
        elif isinstance(v, dict):
            v = "(" + " ".join(f"{key} {x:.4g}" if isinstance(x, float) else f"{key} {x}" for key, x in v.items()) + ")"
        parts.append(f"{k}={v}")
    return ", ".join(parts) or "no parameters"


# --------------------------------------------------------------------------- images
def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W) -> uint8 for ``st.image`` (:func:`medcnn.visualize.to_uint8`)."""
    from medcnn.visualize import to_uint8 as convert

    return convert(image)


def with_colorbar(rgb: np.ndarray, cmap: str) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with a vertical colour bar (top = 1, bottom = 0) on its right."""
    from medcnn.visualize import colorbar_image

    h, w = rgb.shape[:2]
    gap = np.full((h, max(2, w // 40), 3), 255, np.uint8)
    return np.concatenate([rgb, gap, colorbar_image(cmap, h, max(4, w // 16))], axis=1)


# --------------------------------------------------------------------------- CT window widgets
def is_ct_dicom(meta: ImageMeta) -> bool:
    """True for CT DICOM (pixels in Hounsfield units: presets and sliders apply)."""
    return meta.is_hounsfield


def sync_ct_sliders() -> None:
    """``on_change`` of the CT preset box: move the level/width sliders to the preset."""
    from medcnn.preprocess import CT_PRESETS

    preset = st.session_state.get("ct_preset")
    if preset in CT_PRESETS:
        level, width = CT_PRESETS[preset]
        st.session_state["ct_level"], st.session_state["ct_width"] = int(level), int(width)


def ct_custom() -> None:
    """``on_change`` of the level/width sliders: the window is now custom."""
    st.session_state["ct_preset"] = "custom"


def attention_location(display: np.ndarray, heatmap: np.ndarray) -> str | None:
    """One line for a chest X-ray: the share of the map's mass outside the estimated thorax
    and on the image margins (where text markers sit), each next to what a map that ignores
    the image would give (the region's area share). None when the map is empty."""
    from medcnn.audit.saliency import location_metrics, margin_mask, thorax_mask

    m = location_metrics(heatmap, thorax=thorax_mask(display), margin=margin_mask(heatmap.shape))
    if m.get("outside_thorax") is None:
        return None
    return (f"{m['outside_thorax']:.0%} of the attention lies outside the estimated thorax "
            f"(a map that ignores the image: {m['outside_thorax_area']:.0%}); {m['margin_share']:.0%} on the "
            f"image margins where text markers sit ({m['margin_area']:.0%}). The thorax is a rough estimate "
            "(medcnn.audit.regions).")


def ig_convergence_text(params: dict) -> str:
    """One caption fragment saying how exactly an IG map adds up (completeness).

    ``rel_delta`` is |sum of attributions - (f(x) - f(baseline))| / |f(x) - f(baseline)|;
    ``rel_local_error`` is the same without cancellation between path segments, the more
    cautious figure (see ``medcnn/explain/ig.py``).
    """
    from medcnn.explain.ig import completeness_text

    if "rel_delta" not in params:
        return ""
    text = " · " + completeness_text(params)
    if params.get("rule") != "fixed" and params.get("converged") is False and params.get("tol") is not None:
        text += (f" · NOT within the {params['tol']:.0%} tolerance after {params['steps']} steps: "
                 "read fine detail with caution")
    return text


def ood_message(ood: Any) -> tuple[str | None, list[str]]:
    """Title and reasons of the out-of-distribution warning (``(None, [])`` when not flagged):
    :func:`medcnn.visualize.presentation.ood_heading`, the words every page and report share."""
    from medcnn.visualize.presentation import ood_heading

    return ood_heading(ood)
