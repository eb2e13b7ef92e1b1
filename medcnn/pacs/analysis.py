"""One PACS instance through the serving path: the same reader, card choice, gate and explanation as an upload.

:func:`analyze_instance` scores the instance with the one scoring engine (:class:`medcnn.scoring.Scorer`,
as the predict command does for a file): it reads the pixels (:func:`medcnn.io.read_image`), chooses
the card (:func:`medcnn.inference.resolve_card`: modality decides, or the named card), and predicts
with a cached :class:`medcnn.inference.Predictor` (its out-of-distribution gate decides whether the
result may be shown); what fails there is the Scorer's error and stage. For a shown result it then
draws the explanation of the decided target (:func:`medcnn.explain.explain`) as an overlay. The
:class:`InstanceAnalysis` it returns is what the DICOM builders (:mod:`medcnn.pacs.objects`) and
the pages use; an image that is not analysed carries the reason instead.

Identity: an instance is named by :func:`uid_hash`, the SHA-256 of its SOP Instance UID, wherever
something is recorded (the audit database); the UID itself is only kept in memory to reference the
source image in the results.
"""
from __future__ import annotations

import hashlib
import io
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["InstanceAnalysis", "PredictorCache", "analyze_instance", "is_medcnn_result", "presented_findings",
           "uid_hash", "MANUFACTURER"]

#: Manufacturer (0008,0070) of every object medcnn writes; such objects are never analysed again.
MANUFACTURER = "medcnn"


def uid_hash(sop_instance_uid: str) -> str:
    """Hex SHA-256 of a SOP Instance UID: how a PACS image is named in the audit database."""
    return hashlib.sha256(str(sop_instance_uid).strip().encode("ascii")).hexdigest()


def is_medcnn_result(ds: Any) -> bool:
    """Whether a dataset is one of medcnn's own results (its Manufacturer is :data:`MANUFACTURER`)."""
    return str(getattr(ds, "Manufacturer", "")) == MANUFACTURER


@dataclass
class InstanceAnalysis:
    """One instance's analysis (or why there is none).

    Attributes:
        sop_instance_uid, sop_class_uid: The source instance (kept to reference it).
        source: The source dataset (pydicom; in memory only, for the Patient/Study modules).
        card: The model card that served it (None when no model could).
        prediction: The :class:`medcnn.inference.Prediction` (None when no model ran).
        display: The model's display image (H x W float in [0, 1]).
        overlay: The explanation overlay (H x W x 3 uint8), None when not analysed.
        method, method_label, target: The explanation method, its label and what it explains.
        reason: Why the image is not analysed ("" when it is).
        explanation: The :class:`medcnn.explain.Explanation` (None when not analysed).
        error, error_stage: The scoring engine's ``error`` and ``error_stage`` (:data:`medcnn.scoring.STAGES`)
            when reading, choosing the model or predicting refused the image ("" otherwise).
    """

    sop_instance_uid: str
    sop_class_uid: str
    source: Any = field(default=None, repr=False)
    meta: Any = field(default=None, repr=False)
    card: Any = field(default=None, repr=False)
    prediction: Any = field(default=None, repr=False)
    display: Any = field(default=None, repr=False)
    overlay: Any = field(default=None, repr=False)
    explanation: Any = field(default=None, repr=False)
    method: str = ""
    method_label: str = ""
    target: str | None = None
    reason: str = ""
    error: str = ""
    error_stage: str = ""

    @property
    def analysed(self) -> bool:
        """True when a model ran and its gate lets the result be shown."""
        return self.prediction is not None and not self.prediction.ood.withheld

    @property
    def decision(self) -> str:
        """The prediction's decision, or :data:`~medcnn.models.head.NOT_ANALYSED` (the same text as a
        withheld :class:`~medcnn.inference.Prediction`) when no model ran or the gate withheld it."""
        from medcnn.models.head import NOT_ANALYSED

        return self.prediction.decision if self.analysed else NOT_ANALYSED

    @property
    def key(self) -> str:
        """:func:`uid_hash` of the source instance."""
        return uid_hash(self.sop_instance_uid)

    def to_dict(self) -> dict[str, Any]:
        """The command line's JSON result (without the ``sent`` list)."""
        pred = self.prediction
        return {"sop_instance_uid": self.sop_instance_uid, "decision": self.decision,
                "probabilities": pred.probabilities if self.analysed else None,
                "ood": pred.ood.to_dict() if pred is not None else None,
                "model": self.card.name if self.card is not None else None,
                "findings": presented_findings(self) if self.analysed else [],
                "reason": self.reason or None}


class PredictorCache:
    """Card path -> loaded :class:`medcnn.inference.Predictor`, loaded once (thread-safe), shared by the
    scorers of :func:`analyze_instance` (:meth:`scorer`)."""

    def __init__(self, device: Any = None):
        self.device = device
        self._loaded: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def get(self, card_path: str | Path) -> Any:
        from medcnn.inference import Predictor

        path = Path(card_path)
        with self._lock:
            if path not in self._loaded:
                self._loaded[path] = Predictor(path, device=self.device)
            return self._loaded[path]

    def scorer(self, card_path: Path | None = None, weights_dir: str | Path | None = None) -> Any:
        """A :class:`medcnn.scoring.Scorer` of one image at a time that keeps the image (the
        explanation needs its tensor) and takes its models from this cache.

        Args:
            card_path: The card serving every image; None: chosen from each image's modality.
            weights_dir: Folder of the cards for that choice.
        """
        from medcnn.scoring import Scorer

        return Scorer(card_path, weights_dir, device=self.device, batch_size=1, keep_images=True, loader=self.get)


