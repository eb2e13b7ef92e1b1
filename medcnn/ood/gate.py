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
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["OODGate", "OODResult", "LEVELS", "CAUTION_QUANTILE", "REFUSE_QUANTILE", "VARIANTS", "variants"]

#: Levels in increasing severity.
LEVELS = ("ok", "unusual", "outside")
CAUTION_QUANTILE = 0.975
REFUSE_QUANTILE = 0.99
_FORMAT = "medcnn-ood-ppca-1"

#: Re-orientations tried on a flagged image: if one of them looks like a training image, the
#: image was most likely uploaded rotated or with inverted grey levels, and the reason says so.
VARIANTS = {
    "rotated by 90 degrees": "rotated by 90 degrees (turn it back and upload it again)",
    "upside down": "upside down (rotated by 180 degrees)",
    "rotated by 270 degrees": "rotated by 90 degrees the other way (turn it back and upload it again)",
    "inverted": "shown with inverted grey levels (bones dark, air bright)",
}


def variants(x: Any) -> Any:
    """The :data:`VARIANTS` of a pipeline tensor (1, 1, H, W) as one (4, 1, H, W) batch.

    Rotations act on the padded square input; inversion negates the normalised values (the
    pipeline normalises symmetric around mid-grey).
    """
    import torch

    return torch.cat([torch.rot90(x, 1, (2, 3)), torch.rot90(x, 2, (2, 3)), torch.rot90(x, 3, (2, 3)), -x])


@dataclass
class OODResult:
    """The gate's verdict on one image.

    Attributes:
        level: ``"ok"``, ``"unusual"`` (shown with a caution) or ``"outside"`` (not what this
            model reads: probabilities are not a result).
        score: Image score (1.0 = a typical validation image); ``None`` when no image gate ran.
        threshold: The caution threshold the score is compared with.
        refuse_threshold: Score above which the level is ``"outside"``.
        reasons: Sentences a clinician can read, one per finding (image and header checks).
    """

    level: str = "ok"
    score: float | None = None
    threshold: float | None = None
    refuse_threshold: float | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return self.level != "ok"

    @property
    def withheld(self) -> bool:
        """True when the probabilities must not be presented as a result."""
        return self.level == "outside"

    def escalate(self, level: str, reason: str) -> None:
        """Raise the level to at least ``level`` and record ``reason``."""
        if LEVELS.index(level) > LEVELS.index(self.level):
            self.level = level
        self.reasons.append(reason)

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "level": self.level, "score": self.score,
                "threshold": self.threshold, "refuse_threshold": self.refuse_threshold,
                "reasons": list(self.reasons)}


@dataclass
class _Stage:
    mean: np.ndarray  # (D,) standardisation
    scale: np.ndarray  # (D,)
    components: np.ndarray  # (k, D) principal directions of the standardised features
    variances: np.ndarray  # (k,)
    residual_variance: float
    median: float = 1.0  # median distance on validation

    def distance(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) / self.scale
        proj = z @ self.components.T
        residual = np.maximum((z * z).sum(1) - (proj * proj).sum(1), 0.0)
        return ((proj * proj) / self.variances).sum(1) + residual / self.residual_variance


def _fit_stage(x: np.ndarray, k: int) -> _Stage:
    x = np.asarray(x, np.float64)
    n, d = x.shape
    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    lam = s**2 / max(n - 1, 1)
    k = int(min(k, len(lam) - 1, d - 1))
    if k < 1:
        raise ValueError(f"need at least 3 in-distribution images to fit the gate, got {n}")
    rest = lam[k:].sum() / max(d - k, 1)
    return _Stage(mean, scale, vt[:k].copy(), np.maximum(lam[:k], 1e-9), float(max(rest, 1e-9)))


