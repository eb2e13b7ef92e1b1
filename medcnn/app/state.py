"""Cached model loading and per-image results shared by the Streamlit pages.

The pages (``app.py``, ``pages/*.py``) stay thin: they lay out widgets and call these
functions, never torch or Captum directly. Display helpers (charts, metadata rows,
colour bars) are in :mod:`medcnn.app.display`, batch/ZIP analysis in
:mod:`medcnn.app.batch`, model-card figures in :mod:`medcnn.app.cards`.

Caching (split by kind, as Streamlit recommends):

* :func:`get_predictor` - ``st.cache_resource``: one model per card file for all sessions
  (:class:`~medcnn.inference.Predictor` is thread-safe; explanations never hook it).
* The torch work inside the cached functions (a prediction, a map, a sanity check) runs in a
  compute slot of :mod:`medcnn.app.compute`: a bounded number at once, each with the same torch
  thread count, however many sessions ask; a cache hit takes no slot.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from medcnn.notices import collected
from medcnn.app.compute import ComputeConfigError, compute_slot, compute_slots
from medcnn.models.card import ModelCard
from medcnn.io import ImageMeta, MedImage, read_image
from medcnn.visualize.report import DISCLAIMER

__all__ = [
    "AUTO_MODEL",
    "DISCLAIMER",
    "StepView",
    "deidentified_upload",
    "device_description",
    "digest",
    "error_message",
    "explain_upload",
    "Routed",
    "get_predictor",
    "list_models",
    "predict_upload",
    "read_upload",
    "require_models",
    "resolve_card_path",
    "route_upload",
    "sanity_upload",
    "step_views",
    "thumbnail",
    "warm_up",
    "weights_dir",
]

#: Sidebar choice meaning "pick the model from the image's modality".
AUTO_MODEL = "Auto (by modality)"

#: Lifetime of a cached per-image result (seconds): nothing derived from an upload outlives it.
CACHE_TTL_S = 900
_THUMB = 384  # max side of preprocessing-step images sent to the browser


# --------------------------------------------------------------------------- models
def weights_dir() -> Path:
    """Folder of the model cards (:func:`medcnn.models.catalogue.default_weights_dir`: env
    ``MEDCNN_WEIGHTS_DIR``, else ``weights`` in the directory the app was started from)."""
    from medcnn.models.catalogue import default_weights_dir

    return default_weights_dir()


def list_models(folder: str | Path | None = None) -> list[ModelCard]:
    """Valid cards (``.json`` + ``.pt``) in the weights folder, by name (:mod:`medcnn.models.catalogue`)."""
    from medcnn.models.catalogue import list_cards

    with collected():  # a card the folder cannot serve is simply not listed
        return list_cards(folder or weights_dir())


def resolve_card_path(meta: ImageMeta, choice: str = AUTO_MODEL, folder: str | Path | None = None) -> str:
    """Card path for an image: auto by modality, or the model named in ``choice``
    (:func:`medcnn.models.catalogue.resolve_card` decides).

    Raises:
        ValueError: unsupported modality or no matching model.
    """
    from medcnn.models.catalogue import resolve_card

    with collected():  # the choice's error, not the folder's skipped cards, is what the page shows
        model = None if choice == AUTO_MODEL or not choice else choice
        return str(resolve_card(meta, model, folder or weights_dir()))


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


def require_models(cards: list) -> None:
    """Stop the page with an explanation when no model weights are installed."""
    if not cards:
        st.info(f"No model weights found in `{weights_dir()}`. Add `<name>.pt` + `<name>.json` "
                "(or set `MEDCNN_WEIGHTS_DIR`) and reload.")
        st.stop()


def device_description() -> str:
    """``"GPU: <name>"`` or ``"CPU (<n> threads, <s> compute slots)"`` for the device models run on
    (threads and slots: :mod:`medcnn.app.compute`)."""
    import torch

    from medcnn.models import get_device

    try:
        device = get_device()
    except ValueError as e:
        return f"unavailable ({e})"
    try:
        policy = compute_slots().policy.describe()
    except ComputeConfigError as e:
        policy = f"compute settings not usable: {e}"
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(device)} ({policy})"
    return f"CPU ({policy})"


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
    with compute_slot():
        pred = predictor.predict(MedImage(np.full((h, w), 128, np.float32), meta), keep_steps=False)
        explain(predictor.model, pred.pipeline_result.tensor, 0, "gradcam", layer=predictor.card.target_layer,
                head=predictor.card.head_rule)
    return True


# --------------------------------------------------------------------------- per image
def digest(data: bytes) -> str:
    """SHA-256 hex digest of the uploaded bytes (the cache key of an upload)."""
    return hashlib.sha256(data).hexdigest()


@st.cache_data(show_spinner=False, max_entries=4, ttl=CACHE_TTL_S)
def read_upload(key: str, _data: bytes, frame: int | None = None) -> MedImage:
    """Decode an upload (cached by ``key`` = :func:`digest` of ``_data``).

    Raises:
        UnsupportedImageError: not a readable DICOM / PNG / JPEG (message says why).
    """
    with collected():  # soft problems are in meta.warnings; shown by the page
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


@st.cache_data(show_spinner=False, max_entries=16, ttl=CACHE_TTL_S)
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
    predictor = get_predictor(card_path)
    with compute_slot():
        pred = predictor.predict(img, window=window, keep_steps=True)
    views = step_views(pred.pipeline_result.steps)
    pred.pipeline_result.steps = []
    return pred, views


@st.cache_data(show_spinner=False, max_entries=32, ttl=CACHE_TTL_S)
def explain_upload(key: str, _data: bytes, card_path: str, frame: int | None, window: Any,
                   method: str, target: str, objective: str = "auto") -> Any:
    """Explanation (heat map at the model's input size) of one upload for one target class.

    The map explains ``objective`` (default: the logit difference that sets the displayed
    probability, :mod:`medcnn.explain.objective`; ``"logit"`` for the single logit). The
    result carries the target's displayed probability, the card's operating point for it,
    whether the model calls it (the prediction's own decision) and a ``notice`` for the
    page when the map could mislead (:func:`medcnn.explain.at_operating_point`).

    Cached by (file hash, model, frame, window, method, target, objective): overlay
    options are not part of the key.
    """
    from medcnn.explain import explain, judged_by_head

    pred, _ = predict_upload(key, _data, card_path, frame, window)
    predictor = get_predictor(card_path)
    card, head = predictor.card, predictor.card.head_rule
    with compute_slot():
        exp = explain(predictor.model, pred.pipeline_result.tensor, head.index(target), method=method,
                      layer=card.target_layer, pipeline=predictor.pipeline, head=head, objective=objective)
    return judged_by_head(exp, head, pred, target)


@st.cache_data(show_spinner=False, max_entries=8, ttl=CACHE_TTL_S)
def sanity_upload(key: str, _data: bytes, card_path: str, frame: int | None, window: Any,
                  method: str, target: str, objective: str = "auto") -> dict[str, Any]:
    """Model-randomisation sanity check (Adebayo et al. 2018) of one explanation (same objective)."""
    from medcnn.explain.sanity import randomisation_test

    pred, _ = predict_upload(key, _data, card_path, frame, window)
    predictor = get_predictor(card_path)
    head = predictor.card.head_rule
    with compute_slot():
        return randomisation_test(predictor.model, pred.pipeline_result.tensor, head.index(target), method,
                                  layer=predictor.card.target_layer, pipeline=predictor.pipeline,
                                  objective=objective, head=head)


@st.cache_data(show_spinner=False, max_entries=4, ttl=CACHE_TTL_S)
def deidentified_upload(key: str, _data: bytes) -> tuple[bytes, Any]:
    """The upload de-identified (PS3.15 Basic Profile) for download, computed once per file.

    A case shown at a meeting needs its descriptions, not the scanner's free text: the Clean
    Descriptors Option keeps descriptions with only known words, and attributes the profile does
    not list are removed unless the image needs them (:mod:`medcnn.privacy.deidentify`).

    Raises:
        ValueError: not a DICOM that can be de-identified.
    """
    from medcnn.privacy import deidentify_bytes

    return deidentify_bytes(_data, clean_descriptors=True, remove_unlisted=True)


# --------------------------------------------------------------------------- routing
@dataclass
class Routed:
    """Which model answers an upload and why (:func:`route_upload`): its card and result (``card_path``
    "" and ``prediction`` None when no model reads the image), ``how`` it was chosen (for the caption),
    ``rerouted`` (an earlier model's gate found it outside its scope) and ``reason``: why it is not
    analysed and what to do ("" otherwise)."""

    card_path: str = ""
    prediction: Any = None
    steps: list[StepView] = field(default_factory=list)
    how: str = ""
    rerouted: bool = False
    reason: str = ""


def route_upload(key: str, data: bytes, choice: str = AUTO_MODEL, frame: int | None = None,
                 window: Any = None) -> Routed:
    """The one routing of an image to a model (:func:`medcnn.routing.route` decides), for Analyze,
    Batch and Case review alike, with the cached predictions of :func:`predict_upload`.

    A model chosen in the sidebar answers; under :data:`AUTO_MODEL` a PNG/JPEG goes to the chest X-ray
    model, then to the CT model when the first model's gate finds it outside its scope; MR, US, ...:
    not analysed, with the reason.

    Raises:
        UnsupportedImageError, CardError, ValueError: unreadable image, bad card, unknown model name,
            a DICOM modality the chosen model does not accept.
    """
    from medcnn.routing import route

    meta = read_upload(key, data, frame).meta
    named = resolve_card_path(meta, choice) if choice and choice != AUTO_MODEL else None
    steps: dict[str, list[StepView]] = {}

    def predict(card_path: str) -> Any:
        pred, steps[card_path] = predict_upload(key, data, card_path, frame, window)
        return pred

    r = route(meta, predict, named, weights_dir(), named="chosen in the sidebar")
    return Routed(r.card_path, r.prediction, steps.get(r.card_path, []), r.how, r.rerouted, r.reason)


# --------------------------------------------------------------------------- errors
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