def presented_findings(analysis: InstanceAnalysis) -> list[dict[str, Any]]:
    """One row per presented finding: ``{"name", "probability", "threshold", "above"}``.

    A multi-label card presents its shown findings (each against its own operating point); a
    single-label card presents its positive label against the card's threshold.
    """
    pred = analysis.prediction
    if pred is None:
        return []
    if pred.findings:
        return [{k: row[k] for k in ("name", "probability", "threshold", "above")} for row in pred.findings]
    return [{"name": analysis.card.positive_label, "probability": float(pred.positive_prob),
             "threshold": float(pred.threshold), "above": bool(pred.above_threshold)}]


def _target(card: Any, pred: Any) -> str:
    """What the map explains: the card's head decides (the top finding of a multi-label card, else
    the decided label), as on the Analyze page."""
    return card.head_rule.default_target(pred)


def analyze_instance(data: bytes, predictors: PredictorCache, *, model: str | None = None,
                     weights_dir: str | Path | None = None, method: str = "gradcam",
                     explain_result: bool = True) -> InstanceAnalysis:
    """Analyse one DICOM instance (Part 10 bytes) like an upload.

    Args:
        data: The instance as retrieved (any transfer syntax :mod:`medcnn.io` decodes).
        predictors: Loaded models, shared between instances.
        model: Card name or path (default: chosen from the image's modality).
        weights_dir: Folder of the cards (default :func:`medcnn.inference.default_weights_dir`).
        method: Explanation method (a key of :data:`medcnn.explain.METHODS`).
        explain_result: Compute the explanation overlay of an analysed image.

    Returns:
        The analysis; ``reason`` says why an image is not analysed (a modality no model reads, no
        such model, the gate's verdict, a medcnn result), with the scoring engine's ``error`` and
        ``error_stage`` when that engine refused it.

    Raises:
        NotAnImageError: the instance holds no pixel data.
        UnsupportedImageError, CardError, OSError, RuntimeError: pixels that cannot be decoded, a
            broken card or weights file, a failed forward pass (the scoring engine's exception).
    """
    import pydicom

    from medcnn.explain.methods import METHODS
    from medcnn.inference import AUTO, resolve_card
    from medcnn.pacs.errors import NotAnImageError

    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    result = InstanceAnalysis(str(ds.get("SOPInstanceUID", "")), str(ds.get("SOPClassUID", "")), source=ds,
                              method=method, method_label=METHODS[method].label)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise NotAnImageError("this instance holds no image (no Pixel Data): it is a report or another "
                              "non-image object, so there is nothing to analyse")
    if is_medcnn_result(ds):
        result.reason = "this is a result medcnn made (secondary capture of an overlay), not a source image"
        return result
    try:  # a named card is found once, before the engine (which takes a card path)
        card_path = None if model is None or str(model).lower() == AUTO else resolve_card(None, model, weights_dir)
    except ValueError as e:  # no such model: not analysed, with the reason
        result.reason, result.error, result.error_stage = str(e), f"{type(e).__name__}: {e}", "model"
        return result
    scored = predictors.scorer(card_path, weights_dir).score([(result.key, data)])[0]
    result.meta = scored.image.meta if scored.image is not None else None
    if scored.exception is not None:
        result.error, result.error_stage = scored.row["error"], scored.row["error_stage"]
        if not _refused(scored.exception, result.error_stage):
            raise scored.exception
    if scored.card_path is not None:  # the chosen card, loaded (a broken one was raised above)
        result.card = predictors.get(scored.card_path).card
    if scored.exception is not None:
        result.reason = str(scored.exception)
        return result
    pred = scored.prediction
    result.prediction = pred
    result.display = pred.pipeline_result.display
    if pred.ood.withheld:
        result.reason = "; ".join(pred.ood.reasons) or "outside what the model reads"
        return result
    result.target = _target(result.card, pred)
    if explain_result:
        _explain(result, predictors.get(scored.card_path))
    return result


def _refused(e: Exception, stage: str) -> bool:
    """Whether the scoring engine's exception means "this model does not analyse this image" (a
    modality no model reads, or the card refuses it; the prediction refused as invalid input) rather
    than a failure: unreadable pixels, a broken card or weights file, a failed forward pass."""
    if stage == "model":
        return type(e) is ValueError  # a CardError (its subclass) is a broken card
    return stage == "predict" and isinstance(e, ValueError)


def _explain(result: InstanceAnalysis, predictor: Any) -> None:
    from medcnn.explain import explain, judged_by_head
    from medcnn.explain.methods import METHODS
    from medcnn.visualize import overlay

    card, pred = predictor.card, result.prediction
    layer = card.target_layer if METHODS[result.method].needs_layer else None
    head = card.head_rule  # what the map explains follows the head (the class logit of a sigmoid head)
    exp = explain(predictor.model, pred.pipeline_result.tensor.to(predictor.device), head.index(result.target),
                  result.method, layer=layer, pipeline=predictor.pipeline, head=head)
    result.explanation = judged_by_head(exp, head, pred, result.target)
    exp = result.explanation
    result.overlay = overlay(result.display, exp.heatmap, alpha=0.4)
