"""The gate's orientation question: is this film upright, as the model reads it?

The kind question (:mod:`medcnn.ood.gate`) is fitted with acquisition variants of the training films
so that another hospital's exposure, processing and framing do not move it. That also makes it more
tolerant of a chest film turned by 90 or 180 degrees, whose grey levels and textures are those of a
chest film. Orientation is therefore asked separately, by a question that costs no extra forward
pass: a multinomial logistic regression on the same pooled stage features predicts which of
:data:`ORIENTATIONS` a film is in. It is fitted on the training films (and their acquisition
variants) turned to each orientation -- self-supervised transformations of in-distribution films, as
in Gidaris et al. (ICLR 2018) and Hendrycks et al. (NeurIPS 2019, "Using self-supervised learning
can improve model robustness and uncertainty"); no image of another kind is used.

An image is withheld when its probability of being upright is below the threshold, set as the
:data:`QUANTILE` quantile of the validation films (as they are and acquisition variants of them), so
about 1% of upright validation films would be withheld by it. The reason names the most likely
orientation, so the user can turn the film back and upload it again.

Features are standardised, projected on their top principal directions (fitted on the training
features of all orientations, whitened) and classified; everything is stored as plain tensors in the gate's
``.ood.pt`` file and applied with numpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["ORIENTATIONS", "QUANTILE", "OrientationCheck", "reoriented"]

#: The classes, in order; index 0 is the only one the model reads.
ORIENTATIONS = ("upright", "rotated by 90 degrees", "upside down", "rotated by 90 degrees the other way",
                "shown with inverted grey levels (bones dark, air bright)")
#: Validation quantile of P(upright) below which an image is withheld.
QUANTILE = 0.01


def reoriented(x: Any, index: int) -> Any:
    """Pipeline tensors (N, 1, H, W) turned to ``ORIENTATIONS[index]``.

    Rotations act on the padded square input (counter-clockwise, 90 degrees per step); inversion
    negates the normalised values (the pipeline normalises symmetric around mid-grey).
    """
    import torch

    if index == 4:
        return -x
    return torch.rot90(x, index, (2, 3)) if index else x


@dataclass
class OrientationCheck:
    """Fitted orientation classifier over the gate's feature layers ``layer_index``."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    components: np.ndarray  # (k, D)
    coef: np.ndarray  # (5, k)
    intercept: np.ndarray  # (5,)
    threshold: float
    layer_index: tuple[int, ...]

    @classmethod
    def fit(cls, train: Sequence[Sequence[np.ndarray]], val: Sequence[np.ndarray], layer_index: Sequence[int],
            components: int = 64, c: float = 0.1) -> "OrientationCheck":
        """Fit on training features of each orientation; set the threshold on upright validation films.

        Args:
            train: One entry per :data:`ORIENTATIONS` (same order): the features of the training films
                turned that way, one (N, D_l) array per gate layer.
            val: Upright validation features (films and acquisition variants), one array per layer.
            layer_index: The gate layers the question reads.
            components: Principal directions kept.
            c: Inverse L2 strength of the logistic regression.

        Raises:
            ValueError: not one feature set per orientation, or too few images.
        """
        from sklearn.linear_model import LogisticRegression

        if len(train) != len(ORIENTATIONS):
            raise ValueError(f"need features for each of the {len(ORIENTATIONS)} orientations, got {len(train)}")
        index = tuple(int(i) for i in layer_index)
        xs = [np.concatenate([np.asarray(t[i], np.float64) for i in index], axis=1) for t in train]
        if min(len(x) for x in xs) < 20 or len(val[0]) < 20:
            raise ValueError("need at least 20 training and 20 validation films to fit the orientation question")
        x = np.concatenate(xs)
        y = np.concatenate([np.full(len(t), k) for k, t in enumerate(xs)])
        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / scale
        _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
        comps = vt[: min(components, len(vt))]
        comps = comps / (z @ comps.T).std(0)[:, None]  # whitened projections: a well-conditioned fit
        clf = LogisticRegression(C=c, max_iter=2000).fit(z @ comps.T, y)
        check = cls(mean, scale, comps, clf.coef_.copy(), clf.intercept_.copy(), 0.0, index)
        check.threshold = float(np.quantile(check.upright(val), QUANTILE))
        return check

    def probabilities(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """P(orientation) of each image: float64 (N, 5), columns as :data:`ORIENTATIONS`.

        Args:
            features: One (N, D_l) array per gate layer (all layers; the check picks its own).
        """
        x = np.concatenate([np.asarray(features[i], np.float64) for i in self.layer_index], axis=1)
        logits = ((x - self.mean) / self.scale) @ self.components.T @ self.coef.T + self.intercept
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def upright(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """P(upright) of each image: float64 (N,)."""
        return self.probabilities(features)[:, 0]

    def reasons(self, features: Sequence[np.ndarray]) -> list[str | None]:
        """Per image: None when it reads as upright, else the sentence that withholds it."""
        out: list[str | None] = []
        for p in self.probabilities(features):
            if p[0] >= self.threshold:
                out.append(None)
                continue
            likely = 1 + int(np.argmax(p[1:]))
            out.append(f"the image appears to be {ORIENTATIONS[likely]} (probability upright {p[0]:.2f}, "
                       f"below {self.threshold:.2f}); this model reads upright films only")
        return out

    def state(self, prefix: str = "orientation.") -> dict[str, Any]:
        """Plain tensors and numbers under ``prefix`` (for :func:`torch.save`)."""
        import torch

        out: dict[str, Any] = {f"{prefix}{name}": torch.from_numpy(np.asarray(getattr(self, name), np.float32))
                               for name in ("mean", "scale", "components", "coef", "intercept")}
        out[f"{prefix}threshold"] = self.threshold
        out[f"{prefix}layer_index"] = list(self.layer_index)
        return out

    @classmethod
    def from_state(cls, st: dict[str, Any], prefix: str = "orientation.") -> "OrientationCheck | None":
        """The check stored by :meth:`state`, or None when ``st`` has none (an older gate)."""
        if f"{prefix}threshold" not in st:
            return None
        arrays = {name: st[f"{prefix}{name}"].double().numpy()
                  for name in ("mean", "scale", "components", "coef", "intercept")}
        return cls(**arrays, threshold=float(st[f"{prefix}threshold"]),
                   layer_index=tuple(int(i) for i in st[f"{prefix}layer_index"]))
