"""One PACS instance through the serving path: the same reader, card choice, gate and explanation as an upload.

:func:`analyze_instance` is the PACS twin of the predict command's per-file step
(``medcnn.cli.predict``): :func:`medcnn.io.read_image` -> :func:`medcnn.inference.resolve_card`
(modality decides, or the named card) -> a cached :class:`medcnn.inference.Predictor` (its
out-of-distribution gate decides whether the result may be shown) -> for a shown result, the
explanation of the decided target (:func:`medcnn.explain.explain`) drawn as an overlay. The
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

from medcnn.notices import collected

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
    """Card path -> loaded :class:`medcnn.inference.Predictor`, loaded once (thread-safe)."""

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
        The analysis; ``reason`` says why an image is not analysed (a modality no model reads,
        the gate's verdict, a medcnn result).

    Raises:
        NotAnImageError: the instance holds no pixel data.
        UnsupportedImageError, CardError: pixels that cannot be decoded, a broken card.
    """
    import pydicom

    from medcnn.explain.methods import METHODS
    from medcnn.inference import resolve_card
    from medcnn.io import read_image
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
    with collected():  # soft problems are in meta.warnings, shown by the callers
        image = read_image(data)
    result.meta = image.meta
    try:
        card_path = resolve_card(image.meta, model, weights_dir)
    except ValueError as e:  # a modality no model reads: not analysed, with the reason
        result.reason = str(e)
        return result
    predictor = predictors.get(card_path)
    result.card = predictor.card
    try:
        pred = predictor.predict(image, keep_steps=False)
    except ValueError as e:  # the card refuses this modality (check_modality)
        result.reason = str(e)
        return result
    result.prediction = pred
    result.display = pred.pipeline_result.display
    if pred.ood.withheld:
        result.reason = "; ".join(pred.ood.reasons) or "outside what the model reads"
        return result
    result.target = _target(predictor.card, pred)
    if explain_result:
        _explain(result, predictor)
    return result


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
