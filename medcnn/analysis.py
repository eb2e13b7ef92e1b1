"""One record per analysed image: it grows stage by stage and is never rebuilt from the raw bytes.

An upload's path (``STYLE.md``, rule 16) is image -> pipeline result -> prediction -> gate verdict
-> explanations. :class:`Analysis` holds that path for one image read with one model card, frame
and window, filled in this order:

1. :meth:`Analysis.with_image`: the image's non-identifying :class:`~medcnn.io.ImageMeta` (the
   pixels stay with the reader's cache; the record does not keep a second reference to them);
2. :meth:`Analysis.with_prediction`: the card, the :class:`~medcnn.inference.Prediction` (its
   pipeline result keeps the tensor and the display image; the full-resolution intermediate steps
   are replaced by :class:`StepView` thumbnails) and so the gate's verdict (``prediction.ood``);
3. :meth:`Analysis.explanation` / :meth:`Analysis.sanity`: maps and sanity checks, keyed by
   (method, target, objective), each computed once by the caller's ``compute`` and then memoised
   on the record.

A stage given out of order, or twice, raises :class:`StageError`: a later stage always reads
the earlier one it was handed, so nothing downstream decodes or predicts the image again.

What a result *means* is not decided here: the decision is the prediction's own
(:attr:`~medcnn.inference.Prediction.decision`, ``called``), a map's probability and call come
from that prediction (:func:`medcnn.explain.judged_by_head`, applied by whoever computes the map),
and the wording is :mod:`medcnn.visualize.presentation`'s.

Sharing: the app keeps records in a process-wide cache, so one record may serve two sessions at
once. Stages 1-2 are filled by one builder before the record is shared; the memoised stage takes a
lock per key, so one map is computed once however many sessions ask for it at the same moment, and
two different maps of one image do not wait for each other. The arrays a record hands out (display
image, heat maps) are made read-only: a caller that needs to draw on them copies first.

Privacy: a record holds pixels derived from the image (display image, step thumbnails, maps) and
non-identifying metadata only; it lives in memory and is never written to disk or logged.

Torch-free: numpy and the standard library (OpenCV for thumbnails, imported when used).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "MAX_EXPLANATIONS",
    "MAX_SANITY_CHECKS",
    "STAGES",
    "Analysis",
    "StageError",
    "StepView",
    "step_views",
    "thumbnail",
]

#: The stages of a record, in the order they are filled.
STAGES = ("started", "image", "prediction")
#: Most maps one record keeps (least recently used dropped first). A map and its signed
#: attribution at a 512 x 512 input are 2 MiB; five methods x a few targets is what one user tries.
MAX_EXPLANATIONS = 16
#: Most sanity checks one record keeps (each is a user's explicit click).
MAX_SANITY_CHECKS = 4
_THUMB = 384  # max side of preprocessing-step images sent to the browser

T = TypeVar("T")


class StageError(RuntimeError):
    """A stage of an :class:`Analysis` was filled out of order or twice (a programming error)."""


# --------------------------------------------------------------------------- step views
@dataclass
class StepView:
    """One preprocessing step for display: name, parameters, image (H, W) float32 [0, 1], and the
    shape the step produced (the last step's: the model's ``(1, 1, H, W)`` tensor)."""

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


def step_views(steps: Sequence[Any], max_side: int = _THUMB) -> list[StepView]:
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


def _read_only(obj: Any, *names: str) -> None:
    """Make the named ndarray attributes of ``obj`` read-only (shared between sessions)."""
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, np.ndarray):
            value.flags.writeable = False


# --------------------------------------------------------------------------- the record
@dataclass(eq=False)
class Analysis:
    """Everything known about one image read with one card, frame and window (module docstring).

    Attributes:
        key: Hex SHA-256 of the image's bytes.
        card_path: The model card's ``.json``.
        frame: Frame of a multi-frame DICOM (None: the reader's default, the middle one).
        window: The VOI window asked for (None: the card's default; a preset name or
            ``(level, width)``).
        meta: Stage ``"image"``: the image's non-identifying :class:`~medcnn.io.ImageMeta`.
        card: Stage ``"prediction"``: the :class:`~medcnn.models.card.ModelCard` that predicted.
        prediction: Stage ``"prediction"``: the :class:`~medcnn.inference.Prediction`; its
            ``pipeline_result`` holds the tensor and the display image, its ``steps`` are empty.
        steps: Stage ``"prediction"``: the pipeline's steps as thumbnails, in order.
    """

    key: str
    card_path: str
    frame: int | None = None
    window: Any = None
    meta: Any = None
    card: Any = None
    prediction: Any = None
    steps: list[StepView] = field(default_factory=list)
    _explanations: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _sanity: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _locks: dict = field(default_factory=dict, init=False, repr=False)
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False)

    # ----------------------------------------------------------------------- stages
    @property
    def stage(self) -> str:
        """The last stage filled (:data:`STAGES`)."""
        if self.prediction is not None:
            return "prediction"
        return "image" if self.meta is not None else "started"

    def with_image(self, meta: Any) -> Analysis:
        """Stage ``"image"``: the decoded image's metadata.

        Raises:
            StageError: the image stage is already filled.
        """
        if self.meta is not None:
            raise StageError(f"image {self.key[:8]}: the image stage is already filled; build a new record")
        self.meta = meta
        return self

    def with_prediction(self, card: Any, prediction: Any, steps: Sequence[StepView] = ()) -> Analysis:
        """Stage ``"prediction"``: the card, its prediction of this image and the step thumbnails.

        The prediction's display image is made read-only (the record is shared).

        Raises:
            StageError: no image stage yet, or a prediction is already there.
        """
        if self.meta is None:
            raise StageError(f"image {self.key[:8]}: fill the image stage (with_image) before the prediction")
        if self.prediction is not None:
            raise StageError(f"image {self.key[:8]}: the prediction stage is already filled; build a new record")
        _read_only(getattr(prediction, "pipeline_result", None), "display")
        self.card, self.prediction, self.steps = card, prediction, list(steps)
        return self

    def _require_prediction(self, what: str) -> None:
        if self.prediction is None:
            raise StageError(f"image {self.key[:8]}: {what} needs the prediction stage (with_prediction) first")

    # ----------------------------------------------------------------------- what the prediction says
    @property
    def verdict(self) -> Any:
        """The out-of-distribution gate's verdict (:class:`~medcnn.ood.OODResult`) of the prediction."""
        self._require_prediction("the gate's verdict")
        return self.prediction.ood

    @property
    def withheld(self) -> bool:
        """True when the gate withholds the result: nothing may be presented as a result, no map made."""
        return bool(self.verdict.withheld)

    @property
    def display(self) -> np.ndarray:
        """The model-input image, float32 (H, W) in [0, 1], read-only: the overlay's background."""
        self._require_prediction("the display image")
        return self.prediction.pipeline_result.display

    @property
    def targets(self) -> list[str]:
        """What a map can explain, in menu order (the card's head decides)."""
        self._require_prediction("the explanation targets")
        return list(self.card.head_rule.explain_targets(self.prediction))

    @property
    def default_target(self) -> str:
        """The target a map explains unless the user picks another (the card's head decides: the
        decided label, or a multi-label card's top finding)."""
        self._require_prediction("the default target")
        return self.card.head_rule.default_target(self.prediction)

    # ----------------------------------------------------------------------- memoised stage
    def explanation(self, method: str, target: str, objective: str, compute: Callable[[], T]) -> T:
        """The map of ``target`` by ``method`` explaining ``objective``: ``compute()`` the first time,
        the memoised result afterwards (its heat map and attribution are made read-only).

        Args:
            method: Registry name of the attribution method.
            target: The explained label.
            objective: What the map explains (``"auto"``, ``"logit"``, ...).
            compute: Makes the explanation from this record's prediction; called at most once per
                key while the record keeps it (:data:`MAX_EXPLANATIONS`). An error it raises is
                not memoised.

        Raises:
            StageError: no prediction yet.
            ValueError: the gate withholds this image (a map would only look like evidence).
        """
        self._require_prediction("an explanation")
        if self.withheld:
            raise ValueError("the out-of-distribution gate withholds this image's result, so no map is made of "
                             "it; choose the model that reads this kind of image")
        made = self._memo(self._explanations, ("explanation", method, target, objective), compute,
                          MAX_EXPLANATIONS)
        _read_only(made, "heatmap", "attribution")
        return made

    def sanity(self, method: str, target: str, objective: str, compute: Callable[[], T]) -> T:
        """The model-randomisation check of one map (same key as :meth:`explanation`), memoised like it.

        Raises:
            StageError: no prediction yet.
            ValueError: the gate withholds this image.
        """
        self._require_prediction("a sanity check")
        if self.withheld:
            raise ValueError("the out-of-distribution gate withholds this image's result, so there is no map to "
                             "check")
        return self._memo(self._sanity, ("sanity", method, target, objective), compute, MAX_SANITY_CHECKS)

    @property
    def explanations(self) -> dict[tuple[str, str, str], Any]:
        """The maps the record holds now: ``(method, target, objective) -> explanation`` (a copy)."""
        with self._lock:
            return {k[1:]: v for k, v in self._explanations.items()}

    def _memo(self, store: OrderedDict, key: tuple, compute: Callable[[], T], limit: int) -> T:
        with self._lock:
            if key in store:
                store.move_to_end(key)
                return store[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one computation per key; other keys of this record go on meanwhile
            with self._lock:
                if key in store:
                    return store[key]
            value = compute()
            with self._lock:
                store[key] = value
                while len(store) > limit:
                    store.popitem(last=False)
                self._locks.pop(key, None)
            return value
