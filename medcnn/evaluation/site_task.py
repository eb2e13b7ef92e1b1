"""The binary question a site's labels answer, and the two numbers a recalibration may change.

A site labels each image positive or negative for one label of a card: the positive label of a
softmax card, or one finding of a multi-label (sigmoid) card. :class:`SiteTask` is that question.
It asks the card's decision rule (:attr:`medcnn.models.card.ModelCard.head_rule`) for the label's
probability and operating point, so a softmax and a sigmoid card go through the same code; even
where a card stores a label's temperature and operating point (:meth:`SiteTask.card_with`, which
writing a recalibrated card needs) is the head's answer.

For either head the label's probability is ``sigmoid(s / T)`` of one score ``s`` (the logit
difference of a binary softmax head, the finding's logit of a sigmoid head), and the label is
called iff its probability is at or above the operating point. Two consequences used here:

* the decision boundary in score space is ``s* = T logit(threshold)``; keeping the operating point
  while the temperature changes from ``T`` to ``T'`` means keeping ``s*``, i.e. the threshold
  ``sigmoid(T logit(threshold) / T')`` (:func:`carry_threshold`);
* Youden's threshold picks a cut between two images' scores, so which images it calls does not
  depend on the temperature the probabilities were computed at.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit

from medcnn.evaluation.calibration import youden_threshold
from medcnn.models.card import ModelCard

__all__ = ["InsufficientSiteDataError", "Point", "RecalibrationError", "SiteTask", "carry_threshold"]

_T_BOUNDS = (0.05, 20.0)  # the search interval of fit_temperature
_EPS = 1e-12


class RecalibrationError(ValueError):
    """Recalibration cannot proceed: bad inputs, or files that would overwrite the original."""


class InsufficientSiteDataError(RecalibrationError):
    """Too few labelled images of some class.

    Attributes:
        counts: class -> number of usable images.
        needed: the minimum per class.
    """

    def __init__(self, counts: dict[str, int], needed: int, left_out: str = ""):
        self.counts, self.needed = dict(counts), int(needed)
        have = ", ".join(f"{k}: {v}" + (f" ({needed - v} more needed)" if v < needed else "")
                         for k, v in self.counts.items())
        super().__init__(
            f"too few labelled images to recalibrate: at least {needed} of each class are needed, "
            f"the site data has {have}.{left_out} With fewer, each held-out fold of the cross-validation "
            "holds only a handful of images of that class, so it cannot tell a real improvement from "
            "chance, and a refitted operating point would follow single images. Add labelled images "
            "of the short class(es)."
        )


@dataclass(frozen=True)
class Point:
    """A label's temperature and operating point (threshold on its calibrated probability)."""

    temperature: float
    threshold: float


def carry_threshold(threshold: float, temperature: float, new_temperature: float) -> float:
    """The threshold at ``new_temperature`` that calls exactly the images ``threshold`` called at
    ``temperature`` (module docstring: the boundary ``T logit(threshold)`` is kept)."""
    return float(expit(temperature * logit(threshold) / new_temperature))


class SiteTask:
    """One card and the label the site's binary labels speak to.

    Args:
        card: The card to recalibrate.
        finding: The label (default: the card's positive label). A softmax card has one operating
            point, on its positive label, so only that label can be recalibrated.

    Raises:
        RecalibrationError: ``finding`` is not one of the card's labels, or the card's head has
            no operating point for it (a softmax head deciding by argmax, or its negative label).
    """

    def __init__(self, card: ModelCard, finding: str | None = None) -> None:
        self.card = card
        self.finding = finding or card.positive_label
        head = card.head_rule
        if self.finding not in head.labels:
            raise RecalibrationError(f"{self.finding!r} is not a label of model {card.name!r}; its labels are "
                                     f"{', '.join(head.labels)}")
        threshold = head.operating_point(self.finding)
        if head.own_operating_point(self.finding) is None:
            raise RecalibrationError(
                f"model {card.name!r} has no operating point of its own for {self.finding!r} (it decides "
                f"{'by argmax' if threshold is None else 'on ' + repr(head.positive_label)}); recalibrate "
                f"{head.positive_label!r}" + ("" if threshold is None else " instead"))
        self.index = head.index(self.finding)
        self.shipped = Point(float(head.temperatures[self.index]), float(threshold))
        self.n_outputs = len(head.labels)

    # ------------------------------------------------------------------ the card
    def card_with(self, point: Point) -> ModelCard:
        """A copy of the card whose label ``finding`` has ``point`` (other labels unchanged).

        Where a card stores a label's numbers is the head's to say
        (:meth:`medcnn.models.head.Head.card_fields`: a sigmoid card's ``findings[finding]``, a
        softmax card's ``temperature`` / ``threshold``).
        """
        fields = self.card.head_rule.card_fields(self.finding, point.temperature, point.threshold, self.card.findings)
        return dataclasses.replace(self.card, **fields)

    # ------------------------------------------------------------------ the rule, asked of the head
    def probability(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        """(N,) calibrated probability of the label at ``temperature``, (N, C) logits."""
        card = self.card_with(Point(temperature, self.shipped.threshold))
        return card.head_rule.probabilities(logits)[:, self.index]

    def called(self, prob: np.ndarray, point: Point) -> np.ndarray:
        """(N,) bool: the head calls the label at ``point`` (probabilities at ``point.temperature``)."""
        return np.asarray(prob) >= self.card_with(point).head_rule.operating_point(self.finding)

    # ------------------------------------------------------------------ fits
    def nll(self, y: np.ndarray, prob: np.ndarray) -> np.ndarray:
        """(N,) per-image negative log-likelihood of the 0/1 labels ``y``."""
        p = np.clip(prob, _EPS, 1 - _EPS)
        return -(y * np.log(p) + (1 - y) * np.log1p(-p))

    def fit_temperature(self, logits: np.ndarray, y: np.ndarray) -> float:
        """Temperature minimising the label's binary NLL (Guo et al. 2017), searched over ``log T``."""
        lo, hi = math.log(_T_BOUNDS[0]), math.log(_T_BOUNDS[1])
        res = minimize_scalar(lambda lt: float(self.nll(y, self.probability(logits, math.exp(lt))).mean()),
                              bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
        return float(math.exp(res.x))

    def fit_threshold(self, y: np.ndarray, prob: np.ndarray) -> float:
        """Youden's threshold on ``prob`` (as for the shipped cards), kept inside (0, 1)."""
        return float(np.clip(youden_threshold(y, prob), 1e-9, 1 - 1e-9))

    def fit(self, logits: np.ndarray, y: np.ndarray, temperature: bool, threshold: bool) -> Point:
        """The point with the chosen components refitted on these rows, the others kept as shipped.

        A kept operating point is carried to a refitted temperature (:func:`carry_threshold`), so
        it calls the same images.
        """
        t = self.fit_temperature(logits, y) if temperature else self.shipped.temperature
        if threshold:
            return Point(t, self.fit_threshold(y, self.probability(logits, t)))
        if not temperature:
            return self.shipped
        return Point(t, carry_threshold(self.shipped.threshold, self.shipped.temperature, t))
