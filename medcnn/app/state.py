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
* :func:`read_upload` - ``st.cache_resource`` keyed by the SHA-256 of the file bytes and the
  frame: one decode per file and frame, shared (its pixels are read-only). The bytes travel as
  ``_data``, an argument Streamlit leaves out of the key, so hashing happens once per upload.
* :func:`analyze_upload` - ``st.cache_resource``: the one :class:`~medcnn.analysis.Analysis`
  record of an image read with one card (and its files' mtime), frame and window, built stage by
  stage from the decoded image: metadata, prediction (with the gate's verdict), step thumbnails;
  maps and sanity checks are then memoised on it by (method, target, objective). The overlay is
  *not* part of any key: changing the opacity only redraws. Records are shared by every session
  (two users of one image get one map), so what they hand out is read-only.
* :func:`route_upload` - which record answers an upload (:mod:`medcnn.routing` decides).

Privacy: uploads are only held in memory (the caches live in this process); nothing is
written to disk or logged. Cached values hold pixels and non-identifying metadata only, and
every per-image cache has a lifetime (:data:`CACHE_TTL_S`) and a bound; "Forget this image"
clears them (:mod:`medcnn.app.forget`).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from medcnn.analysis import Analysis, StepView, step_views, thumbnail
from medcnn.notices import collected
from medcnn.app.compute import ComputeConfigError, compute_slot, compute_slots
from medcnn.models.card import ModelCard
from medcnn.io import ImageMeta, MedImage, read_image
from medcnn.visualize.report import DISCLAIMER

__all__ = [
    "AUTO_MODEL",
    "CHOSEN",
    "DISCLAIMER",
    "Analysis",
    "analyze_upload",
    "explain_analysis",
    "explain_tensor",
    "StepView",
    "deidentified_upload",
    "device_description",
    "digest",
    "error_message",
    "Routed",
    "get_predictor",
    "list_models",
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
#: How a row or caption says its model was chosen when the user picked it (every page alike).
CHOSEN = "chosen in the sidebar"

#: Lifetime of a cached per-image result (seconds): nothing derived from an upload outlives it.
CACHE_TTL_S = 900


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


def _every_argument(cached: Any) -> Any:
    """``cached`` called with every argument, defaults filled in, in order.

    Streamlit keys a call by the arguments as passed: ``f(key, data, card)`` and
    ``f(key, data, card, None, None)`` would be two entries, and the second caller would compute the
    same result again. The wrapper keeps the cached function's ``clear`` (:mod:`medcnn.app.forget`).
    """
    signature = inspect.signature(cached)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return cached(*bound.args)

    functools.update_wrapper(call, cached, updated=())
    call.clear = cached.clear  # type: ignore[attr-defined]
    return call


@_every_argument
@st.cache_resource(show_spinner=False, max_entries=4, ttl=CACHE_TTL_S)
def read_upload(key: str, _data: bytes, frame: int | None = None) -> MedImage:
    """Decode an upload once per file and frame (cached by ``key`` = :func:`digest` of ``_data``).

    The image is shared by every caller (no copy per rerun): its pixels are read-only.

    Raises:
        UnsupportedImageError: not a readable DICOM / PNG / JPEG (message says why).
    """
    with collected():  # soft problems are in meta.warnings; shown by the page
        image = read_image(_data, frame=frame)
    image.pixels.flags.writeable = False
    return image


def analyze_upload(key: str, data: bytes, card_path: str, frame: int | None = None,
                   window: Any = None) -> Analysis:
    """The :class:`~medcnn.analysis.Analysis` record of an upload read with one card, frame and window,
    keyed also by the card files' modification time: a card rewritten in place (a site's
    recalibration installed under the same name) is read again, never served from an old record."""
    return _analyze(key, data, card_path, _mtime(str(card_path)), frame, window)


@st.cache_resource(show_spinner=False, max_entries=16, ttl=CACHE_TTL_S)
def _analyze(key: str, _data: bytes, card_path: str, card_mtime: float, frame: int | None,
             window: Any) -> Analysis:
    """The record of :func:`analyze_upload` (every argument given, so one call is one key).

    Built once per key, stage by stage: the decoded image of :func:`read_upload` (not the bytes
    again), then the prediction (one compute slot) with the gate's verdict, and the pipeline steps
    as thumbnails (the full-resolution intermediates are dropped from the prediction). Maps and
    sanity checks are added to the record later (:func:`explain_analysis`, :func:`sanity_upload`).

    Raises:
        UnsupportedImageError, CardError, ValueError: unreadable image, bad card, or a DICOM
            modality the model does not accept.
    """
    image = read_upload(key, _data, frame)
    record = Analysis(key, str(card_path), frame, window).with_image(image.meta)
    predictor = get_predictor(card_path)
    with compute_slot():
        pred = predictor.predict(image, window=window, keep_steps=True)
    views = step_views(pred.pipeline_result.steps)
    pred.pipeline_result.steps = []
    return record.with_prediction(predictor.card, pred, views)


analyze_upload.clear = _analyze.clear  # type: ignore[attr-defined] - Forget this image clears the records


def explain_analysis(record: Analysis, method: str, target: str, objective: str = "auto") -> Any:
    """Explanation (heat map at the model's input size) of one target of an analysed image.

    Computed once per (method, target, objective), memoised on the record. The map explains
    ``objective`` (default: the logit difference that sets the displayed probability; ``"logit"``:
    the single logit). The result carries the displayed probability, the operating point, the
    prediction's own call (:func:`medcnn.explain.judged_by_head`) and a ``notice`` when it could mislead.

    Raises:
        ValueError: unknown method or target, or the gate withholds the image.
    """
    def compute() -> Any:
        from medcnn.explain import judged_by_head

        exp = explain_tensor(record.card_path, record.prediction.pipeline_result.tensor, method, target, objective)
        return judged_by_head(exp, record.card.head_rule, record.prediction, target)

    return record.explanation(method, target, objective, compute)


def explain_tensor(card_path: str, tensor: Any, method: str, target: str, objective: str = "auto") -> Any:
    """The map of one target of a model input ``tensor`` (the card's pipeline output), on the app's
    shared model, in a compute slot: what a record's map (:func:`explain_analysis`) and a Batch
    thumbnail are made of."""
    from medcnn.explain import explain

    predictor = get_predictor(str(card_path))
    card, head = predictor.card, predictor.card.head_rule
    with compute_slot():
        return explain(predictor.model, tensor, head.index(target), method=method, layer=card.target_layer,
                       pipeline=predictor.pipeline, head=head, objective=objective)


def sanity_upload(record: Analysis, method: str, target: str, objective: str = "auto") -> dict[str, Any]:
    """Model-randomisation sanity check (Adebayo et al. 2018) of one map of an analysed image (same
    objective), memoised on the record like the map.

    Raises:
        ValueError: unknown method or target, or the gate withholds the image.
    """
    def compute() -> dict[str, Any]:
        from medcnn.explain.sanity import randomisation_test

        predictor = get_predictor(record.card_path)
        head = record.card.head_rule
        with compute_slot():
            return randomisation_test(predictor.model, record.prediction.pipeline_result.tensor, head.index(target),
                                      method, layer=record.card.target_layer, pipeline=predictor.pipeline,
                                      objective=objective, head=head)

    return record.sanity(method, target, objective, compute)


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
    """Which model answers an upload and why (:func:`route_upload`): the answering model's
    :class:`~medcnn.analysis.Analysis` record (None when no model reads the image), ``how`` it was
    chosen (for the caption), ``rerouted`` (an earlier model's gate found it outside its scope) and
    ``reason``: why it is not analysed and what to do ("" otherwise)."""

    analysis: Analysis | None = None
    how: str = ""
    rerouted: bool = False
    reason: str = ""

    @property
    def card_path(self) -> str:
        """The answering card's ``.json`` ("" when no model reads the image)."""
        return self.analysis.card_path if self.analysis is not None else ""

    @property
    def prediction(self) -> Any:
        """The answering record's prediction (None when no model reads the image)."""
        return self.analysis.prediction if self.analysis is not None else None


def route_upload(key: str, data: bytes, choice: str = AUTO_MODEL, frame: int | None = None,
                 window: Any = None) -> Routed:
    """The one routing of an image to a model (:func:`medcnn.routing.route` decides), for Analyze
    and Case review, over the records of :func:`analyze_upload` (one per card asked; Batch routes
    through the scoring engine, by the same rule).

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
    records: dict[str, Analysis] = {}

    def predict(card_path: str) -> Any:
        records[card_path] = analyze_upload(key, data, card_path, frame, window)
        return records[card_path].prediction

    r = route(meta, predict, named, weights_dir(), named=CHOSEN)
    return Routed(records.get(r.card_path), r.how, r.rerouted, r.reason)


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
