"""Inference: one loaded model + its preprocessing, calibrated probabilities, model choice.

Which card serves an image is decided by the torch-free :mod:`medcnn.models.catalogue`
(:func:`resolve_card`, :func:`list_cards`, :func:`load_card`), re-exported here.

A :class:`Predictor` loads the model once and is safe to share between threads (the app
caches one per model with ``st.cache_resource``): ``predict`` only runs the network under
:func:`torch.inference_mode` and never changes the model's state.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medcnn.models.card import CardError, ModelCard
from medcnn.models.catalogue import (  # re-exported: "which card serves an image" has always been asked here
    AUTO,
    CARD_FAMILIES,
    DEFAULT_CARDS,
    WEIGHTS_ENV,
    choose_model,
    default_weights_dir,
    list_cards,
    load_card,
    resolve_card,
)
from medcnn.models.checkpoint import predict_logits  # re-exported: the serving path's batch primitive
from medcnn.io import ImageMeta, MedImage
from medcnn.models.head import NO_FINDING, NOT_ANALYSED
from medcnn.ood import OODGate, OODResult, check_resolution, check_scope, resolve_scope

__all__ = [
    "CARD_FAMILIES",
    "DEFAULT_CARDS",
    "NOT_ANALYSED",
    "NO_FINDING",
    "Prediction",
    "Predictor",
    "check_modality",
    "choose_model",
    "default_weights_dir",
    "list_cards",
    "load_card",
    "resolve_card",
    "predict_logits",
]

@dataclass
class Prediction:
    """Result of one image.

    Attributes:
        probabilities: label -> calibrated probability (the card's head: ``softmax(logits / T)``
            or ``sigmoid(logit / T_f)`` per finding).
        logits: raw logits in label order (explanations target these, not the probabilities).
        label: predicted label. Binary: the positive label iff ``positive_prob >= threshold``;
            multi-class: argmax of the calibrated probabilities.
        positive_prob: calibrated probability of the card's positive label.
        above_threshold: ``positive_prob >= threshold``.
        threshold: the card's operating threshold (Youden's J on validation).
        findings: multi-label (sigmoid) cards only: one row per presented finding, sorted by
            ``relative`` (the probability rescaled so that the finding's operating point is 0.5,
            see :func:`medcnn.models.outputs.relative_to_threshold`), each
            ``{"name", "probability", "threshold", "relative", "above"}``. ``label`` then lists
            the findings above their operating points, and ``positive_prob`` / ``threshold``
            refer to the card's ``positive_label`` finding.
        called: the labels the decision names, as data (:class:`medcnn.models.head.Decision`).
        model: card name.
        seconds: wall time of preprocessing + forward pass.
        pipeline_result: the :class:`medcnn.preprocess.PipelineResult` (tensor, display, steps).
        ood: the out-of-distribution verdict (image gate + header scope checks). When
            ``ood.withheld`` the image is not what this model reads: ``label`` and the
            probabilities are kept for the record but must not be presented as a result.
    """

    probabilities: dict[str, float]
    logits: list[float]
    label: str
    positive_prob: float
    above_threshold: bool
    threshold: float
    model: str
    seconds: float
    pipeline_result: Any = field(default=None, repr=False)
    ood: OODResult = field(default_factory=OODResult)
    findings: list[dict[str, Any]] = field(default_factory=list)
    called: list[str] = field(default_factory=list)

    @property
    def decision(self) -> str:
        """What to present: the label, or :data:`NOT_ANALYSED` when the gate withholds it."""
        return NOT_ANALYSED if self.ood.withheld else self.label

    @property
    def decided(self) -> list[str] | None:
        """The labels the decision names, as data (``called``), or ``None`` when the gate withholds
        the result."""
        return None if self.ood.withheld else list(self.called)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the pipeline result)."""
        return {
            "model": self.model, "decision": self.decision, "probabilities": self.probabilities,
            "logits": self.logits, "label": self.label, "positive_prob": self.positive_prob,
            "above_threshold": self.above_threshold, "threshold": self.threshold,
            "seconds": self.seconds, "ood": self.ood.to_dict(),
            **({"findings": self.findings} if self.findings else {}),
        }


