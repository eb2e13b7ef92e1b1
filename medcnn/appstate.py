"""Cached loaders and small helpers shared by the Streamlit pages.

The pages (``app.py``, ``pages/*.py``) stay thin: they lay out widgets and call these
functions, never torch or Captum directly.

Caching (split by kind, as Streamlit recommends):

* :func:`get_predictor` - ``st.cache_resource``: one model per card file for all sessions
  (:class:`~medcnn.inference.Predictor` is thread-safe; explanations never hook it).
* :func:`read_upload`, :func:`predict_upload`, :func:`explain_upload`,
  :func:`sanity_upload` - ``st.cache_data`` keyed by the SHA-256 of the file bytes plus
  the options (model, frame, window, method, target). The bytes travel as ``_data``, an
  argument Streamlit leaves out of the key, so hashing happens once per upload. The
  overlay (opacity, colormap, contour) is *not* part of any key: changing the opacity
  only redraws, it never recomputes the explanation.

Privacy: uploads are only held in memory (the caches live in this process); nothing is
written to disk or logged. Cached values hold pixels and non-identifying metadata only.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from medcnn.card import ModelCard
from medcnn.io import ImageMeta, MedImage, read_image
from medcnn.report import DISCLAIMER

__all__ = [
    "analyze_batch_item",
    "AUTO_MODEL",
    "BatchItem",
    "BatchResult",
    "card_figure_png",
    "card_mtime",
    "COLORMAPS",
    "ct_custom",
    "device_description",
    "digest",
    "DISCLAIMER",
    "error_message",
    "expand_uploads",
    "explain_upload",
    "find_card",
    "format_params",
    "get_predictor",
    "histogram_chart",
    "is_ct_dicom",
    "list_models",
    "META_FIELDS",
    "meta_rows",
    "method_options",
    "predict_upload",
    "probability_chart",
    "read_upload",
    "resolve_card_path",
    "rows_to_csv",
    "sanity_summary",
    "sanity_upload",
    "score_split",
    "step_views",
    "StepView",
    "sync_ct_sliders",
    "thumbnail",
    "to_uint8",
    "warm_up",
    "weights_dir",
    "with_colorbar",
    "ZIP_MAX_MEMBER_BYTES",
    "ZIP_MAX_MEMBERS",
    "ZIP_MAX_TOTAL_BYTES",
]

#: Sidebar choice meaning "pick the model from the image's modality".
AUTO_MODEL = "Auto (by modality)"


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

_REPO = Path(__file__).resolve().parents[1]
_THUMB = 384  # max side of preprocessing-step images sent to the browser


# --------------------------------------------------------------------------- models
def weights_dir() -> Path:
    """Folder of the model cards: env ``MEDCNN_WEIGHTS_DIR``, else ``<repo>/weights``."""
    return Path(os.environ.get("MEDCNN_WEIGHTS_DIR") or _REPO / "weights")


def list_models(folder: str | Path | None = None) -> list[ModelCard]:
    """Valid cards (``.json`` + ``.pt``) in the weights folder, by name."""
    from medcnn.inference import list_cards

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list_cards(folder or weights_dir())


def find_card(name: str, folder: str | Path | None = None) -> ModelCard:
    """The card called ``name``.

    Raises:
        ValueError: no such card (the message lists the available ones).
    """
    cards = list_models(folder)
    for card in cards:
        if card.name == name:
            return card
    raise ValueError(f"model {name!r} not found; available: {', '.join(c.name for c in cards) or 'none'}")


def resolve_card_path(meta: ImageMeta, choice: str = AUTO_MODEL, folder: str | Path | None = None) -> str:
    """Card path for an image: auto by modality, or the model named in ``choice``.

    Raises:
        ValueError: unsupported modality or no matching model.
    """
    if choice == AUTO_MODEL or not choice:
        from medcnn.inference import choose_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return str(choose_model(meta, folder or weights_dir()))
    return str(find_card(choice, folder).path)


def _mtime(card_path: str) -> float:
    p = Path(card_path)
    return max((q.stat().st_mtime for q in (p, p.with_suffix(".pt")) if q.exists()), default=0.0)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_predictor(card_path: str, mtime: float) -> Any:
    from medcnn.inference import Predictor

    return Predictor(card_path)


def get_predictor(card_path: str) -> Any:
    """The shared :class:`~medcnn.inference.Predictor` of a card (reloaded when its files change).

    Raises:
        CardError: the card or its weights are unreadable.
    """
    return _load_predictor(str(card_path), _mtime(str(card_path)))


@st.cache_resource(show_spinner=False)
def device_description() -> str:
    """``"GPU: <name>"`` or ``"CPU (<n> threads)"`` for the device models run on."""
    import torch

    from medcnn.models import get_device

    try:
        device = get_device()
    except ValueError as e:
        return f"unavailable ({e})"
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)}"
    return f"CPU ({torch.get_num_threads()} threads)"


# --------------------------------------------------------------------------- per image
def digest(data: bytes) -> str:
    """SHA-256 hex digest of the uploaded bytes (the cache key of an upload)."""
    return hashlib.sha256(data).hexdigest()


@st.cache_data(show_spinner=False, max_entries=16)
def read_upload(key: str, _data: bytes, frame: int | None = None) -> MedImage:
    """Decode an upload (cached by ``key`` = :func:`digest` of ``_data``).

    Raises:
        UnsupportedImageError: not a readable DICOM / PNG / JPEG (message says why).
    """
    with warnings.catch_warnings():  # soft problems are in meta.warnings; shown by the page
        warnings.simplefilter("ignore")
        return read_image(_data, frame=frame)


@dataclass
class StepView:
    """One preprocessing step for display: name, parameters, image (H, W) float32 [0, 1]."""

    name: str
    params: dict[str, Any]
    image: np.ndarray
    shape: tuple[int, ...]


def thumbnail(image: np.ndarray, max_side: int = _THUMB) -> np.ndarray:
    """Downscale (area interpolation) so the longer side is at most ``max_side``."""
    import cv2

    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def step_views(steps: list[Any], max_side: int = _THUMB) -> list[StepView]:
    """Display copies of pipeline steps: downscaled, and the last (tensor) min-max scaled.

    The tensor step keeps its exact pixels (it is already at the model's input size);
    its parameters hold the real value range.
    """
    views = []
    for i, s in enumerate(steps):
        img = np.asarray(s.image, dtype=np.float32)
        shape = tuple(img.shape)
        if i == len(steps) - 1:
            lo, hi = float(img.min()), float(img.max())
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
            shape = (1, 1, *shape)
        views.append(StepView(s.name, dict(s.params), thumbnail(np.clip(img, 0, 1), max_side), shape))
    return views


@st.cache_data(show_spinner=False, max_entries=32)
def predict_upload(key: str, _data: bytes, card_path: str, frame: int | None = None,
                   window: Any = None) -> tuple[Any, list[StepView]]:
    """Prediction of an upload with one model, plus display copies of the pipeline steps.

    The returned prediction's ``pipeline_result.steps`` is emptied (the full-resolution
    intermediates are large); the downscaled :class:`StepView` list replaces it.

    Raises:
        UnsupportedImageError, CardError, ValueError: unreadable image, bad card, or a DICOM
            modality the model does not accept.
    """
    img = read_upload(key, _data, frame)
    pred = get_predictor(card_path).predict(img, window=window, keep_steps=True)
    views = step_views(pred.pipeline_result.steps)
    pred.pipeline_result.steps = []
    return pred, views


@st.cache_data(show_spinner=False, max_entries=64)
def explain_upload(key: str, _data: bytes, card_path: str, frame: int | None, window: Any,
                   method: str, target: str) -> Any:
    """Explanation (heat map at the model's input size) of one upload for one target class.

    Cached by (file hash, model, frame, window, method, target): overlay options are not
    part of the key.
    """
    from medcnn.explain import explain

    pred, _ = predict_upload(key, _data, card_path, frame, window)
    predictor = get_predictor(card_path)
    target_index = predictor.card.labels.index(target)
    return explain(predictor.model, pred.pipeline_result.tensor, target_index, method=method,
                   layer=predictor.card.target_layer)


@st.cache_data(show_spinner=False, max_entries=16)
def sanity_upload(key: str, _data: bytes, card_path: str, frame: int | None, window: Any,
                  method: str, target: str) -> dict[str, Any]:
    """Model-randomisation sanity check (Adebayo et al. 2018) of one explanation."""
    from medcnn.sanity import randomisation_test

    pred, _ = predict_upload(key, _data, card_path, frame, window)
    predictor = get_predictor(card_path)
    target_index = predictor.card.labels.index(target)
    return randomisation_test(predictor.model, pred.pipeline_result.tensor, target_index, method,
                              layer=predictor.card.target_layer)


# --------------------------------------------------------------------------- display
def method_options() -> dict[str, Any]:
    """Explanation methods for the drop-down: name -> class (``label``, ``description``...)."""
    from medcnn.explain import METHODS

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


# --------------------------------------------------------------------------- small helpers
#: Colormaps offered for the overlay (perceptually uniform first).
COLORMAPS = ["jet", "inferno", "viridis", "magma", "turbo", "hot"]


def error_message(what: str, error: BaseException) -> str:
    """A short, user-facing message for an error raised while ``what`` (no traceback).

    ``ValueError`` subclasses (``UnsupportedImageError``, ``CardError``, a modality the
    model does not accept) carry actionable messages and are shown as they are; anything
    else is an internal error, named by type only.
    """
    if isinstance(error, ValueError):
        return f"Error while {what}: {error}"
    return (f"Unexpected error while {what} ({type(error).__name__}). The file could not be "
            "analysed; try another file or model.")


def warm_up(cards: list[ModelCard]) -> None:
    """Load every model and run one prediction + Grad-CAM on a blank image, once per process,
    so the first real upload does not pay for imports and lazy initialisation."""
    for card in cards:
        try:
            _warm(str(card.path), _mtime(str(card.path)))
        except Exception:  # noqa: BLE001 - a broken card is reported when it is used
            pass


@st.cache_resource(show_spinner=False, max_entries=8)
def _warm(card_path: str, mtime: float) -> bool:
    from medcnn.explain import explain

    predictor = get_predictor(card_path)
    h, w = predictor.card.input_size
    meta = ImageMeta(source_format="png", rows=h, columns=w)
    pred = predictor.predict(MedImage(np.full((h, w), 128, np.float32), meta), keep_steps=False)
    explain(predictor.model, pred.pipeline_result.tensor, 0, "gradcam", layer=predictor.card.target_layer)
    return True


def is_ct_dicom(meta: ImageMeta) -> bool:
    """True for CT DICOM (pixels in Hounsfield units: presets and sliders apply)."""
    return meta.source_format == "dicom" and (meta.modality or "").upper() == "CT"


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


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] (H, W) -> uint8 for ``st.image`` (other dtypes pass through)."""
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a
    return (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def with_colorbar(rgb: np.ndarray, cmap: str) -> np.ndarray:
    """``rgb`` (H, W, 3) uint8 with a vertical colour bar (top = 1, bottom = 0) on its right."""
    from medcnn.visualize import colorbar_image

    h, w = rgb.shape[:2]
    gap = np.full((h, max(2, w // 40), 3), 255, np.uint8)
    return np.concatenate([rgb, gap, colorbar_image(cmap, h, max(4, w // 16))], axis=1)


def format_params(params: dict[str, Any]) -> str:
    """Compact ``k=v`` text of a step's parameters (floats to 4 significant digits)."""
    parts = []
    for k, v in params.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, (list, tuple)):
            v = "x".join(f"{x:.4g}" if isinstance(x, float) else str(x) for x in v)
        parts.append(f"{k}={v}")
    return ", ".join(parts) or "no parameters"


def sanity_summary(result: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Verdict text and per-step rows of a :func:`medcnn.sanity.randomisation_test` result."""
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


# --------------------------------------------------------------------------- batch
#: ZIP guards (zip bombs): member count, size of one member, total uncompressed size.
ZIP_MAX_MEMBERS = 500
ZIP_MAX_MEMBER_BYTES = 128 * 2**20
ZIP_MAX_TOTAL_BYTES = 512 * 2**20
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class BatchItem:
    """One file of a batch: its name (``zip/member`` for ZIP members), bytes, or an error."""

    name: str
    data: bytes | None
    error: str = ""


def expand_uploads(
    files: Iterable[tuple[str, bytes]],
    max_members: int = ZIP_MAX_MEMBERS,
    max_member_bytes: int = ZIP_MAX_MEMBER_BYTES,
    max_total_bytes: int = ZIP_MAX_TOTAL_BYTES,
) -> Iterator[BatchItem]:
    """Uploaded files as batch items; ZIP archives are opened in memory, never extracted.

    Directories, hidden files and ``__MACOSX`` entries are skipped. A member whose
    declared or actual uncompressed size exceeds ``max_member_bytes`` becomes an error
    item (the read is bounded, so a lying header cannot exhaust memory); members beyond
    ``max_members`` or ``max_total_bytes`` are not read, and one error item says so.
    """
    for name, data in files:
        if data[:4] == _ZIP_MAGIC:
            yield from _zip_members(name, data, max_members, max_member_bytes, max_total_bytes)
        else:
            yield BatchItem(name, data)


def _zip_members(name: str, data: bytes, max_members: int, max_member_bytes: int,
                 max_total_bytes: int) -> Iterator[BatchItem]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError) as e:
        yield BatchItem(name, None, f"not a readable ZIP archive: {e}")
        return
    infos = [i for i in archive.infolist() if not i.is_dir()
             and not any(part.startswith(".") or part == "__MACOSX" for part in i.filename.split("/"))]
    if len(infos) > max_members:
        yield BatchItem(name, None, f"the ZIP holds {len(infos)} files; only the first {max_members} are read")
        infos = infos[:max_members]
    total = 0
    for info in infos:
        label = f"{name}/{info.filename}"
        if info.file_size > max_member_bytes:
            yield BatchItem(label, None, f"too large: {info.file_size / 2**20:.0f} MiB uncompressed "
                                         f"(limit {max_member_bytes / 2**20:.0f} MiB)")
            continue
        if total + info.file_size > max_total_bytes:
            yield BatchItem(label, None, f"skipped: the ZIP's uncompressed total exceeds "
                                         f"{max_total_bytes / 2**20:.0f} MiB")
            break
        try:
            with archive.open(info) as fh:
                content = fh.read(max_member_bytes + 1)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as e:
            yield BatchItem(label, None, f"cannot read this ZIP member: {e}")
            continue
        if len(content) > max_member_bytes:
            yield BatchItem(label, None, f"too large: over {max_member_bytes / 2**20:.0f} MiB uncompressed")
            continue
        total += len(content)
        yield BatchItem(label, content)


@dataclass
class BatchResult:
    """Row of the batch table plus what the thumbnail needs (None after an error)."""

    row: dict[str, Any]
    display: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    probability: float | None = None


def analyze_batch_item(item: BatchItem, model_choice: str = AUTO_MODEL, method: str = "gradcam") -> BatchResult:
    """Predict and explain one batch item; any error is caught into the row's ``error``."""
    row: dict[str, Any] = {"file": item.name, "modality": "", "model": "", "predicted label": "",
                           "probability": None, "flag": "", "error": item.error}
    if item.data is None:
        return BatchResult(row)
    try:
        key = digest(item.data)
        image = read_upload(key, item.data, None)
        row["modality"] = image.meta.modality
        card_path = resolve_card_path(image.meta, model_choice)
        pred, _ = predict_upload(key, item.data, card_path, None, None)
        row.update({"model": pred.model, "predicted label": pred.label,
                    "probability": round(pred.positive_prob, 4),
                    "flag": "⚑ positive" if pred.above_threshold else ""})
        expl = explain_upload(key, item.data, card_path, None, None, method, pred.label)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
        row["error"] = str(e) if isinstance(e, ValueError) else f"unexpected error ({type(e).__name__})"
        return BatchResult(row)
    return BatchResult(row, pred.pipeline_result.display, expl.heatmap, pred.probabilities[pred.label])


def rows_to_csv(rows: list[dict[str, Any]]) -> bytes:
    """Batch table as UTF-8 CSV bytes."""
    import pandas as pd

    return pd.DataFrame(rows).to_csv(index=False).encode("utf-8")


# --------------------------------------------------------------------------- model cards
@st.cache_data(show_spinner=False, max_entries=8)
def score_split(card_path: str, mtime: float, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(y, prob) of the card's model on one split of its training data (labels.csv in the card).

    Raises:
        ValueError: the card names no labels file that exists here, or the split is empty.
    """
    from medcnn.evaluate import score_dataset

    card = ModelCard.load(card_path)
    wanted = [str(p) for p in card.training.get("data", [])]
    data = [next((str(q) for q in (Path(p), _REPO / p) if q.exists()), None) for p in wanted]
    if not wanted or None in data:
        raise ValueError(f"the data of {card.name!r} ({card.training.get('data') or 'not recorded'}) "
                         "is not available on this machine")
    scores = score_dataset(card_path, data, split)
    return np.asarray(scores.y_pos), np.asarray(scores.prob())


@st.cache_data(show_spinner=False, max_entries=64)
def card_figure_png(kind: str, card_path: str, mtime: float, split: str) -> bytes:
    """PNG of one evaluation figure of a card: ``confusion`` (from the stored counts) or
    ``roc`` / ``pr`` / ``reliability`` (from :func:`score_split`)."""
    from medcnn import plots

    card = ModelCard.load(card_path)
    m = card.metrics.get(split, {})
    title = f"{card.name} ({split})"
    if kind == "confusion":
        labels = m.get("labels") or [f"not {card.positive_label}", card.positive_label]
        fig = plots.confusion_figure(m["confusion_matrix"], labels, f"{title}: threshold {card.threshold:.3f}")
    else:
        y, p = score_split(card_path, mtime, split)
        fig = {"roc": lambda: plots.roc_figure(y, p, card.threshold, f"{title}: ROC"),
               "pr": lambda: plots.pr_figure(y, p, card.threshold, f"{title}: precision-recall"),
               "reliability": lambda: plots.reliability_figure(y, p, title=f"{title}: reliability")}[kind]()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def card_mtime(card: ModelCard) -> float:
    """Modification time of a card's files (cache key part: edits invalidate figures)."""
    return _mtime(str(card.path))
