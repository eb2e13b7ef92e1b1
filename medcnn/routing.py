"""Which model answers an image, and why: the one routing rule of the app and the scoring engine.

:func:`medcnn.inference.resolve_card` names the card a modality calls for. A PNG/JPEG carries no
modality, so that first choice (the chest X-ray model) may be wrong: a CT slice exported as PNG is
outside what a chest X-ray model reads. :func:`route` settles it with the models' own
out-of-distribution gates:

* a model named by the caller answers, and is never rerouted;
* a DICOM of a modality no model reads (MR, US, ...) is not analysed, with the reason;
* otherwise the modality's family is asked (CT -> the CT model; CR, DX -> the chest X-ray model); a
  PNG/JPEG is asked of the chest X-ray model first, then of the CT model if that one has a gate (a
  fallback without a gate could not tell that the image is within its scope). The first model whose
  gate accepts the image answers;
* when no gate accepts it, the first (withheld) result stays and the reason names the family whose
  gate scores it closer (score / refusal threshold, 1 at the refusal line).

The caller predicts. One image at a time, :func:`route` takes a callable ``predict(card_path) ->
Prediction`` (the app passes its cached, compute-slotted predictions). A caller that batches many
images (:class:`medcnn.scoring.Scorer`) asks in two passes, with no callback: :func:`next_to_ask`
names the card an image still needs a prediction from (None once its route is decided), the caller
predicts the images waiting on one card together, and :func:`decide` then builds the route from the
predictions it has. :func:`route` is those two passes with ``predict`` filling the predictions.
Torch-free: only the catalogue (card files) is read here.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from medcnn.models.catalogue import AUTO, CARD_FAMILIES, choose_model, load_card, resolve_card

__all__ = ["FAMILIES", "NAMED", "NO_MODALITY_ORDER", "Route", "candidates", "decide", "first_card", "next_to_ask",
           "route", "unread_reason"]

#: Model family -> (its name, what an image of it looks like, a DICOM modality it reads).
FAMILIES: dict[str, tuple[str, str, str]] = {"CXR": ("chest X-ray", "a chest X-ray", "DX"),
                                             "CT": ("CT", "a CT slice", "CT")}
#: The families asked, in order, about an image with no modality (PNG/JPEG, ``"OT"``).
NO_MODALITY_ORDER: tuple[str, ...] = ("CXR", "CT")
#: ``how`` of a route whose model the caller named (the default of :func:`route`'s ``named``).
NAMED = "named by the caller"


@dataclass
class Route:
    """Which model answers an image and why (:func:`route`).

    Attributes:
        card_path: The answering card's ``.json`` ("" when no model reads the image).
        prediction: Its prediction (None when no model reads the image); withheld by its gate when
            no gate accepts the image.
        how: How the model was chosen, for a caption (e.g. ``"auto-chosen for PNG/JPEG"``).
        rerouted: An earlier model's gate found the image outside its scope and a later one reads it.
        reason: Why the image is not analysed and what to do ("" when it is analysed).
    """

    card_path: str = ""
    prediction: Any = None
    how: str = ""
    rerouted: bool = False
    reason: str = ""

    def describe(self) -> str:
        """``how``, then ``reason`` after a semicolon when there is one (one line for a result row)."""
        return f"{self.how}; {self.reason}" if self.reason else self.how


def _modality(meta: Any) -> str:
    return (meta.modality or "OT").upper()


def unread_reason(meta: Any) -> str:
    """Why no model here reads the image's modality, and which ones they read ("" when a model
    family reads it): the reason of a route that finds no model (MR, US, ...)."""
    modality = _modality(meta)
    if modality in CARD_FAMILIES:
        return ""
    return f"no model here reads {modality} images: the CT model reads CT, the chest X-ray model CR, DX, PNG and JPEG"


def _has_gate(card_path: str) -> bool:
    return load_card(card_path).ood_path is not None


def _candidates(meta: Any, weights_dir: str | Path | None) -> Iterator[tuple[str, str]]:
    """``(family, card path)`` of each model to ask under auto, in order; families without a card
    are passed over, and so is a fallback without a gate."""
    modality = _modality(meta)
    asked = 0
    for fam in NO_MODALITY_ORDER if modality == "OT" else (CARD_FAMILIES[modality],):
        try:
            path = str(choose_model(replace(meta, modality=FAMILIES[fam][2]), weights_dir))
        except ValueError:  # no card of this family: the next one may read it
            continue
        if asked and not _has_gate(path):  # a fallback needs a gate that can accept the image
            continue
        asked += 1
        yield fam, path


def candidates(meta: Any, weights_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """``(family, card path)`` of each model :func:`route` asks under auto, in order (empty for a
    modality no model reads). It depends on the modality only: a batch finds it once per modality."""
    return list(_candidates(meta, weights_dir)) if _modality(meta) in CARD_FAMILIES else []


def first_card(meta: Any, weights_dir: str | Path | None = None) -> Path:
    """The card :func:`route` asks first under auto (a batch predicts it for many images at once).

    Raises:
        ValueError: a modality no model reads, or no card of its family (the resolver's message).
    """
    if _modality(meta) in CARD_FAMILIES:
        for _, path in _candidates(meta, weights_dir):
            return Path(path)
    return choose_model(meta, weights_dir)  # raises the resolver's own message


def next_to_ask(asked: Sequence[tuple[str, str]], predictions: Mapping[str, Any]) -> str | None:
    """The card whose prediction an image's route still needs (first of the two passes), or None once
    the route can be decided.

    The models are asked in order and the first whose gate accepts the image answers, so the next
    card is the first of ``asked`` without a prediction, unless an earlier one's gate accepts it.

    Args:
        asked: :func:`candidates` of the image.
        predictions: Card path -> this image's prediction with that card, for the cards predicted
            so far.
    """
    for _, path in asked:
        if path not in predictions:
            return path
        if not predictions[path].ood.withheld:
            return None
    return None


def decide(meta: Any, asked: Sequence[tuple[str, str]], predictions: Mapping[str, Any],
           weights_dir: str | Path | None = None) -> Route:
    """The route of an image under auto from the predictions it has (second of the two passes).

    Args:
        meta: The image's :class:`~medcnn.io.ImageMeta`.
        asked: :func:`candidates` of ``meta``.
        predictions: Card path -> prediction, for every card :func:`next_to_ask` named.
        weights_dir: Folder of the cards (for the resolver's message when none serves the image).

    Returns:
        The :class:`Route`; ``reason`` is set when no model reads the image (no prediction) or when
        no gate accepts it (the first model's withheld prediction).

    Raises:
        ValueError: no card of the image's family (the resolver's message), or a card
            :func:`next_to_ask` names has no prediction in ``predictions`` yet.
    """
    if unread_reason(meta):
        return Route(how="auto", reason=unread_reason(meta))
    missing = next_to_ask(asked, predictions)
    if missing is not None:
        raise ValueError(f"the route needs this image's prediction with {missing} first (see next_to_ask)")
    tried: list[tuple[str, str, Any]] = []
    for fam, path in asked:
        tried.append((fam, path, predictions[path]))
        if not tried[-1][2].ood.withheld:
            break
    if not tried:
        choose_model(meta, weights_dir)  # raises the resolver's own message (no card of the family)
    (fam0, *first), (fam, *last) = tried[0], tried[-1]
    kind = "PNG/JPEG" if _modality(meta) == "OT" else _modality(meta)
    if not last[1].ood.withheld:
        if len(tried) == 1:
            return Route(*last, how=f"auto-chosen for {kind}")
        return Route(*last, how=f"auto-chosen: the {FAMILIES[fam0][0]} model's gate found this image outside "
                                f"its scope; the {FAMILIES[fam][0]} model reads it", rerouted=True)
    reason = ""
    if len(tried) > 1:
        ood = [t[2].ood for t in tried]
        closer = tried[min(range(len(tried)), key=lambda i: (ood[i].score or float("inf"))
                           / (ood[i].refuse_threshold or 1.0))][0]
        reason = (f"no model's gate finds this image within its scope. It looks more like {FAMILIES[closer][1]}: "
                  f"if it is one, choose the {FAMILIES[closer][0]} model")
    return Route(*first, how=f"auto-chosen for {kind}", reason=reason)


def route(meta: Any, predict: Callable[[str], Any], model: str | Path | None = None,
          weights_dir: str | Path | None = None, named: str = NAMED) -> Route:
    """Route one image to the model that answers it (module docstring: the rule).

    Args:
        meta: The image's :class:`~medcnn.io.ImageMeta`.
        predict: ``predict(card_path) -> Prediction`` of this image with that card (its ``ood``
            verdict decides). Called once per model asked, in order.
        model: A card name or path (never rerouted), or None / ``"auto"``: by modality and gates.
        weights_dir: Folder of the cards (default :func:`medcnn.inference.default_weights_dir`).
        named: ``how`` of a named model (the app says where it was named).

    Returns:
        The :class:`Route` (:func:`decide`).

    Raises:
        ValueError: no such named card, or no card of the image's family (the resolver's message);
            whatever ``predict`` raises.
    """
    if model is not None and str(model) and str(model).lower() != AUTO:
        path = str(resolve_card(meta, model, weights_dir))
        return Route(path, predict(path), how=named)
    asked = candidates(meta, weights_dir)
    predictions: dict[str, Any] = {}
    while (path := next_to_ask(asked, predictions)) is not None:
        predictions[path] = predict(path)
    return decide(meta, asked, predictions, weights_dir)