def check_modality(card: ModelCard, meta: ImageMeta) -> None:
    """Refuse a DICOM whose Modality the model was not made for (an MR gets no CXR answer).

    PNG/JPEG (``"OT"``) are accepted by every model: they carry no modality.

    Raises:
        ValueError: the image's Modality is not in ``card.dicom_modalities``.
    """
    modality = (meta.modality or "OT").upper()
    allowed = [m.upper() for m in card.dicom_modalities]
    if modality != "OT" and allowed and modality not in allowed:
        raise ValueError(
            f"model {card.name!r} accepts DICOM modalities {', '.join(allowed)}, but the image "
            f"is {modality}: this model cannot analyse it"
        )


class Predictor:
    """A model card's network + pipeline, loaded once.

    Args:
        card: A :class:`ModelCard` or the path of its ``.json`` (or ``.pt``).
        device: Device (default :func:`medcnn.models.get_device`).
        check: Refuse DICOM images whose Modality the card does not list.

    Raises:
        CardError: missing or inconsistent card / weights.
    """

    def __init__(self, card: ModelCard | str | Path, device: Any = None, check: bool = True):
        from medcnn.models import load_model
        from medcnn.preprocess import Pipeline

        self.model, self.card = load_model(card, device=device)
        self.device = next(self.model.parameters()).device
        self.pipeline = Pipeline.from_config(self.card.preprocessing)
        self.check = check
        self.scope = resolve_scope(self.card.modality, self.card.scope)
        self.gate: OODGate | None = None
        self._features = None
        if self.card.ood_path is not None:
            from medcnn.ood.features import FeatureExtractor

            try:
                self.gate = OODGate.load(self.card.ood_path, sha256=self.card.ood.get("sha256"))
            except ValueError as e:
                raise CardError(f"card {self.card.name!r}: {e}") from None
            self._features = FeatureExtractor(self.model, self.gate.layers, self.gate.grid)
        if tuple(self.pipeline.input_size) != tuple(self.card.input_size):
            raise CardError(
                f"card {self.card.name!r}: input_size {self.card.input_size} differs from its "
                f"pipeline's resize {self.pipeline.input_size}"
            )

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)

    def _decide(self, logits: np.ndarray, seconds: float, results: Sequence[Any],
                verdicts: Sequence[OODResult]) -> list[Prediction]:
        """One :class:`Prediction` per image: the card's :class:`~medcnn.models.head.Head` decides."""
        card, head = self.card, self.card.head_rule
        out = []
        for z, p, res, verdict in zip(logits, head.probabilities(logits), results, verdicts):
            d = head.decide(p)
            out.append(Prediction(
                probabilities={name: float(v) for name, v in zip(card.labels, p)},
                logits=[float(v) for v in z], label=d.label, positive_prob=d.positive_prob,
                above_threshold=d.above_threshold, threshold=d.threshold, model=card.name,
                seconds=seconds, pipeline_result=res, ood=verdict, findings=d.findings, called=d.called,
            ))
        return out

    def predict(self, img: MedImage, window: Any = None, keep_steps: bool = True) -> Prediction:
        """Predict one image.

        Args:
            img: Decoded image (:func:`medcnn.io.read_image`).
            window: Optional VOI override passed to the pipeline.
            keep_steps: Keep intermediate pipeline images in ``pipeline_result.steps``.

        Raises:
            ValueError: DICOM modality not accepted by this model (see :func:`check_modality`).
        """
        return self.predict_batch([img], window=window, keep_steps=keep_steps)[0]

    def predict_batch(
        self, images: Sequence[MedImage], window: Any = None, keep_steps: bool = False
    ) -> list[Prediction]:
        """Predict several images in one forward pass; ``seconds`` is the per-image share."""
        if not images:
            return []
        t0 = time.perf_counter()
        if self.check:
            for img in images:
                check_modality(self.card, img.meta)
        results = [self.pipeline(img, window=window, keep_steps=keep_steps) for img in images]
        x = torch.cat([r.tensor for r in results])
        if self.gate is None:
            logits_t = predict_logits(self.model, x, self.device)
            verdicts = [OODResult() for _ in images]
        else:  # one forward pass gives the logits and the gate's features
            upright = [self.pipeline.upright_by_header(img.meta) for img in images]
            logits_t, verdicts = self.gate.judge(self._features, x, upright=upright)
        for img, result, verdict in zip(images, results, verdicts):
            check_scope(img.meta, self.scope, verdict, body=result.params.get("body_crop"))
            check_resolution(img.pixels.shape, self.card.input_size, verdict)
        logits = logits_t.numpy().astype(np.float64)
        seconds = (time.perf_counter() - t0) / len(images)
        return self._decide(logits, seconds, results, verdicts)