class OODGate:
    """Fitted statistics + thresholds; scores pooled features from :class:`FeatureExtractor`.

    Build with :meth:`fit`; persist with :meth:`save` / :meth:`load` (a ``.pt`` file of plain
    tensors, loaded with ``weights_only=True``).
    """

    def __init__(self, stages: Sequence[_Stage], layers: Sequence[str], grid: int,
                 caution: float, refuse: float, info: dict[str, Any] | None = None):
        if len(stages) != len(layers):
            raise ValueError(f"{len(stages)} fitted stages for {len(layers)} layers")
        self.stages = list(stages)
        self.layers = tuple(layers)
        self.grid = int(grid)
        self.caution = float(caution)
        self.refuse = float(refuse)
        self.info = dict(info or {})

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, train: Sequence[np.ndarray], val: Sequence[np.ndarray], layers: Sequence[str],
            grid: int, components: int = 64) -> "OODGate":
        """Fit on in-distribution training features; set thresholds on validation features.

        Args:
            train: One (N_train, D_l) array per layer.
            val: One (N_val, D_l) array per layer (other images than ``train``).
            layers: Layer names (same order).
            grid: Pooling grid the features were made with.
            components: Principal directions kept per layer.

        Raises:
            ValueError: too few images, or shapes that do not match.
        """
        if len(val[0]) < 20:
            raise ValueError(f"need at least 20 validation images to set the thresholds, got {len(val[0])}")
        stages = [_fit_stage(x, components) for x in train]
        for stage, v in zip(stages, val):
            stage.median = float(np.median(stage.distance(v))) or 1.0
        gate = cls(stages, layers, grid, caution=np.inf, refuse=np.inf)
        v = gate.score(val)
        gate.caution = float(np.quantile(v, CAUTION_QUANTILE))
        gate.refuse = float(max(np.quantile(v, REFUSE_QUANTILE), gate.caution))
        gate.info = {"n_train": int(len(train[0])), "n_val": int(len(val[0])), "components": int(components)}
        return gate

    # ------------------------------------------------------------------ scoring
    def score(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """Score images: float64 (N,), 1.0 = the median validation image."""
        if len(features) != len(self.stages):
            raise ValueError(f"expected features of {len(self.stages)} layers, got {len(features)}")
        parts = [stage.distance(np.asarray(f)) / stage.median for stage, f in zip(self.stages, features)]
        return np.mean(parts, axis=0)

    def assess(self, score: float) -> OODResult:
        """Turn a score into a verdict with a reason a clinician can read."""
        result = OODResult(score=float(score), threshold=self.caution, refuse_threshold=self.refuse)
        if score > self.refuse:
            result.escalate("outside", (
                f"the image is unlike anything this model was trained on (score {score:.1f}; "
                f"1.0 is a typical training-like image, above {self.refuse:.1f} the model is not "
                "used): it may be another body part, modality, orientation or not a medical image"))
        elif score > self.caution:
            result.escalate("unusual", (
                f"the image is unusual for this model (score {score:.1f}, caution above "
                f"{self.caution:.1f}): read the result with extra care"))
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

    def judge(self, extract: Any, x: Any) -> tuple[Any, list[OODResult]]:
        """Logits and verdicts of a batch in one forward pass (+ one small pass per flagged image).

        Args:
            extract: A :class:`~medcnn.ood.features.FeatureExtractor` of the model.
            x: float32 (N, 1, H, W) pipeline output.

        Returns:
            ``(logits, verdicts)``: float32 (N, K) CPU logits and one :class:`OODResult` per image.
        """
        logits, feats = extract(x)
        scores = self.score([f.numpy() for f in feats])
        verdicts = [self.assess(float(v)) for v in scores]
        for i, verdict in enumerate(verdicts):  # in-distribution images pay nothing more
            if verdict.flagged:
                _, vfeats = extract(variants(x[i:i + 1]))
                self.diagnose(verdict, self.score([f.numpy() for f in vfeats]))
        return logits, verdicts

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {"format": _FORMAT, "layers": list(self.layers), "grid": self.grid,
                               "caution": self.caution, "refuse": self.refuse}
        for i, s in enumerate(self.stages):
            for name in ("mean", "scale", "components", "variances"):
                out[f"{i}.{name}"] = torch.from_numpy(np.asarray(getattr(s, name), np.float32))
            out[f"{i}.residual_variance"] = s.residual_variance
            out[f"{i}.median"] = s.median
        return out

    def save(self, path: str | Path) -> str:
        """Write the statistics to ``path`` (.pt); returns their SHA-256 (stored in the card)."""
        import torch

        torch.save(self.state(), Path(path))
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> "OODGate":
        """Load a gate written by :meth:`save`.

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
        if not isinstance(st, dict) or st.get("format") != _FORMAT:
            raise ValueError(f"{path} is not a medcnn out-of-distribution file ({_FORMAT})")
        stages = []
        for i in range(len(st["layers"])):
            arr = {n: st[f"{i}.{n}"].double().numpy() for n in ("mean", "scale", "components", "variances")}
            stages.append(_Stage(**arr, residual_variance=float(st[f"{i}.residual_variance"]),
                                 median=float(st[f"{i}.median"])))
        return cls(stages, st["layers"], st["grid"], st["caution"], st["refuse"])
