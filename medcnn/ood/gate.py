"""The image-based out-of-distribution gate: is this image like the ones the model was trained on?

Method (chosen, and measured against the alternatives, in each model card's ``ood`` section):
for every stage of the model the pooled feature vector (:mod:`medcnn.ood.features`) is
standardised and scored by its Mahalanobis distance under a probabilistic PCA Gaussian fitted on
the *training* images only (Tipping & Bishop 1999: the top ``k`` principal directions keep their
own variance, the rest share one residual variance; this is the Mahalanobis detector of Lee et
al. 2018 with a covariance that ~1,000 images can estimate). Each stage's distance is divided by
its median on the validation split, and the stages are averaged. No out-of-distribution image is
used to fit anything, so the gate is not tuned to the kinds of image it was checked on.

Thresholds are quantiles of the in-distribution *validation* scores:

* ``caution`` (97.5th percentile): above it the image is *unusual for this model*; the result is
  shown with a caution (about 2.5% of in-distribution images get it);
* ``refuse`` (99th percentile): above it the image is *not what this model reads*; the
  probabilities are not presented as a result.

A gate fitted with acquisition variants (:mod:`medcnn.ood.augment`) answers two questions,
shown separately (:class:`OODResult` ``kind`` and ``style``):

* **kind** -- is this the kind of image the model reads (anatomy, modality, view, orientation)?
  Its statistics are fitted on the training films *and* acquisition variants of them (exposure,
  contrast, noise, blur, resolution, compression, borders, crops, small tilts, burned-in text),
  so another hospital's acquisition alone does not move it. It has one threshold (the 97.5th
  percentile of the validation films and their variants): above it the image is withheld.
* **style** -- how far is this acquisition from the training films? Fitted on the training films
  as they are; it only cautions, when the acquisition lies beyond the 97.5th percentile of the
  validation films' variants ("acquired more differently than the films the model was checked on").
* **orientation** -- is the image upright? (:mod:`medcnn.ood.orientation`, same features): may
  withhold; not asked of a CT slice that its header turned upright (the ``orient`` step).

Every gate also withholds an image with no detail (:mod:`medcnn.ood.detail`: a flat field or a
smooth gradient), by a fixed rule. A gate without the variants (an older ``.ood.pt``) answers
the kind question alone.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medcnn.ood.detail import featureless
from medcnn.ood.orientation import OrientationCheck, reoriented
from medcnn.ood.stats import Stage, fit_stage, stages_from, stages_state

__all__ = ["Answer", "OODGate", "OODResult", "LEVELS", "STYLE_QUANTILE", "CAUTION_QUANTILE", "REFUSE_QUANTILE", "VARIANTS", "variants"]

#: Levels in increasing severity.
LEVELS = ("ok", "unusual", "outside")
CAUTION_QUANTILE = 0.975
REFUSE_QUANTILE = 0.99
#: Quantile of the validation films' acquisition variants above which the style question cautions
#: (it never withholds): the acquisition lies further from the training films than the variants
#: the gate and the model were checked on.
STYLE_QUANTILE = 0.975
_FORMAT = "medcnn-ood-ppca-1"
_FORMAT_2 = "medcnn-ood-ppca-2"  # kind (fitted with acquisition variants) + style

#: Re-orientations tried on a flagged image: if one of them looks like a training image, the
#: image was most likely uploaded rotated or with inverted grey levels, and the reason says so.
VARIANTS = {
    "rotated by 90 degrees": "rotated by 90 degrees (turn it back and upload it again)",
    "upside down": "upside down (rotated by 180 degrees)",
    "rotated by 270 degrees": "rotated by 90 degrees the other way (turn it back and upload it again)",
    "inverted": "shown with inverted grey levels (bones dark, air bright)",
}


def variants(x: Any) -> Any:
    """The :data:`VARIANTS` of a pipeline tensor (1, 1, H, W) as one (4, 1, H, W) batch
    (:func:`medcnn.ood.orientation.reoriented` to each orientation but upright, in that order)."""
    import torch

    return torch.cat([reoriented(x, k) for k in range(1, 5)])


@dataclass
class Answer:
    """One question's answer (the gate's ``kind`` or ``style`` part of an :class:`OODResult`).

    Attributes:
        level: ``"ok"``, ``"unusual"`` or ``"outside"`` (the style question never says ``"outside"``).
        score: The question's score (1.0 = a typical validation image).
        threshold: Caution threshold.
        refuse_threshold: Withholding threshold (None for the style question).
        reasons: Sentences a clinician can read.
    """

    level: str = "ok"
    score: float | None = None
    threshold: float | None = None
    refuse_threshold: float | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return self.level != "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "score": self.score, "threshold": self.threshold,
                "refuse_threshold": self.refuse_threshold, "reasons": list(self.reasons)}


@dataclass
class OODResult:
    """The gate's verdict on one image.

    Attributes:
        level: ``"ok"``, ``"unusual"`` (shown with a caution) or ``"outside"`` (not what this
            model reads: probabilities are not a result); the more severe of the two parts.
        score: Image score of the kind question (1.0 = a typical validation image); ``None``
            when no image gate ran.
        threshold: The caution threshold the score is compared with.
        refuse_threshold: Score above which the level is ``"outside"``.
        reasons: Sentences a clinician can read, one per finding (image and header checks).
        kind: Is this the kind of image the model reads? (None when no image gate ran.)
        style: How far is the acquisition from the training films? Only cautions; None when
            the gate has no style question.
    """

    level: str = "ok"
    score: float | None = None
    threshold: float | None = None
    refuse_threshold: float | None = None
    reasons: list[str] = field(default_factory=list)
    kind: Answer | None = None
    style: Answer | None = None

    @property
    def flagged(self) -> bool:
        return self.level != "ok"

    @property
    def withheld(self) -> bool:
        """True when the probabilities must not be presented as a result."""
        return self.level == "outside"

    def escalate(self, level: str, reason: str, question: str = "kind") -> None:
        """Raise the level to at least ``level`` and record ``reason``.

        Args:
            level: One of :data:`LEVELS`.
            reason: A sentence a clinician can read.
            question: ``"kind"`` (what the image is: may withhold) or ``"style"`` (how it was
                acquired: at most a caution). The part is updated when the result has it.
        """
        if question == "style" and level == "outside":
            raise ValueError("the style question only cautions; escalate the kind question to withhold")
        if LEVELS.index(level) > LEVELS.index(self.level):
            self.level = level
        self.reasons.append(reason)
        part = self.style if question == "style" else self.kind
        if part is not None:
            if LEVELS.index(level) > LEVELS.index(part.level):
                part.level = level
            part.reasons.append(reason)

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "level": self.level, "score": self.score,
                "threshold": self.threshold, "refuse_threshold": self.refuse_threshold,
                "reasons": list(self.reasons), "kind": self.kind.to_dict() if self.kind else None,
                "style": self.style.to_dict() if self.style else None}


class OODGate:
    """Fitted statistics + thresholds; scores pooled features from :class:`FeatureExtractor`.

    ``stages`` / ``caution`` / ``refuse`` are the kind question's; ``kind_index`` says which of
    ``layers`` it uses (all by default); ``style`` (optional) is the style question's
    ``(stages over all layers, caution threshold)``. Build with :meth:`fit`; persist with
    :meth:`save` / :meth:`load` (a ``.pt`` file of plain tensors, loaded with ``weights_only=True``).
    """

    def __init__(self, stages: Sequence[Stage], layers: Sequence[str], grid: int,
                 caution: float, refuse: float, info: dict[str, Any] | None = None,
                 kind_index: Sequence[int] | None = None,
                 style: tuple[Sequence[Stage], float] | None = None,
                 orientation: OrientationCheck | None = None):
        self.kind_index = tuple(range(len(layers)) if kind_index is None else (int(i) for i in kind_index))
        if len(stages) != len(self.kind_index) or not set(self.kind_index) <= set(range(len(layers))):
            raise ValueError(f"{len(stages)} fitted stages for layers {list(self.kind_index)} of {len(layers)}")
        if style is not None and len(style[0]) != len(layers):
            raise ValueError(f"{len(style[0])} style stages for {len(layers)} layers")
        self.stages = list(stages)
        self.layers = tuple(layers)
        self.grid = int(grid)
        self.caution = float(caution)
        self.refuse = float(refuse)
        self.info = dict(info or {})
        self.style_stages = list(style[0]) if style else None
        self.style_caution = float(style[1]) if style else None
        self.orientation = orientation

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, train: Sequence[np.ndarray], val: Sequence[np.ndarray], layers: Sequence[str],
            grid: int, components: int = 64, train_variants: Sequence[np.ndarray] | None = None,
            val_variants: Sequence[np.ndarray] | None = None,
            kind_layers: Sequence[str] | None = None) -> "OODGate":
        """Fit on in-distribution training features; set thresholds on validation features.

        Args:
            train: One (N_train, D_l) array per layer.
            val: One (N_val, D_l) array per layer (other images than ``train``).
            layers: Layer names (same order).
            grid: Pooling grid the features were made with.
            components: Principal directions kept per layer.
            train_variants: Features of acquisition variants of training films
                (:func:`medcnn.ood.augment.acquisition_variant`), one array per layer. When
                given, the kind question is fitted on ``train`` + these (its thresholds on
                ``val`` + ``val_variants``) and the style question on ``train`` alone.
            val_variants: Features of acquisition variants of validation films (required with
                ``train_variants``).
            kind_layers: The layers the kind question uses (default: all).

        Raises:
            ValueError: too few images, or shapes that do not match.
        """
        if len(val[0]) < 20:
            raise ValueError(f"need at least 20 validation images to set the thresholds, got {len(val[0])}")
        if (train_variants is None) != (val_variants is None):
            raise ValueError("pass both train_variants and val_variants, or neither")
        index = [list(layers).index(name) for name in (kind_layers or layers)]
        kind_train, kind_val = list(train), list(val)
        if train_variants is not None:
            kind_train = [np.concatenate([a, b]) for a, b in zip(train, train_variants)]
            kind_val = [np.concatenate([a, b]) for a, b in zip(val, val_variants)]
        stages = _fit_stages([kind_train[i] for i in index], [kind_val[i] for i in index], components)
        v = _mean_distance(stages, [kind_val[i] for i in index])
        caution = float(np.quantile(v, CAUTION_QUANTILE))
        refuse = float(max(np.quantile(v, REFUSE_QUANTILE), caution))
        style = None
        if train_variants is not None:  # kind: in or out; style: beyond the variants' range cautions
            refuse = caution
            style_stages = _fit_stages(train, val, components)
            style = (style_stages, float(np.quantile(_mean_distance(style_stages, val_variants), STYLE_QUANTILE)))
        gate = cls(stages, layers, grid, caution=caution, refuse=refuse, kind_index=index, style=style)
        gate.info = {"n_train": int(len(kind_train[0])), "n_val": int(len(kind_val[0])), "components": int(components)}
        return gate

    # ------------------------------------------------------------------ scoring
    def score(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """Kind scores of images: float64 (N,), 1.0 = the median validation image.

        Args:
            features: One (N, D_l) array per layer of :attr:`layers`.
        """
        if len(features) != len(self.layers):
            raise ValueError(f"expected features of {len(self.layers)} layers, got {len(features)}")
        return _mean_distance(self.stages, [features[i] for i in self.kind_index])

    def style_score(self, features: Sequence[np.ndarray]) -> np.ndarray | None:
        """Style scores (distance of the acquisition from the training films), or None without a style question."""
        if self.style_stages is None:
            return None
        if len(features) != len(self.layers):
            raise ValueError(f"expected features of {len(self.layers)} layers, got {len(features)}")
        return _mean_distance(self.style_stages, features)

    def assess(self, score: float, style_score: float | None = None) -> OODResult:
        """Turn the scores into a verdict with reasons a clinician can read."""
        result = OODResult(score=float(score), threshold=self.caution, refuse_threshold=self.refuse,
                           kind=Answer(score=float(score), threshold=self.caution, refuse_threshold=self.refuse))
        if score > self.refuse:
            result.escalate("outside", (
                f"the image is unlike anything this model was trained on (score {score:.1f}; "
                f"1.0 is a typical training-like image, above {self.refuse:.1f} the model is not "
                "used): it may be another body part, modality, view, orientation or not a medical image"))
        elif score > self.caution:
            what = ("may not be the kind of image this model reads" if self.style_stages is not None
                    else "is unusual for this model")
            result.escalate("unusual", (
                f"the image {what} (score {score:.1f}, caution above "
                f"{self.caution:.1f}): read the result with extra care"))
        if self.style_stages is not None and style_score is not None:
            result.style = Answer(score=float(style_score), threshold=self.style_caution)
            if style_score > self.style_caution:
                result.escalate("unusual", (
                    f"its acquisition score is {style_score:.1f} (caution above {self.style_caution:.1f}): "
                    "the scanner, exposure or processing differ from the training films more than the "
                    "variations the model was checked on"), question="style")
        return result

    def diagnose(self, result: OODResult, variant_scores: Sequence[float]) -> OODResult:
        """Explain a flagged image whose re-oriented copy scores as in-distribution.

        Args:
            result: The image's verdict from :meth:`assess` (flagged).
            variant_scores: Scores of the :data:`VARIANTS`, in that order.

        Returns:
            ``result``, escalated to ``"outside"`` with the orientation reason when the best
            variant is below the caution threshold (the model reads only upright films).
        """
        best = int(np.argmin(variant_scores))
        if float(variant_scores[best]) <= self.caution:
            what = list(VARIANTS.values())[best]
            result.escalate("outside", f"the image appears to be {what}; this model reads upright films only")
        return result

    def judge(self, extract: Any, x: Any, upright: Sequence[bool] | None = None) -> tuple[Any, list[OODResult]]:
        """Logits and verdicts of a batch in one forward pass (+ one small pass per flagged image).

        Args:
            extract: A :class:`~medcnn.ood.features.FeatureExtractor` of the model.
            x: float32 (N, 1, H, W) pipeline output.
            upright: Per image, True when its header turned it to the standard view
                (``Pipeline.upright_by_header``): not asked its orientation. None: all are asked.

        Returns:
            ``(logits, verdicts)``: float32 (N, K) CPU logits and one :class:`OODResult` per image.
        """
        logits, feats = extract(x)
        arrays = [f.numpy() for f in feats]
        scores, styles = self.score(arrays), self.style_score(arrays)
        verdicts = [self.assess(float(v), None if styles is None else float(styles[i])) for i, v in enumerate(scores)]
        turned = self.orientation.reasons(arrays) if self.orientation else [None] * len(verdicts)
        if upright is not None:
            turned = [None if up else t for t, up in zip(turned, upright)]
        withheld = [t or f for t, f in zip(turned, featureless(x))]  # turned, or no detail at all
        for verdict, reason in zip(verdicts, withheld):
            if reason:
                verdict.escalate("outside", reason)
        for i, verdict in enumerate(verdicts):  # in-distribution images pay nothing more
            if verdict.kind is not None and verdict.kind.flagged and not withheld[i]:
                _, vfeats = extract(variants(x[i:i + 1]))
                self.diagnose(verdict, self.score([f.numpy() for f in vfeats]))
        return logits, verdicts

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """Plain tensors and numbers (format 1 for a kind-only gate over all layers, else 2)."""
        one_part = (self.style_stages is None and self.orientation is None
                    and self.kind_index == tuple(range(len(self.layers))))
        out: dict[str, Any] = {"format": _FORMAT if one_part else _FORMAT_2, "layers": list(self.layers),
                               "grid": self.grid, "caution": self.caution, "refuse": self.refuse}
        if one_part:
            return {**out, **stages_state(self.stages, "")}
        out["kind_index"] = list(self.kind_index)
        out.update(stages_state(self.stages, "kind."))
        if self.orientation is not None:
            out.update(self.orientation.state())
        if self.style_stages is not None:
            out["style_caution"] = self.style_caution
            out.update(stages_state(self.style_stages, "style."))
        return out

    def save(self, path: str | Path) -> str:
        """Write the statistics to ``path`` (.pt); returns their SHA-256 (stored in the card)."""
        import torch

        torch.save(self.state(), Path(path))
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> "OODGate":
        """Load a gate written by :meth:`save` (either format).

        Raises:
            ValueError: missing or unreadable file, wrong format, or checksum mismatch.
        """
        import torch

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"out-of-distribution statistics not found: {path}")
        data = path.read_bytes()
        if sha256 and hashlib.sha256(data).hexdigest() != sha256:
            raise ValueError(f"{path} does not match the checksum in its model card (refit it with fit-ood)")
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
            raise ValueError(f"cannot read {path}: {type(e).__name__}: {e}") from None
        if not isinstance(st, dict) or st.get("format") not in (_FORMAT, _FORMAT_2):
            raise ValueError(f"{path} is not a medcnn out-of-distribution file ({_FORMAT} or {_FORMAT_2})")
        if st["format"] == _FORMAT:
            return cls(stages_from(st, "", len(st["layers"])), st["layers"], st["grid"], st["caution"], st["refuse"])
        index = [int(i) for i in st["kind_index"]]
        style = None
        if "style_caution" in st:
            style = (stages_from(st, "style.", len(st["layers"])), float(st["style_caution"]))
        return cls(stages_from(st, "kind.", len(index)), st["layers"], st["grid"], st["caution"], st["refuse"],
                   kind_index=index, style=style, orientation=OrientationCheck.from_state(st))


def _fit_stages(train: Sequence[np.ndarray], val: Sequence[np.ndarray], components: int) -> list[Stage]:
    """One fitted stage per layer, each scaled by its median distance on ``val``."""
    stages = [fit_stage(x, components) for x in train]
    for stage, v in zip(stages, val):
        stage.median = float(np.median(stage.distance(v))) or 1.0
    return stages


def _mean_distance(stages: Sequence[Stage], features: Sequence[np.ndarray]) -> np.ndarray:
    """Mean over stages of distance / validation median: float64 (N,)."""
    return np.mean([s.distance(np.asarray(f)) / s.median for s, f in zip(stages, features)], axis=0)
