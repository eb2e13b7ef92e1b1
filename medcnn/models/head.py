"""The decision rule of a model: what its logits mean and which labels they call.

A :class:`Head` is the one owner of every question about a model's outputs. Serving, explanations,
the app, the command line, batch scoring, reports, training, evaluation, calibration and the audits
ask it; no other module branches on the kind of head.

Two kinds exist:

* ``"softmax"``: one label per image. Probabilities are ``softmax(z / T)`` with one temperature.
  A binary head calls its positive label iff ``P(positive) >= threshold``, otherwise the other
  label; so the operating point of the positive label is ``threshold`` and that of the other label
  ``1 - threshold`` (it is called strictly above it). A head with more than two labels calls the
  argmax and has no single operating point.
* ``"sigmoid"``: one independent finding per output (multi-label). Probabilities are
  ``sigmoid(z_f / T_f)``, each finding with its own temperature and operating point. A finding is
  called iff it is presented (``shown``) and its probability is at or above its operating point;
  an image may call none, one or several.

Findings are ranked by their probability *relative to* the operating point
(:func:`relative_to_threshold`: the operating point maps to 0.5), as TorchXRayVision's
``op_threshs`` do, so findings with different operating points are comparable.

What an explanation explains is the quantity that sets the displayed probability
(:mod:`medcnn.explain.objective`): the logit difference for a softmax head with two or more
outputs, the class logit for a sigmoid head (:attr:`Head.objective`).

Callers never ask which kind a head is (``tests/test_architecture.py`` checks it): they ask what
they need. :attr:`Head.per_finding` (per-finding rows, or one decided label), :attr:`Head.hidden`,
:attr:`Head.target_noun`, :meth:`Head.explain_targets`, :meth:`Head.own_operating_point` and
:meth:`Head.negative_name` (which label a site's binary labels can speak to, and what its
negatives are called), :meth:`Head.card_fields` (where a card stores a label's numbers),
:meth:`Head.require_per_finding`, :attr:`Head.no_difference_reason`.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medcnn.models.outputs import relative_to_threshold, sigmoid_t, softmax_t

__all__ = ["HEAD_KINDS", "NOT_ANALYSED", "NO_FINDING", "Decision", "Head"]

#: The kinds of head a model card may declare.
HEAD_KINDS = ("softmax", "sigmoid")
#: The decision text of a multi-label image with no finding at or above its operating point.
NO_FINDING = "no finding above its operating point"
#: The decision text of an image whose result the out-of-distribution gate withholds
#: (:attr:`medcnn.inference.Prediction.decision`). Defined here, beside :data:`NO_FINDING`, so that
#: every layer that writes or reads a decision (rows, pages, reports, the audit database) shares it.
NOT_ANALYSED = "not analysed"


@dataclass(frozen=True)
class Decision:
    """What a head decides for one image.

    Attributes:
        label: The decision as text: the called label of a softmax head; the called findings joined
            by ``", "`` (or :data:`NO_FINDING`) for a sigmoid head.
        called: The labels the decision names, as data (a softmax head: ``[label]``).
        findings: Sigmoid heads: one row per presented finding, sorted by ``relative`` (highest
            first), each ``{"name", "probability", "threshold", "relative", "above"}``; softmax: ``[]``.
        positive_prob: Probability of the head's positive label.
        above_threshold: Whether the positive label is at or above its operating point.
        threshold: The positive label's operating point.
    """

    label: str
    called: list[str]
    findings: list[dict[str, Any]]
    positive_prob: float
    above_threshold: bool
    threshold: float


@dataclass(frozen=True)
class Head:
    """A model's decision rule (module docstring).

    Attributes:
        kind: ``"softmax"`` or ``"sigmoid"``.
        labels: Output names, in logit order.
        positive_label: The label whose probability is reported as the positive one.
        temperatures: One calibration temperature per output (a softmax head: all equal).
        thresholds: One operating point per output. Softmax: the threshold on ``P(positive)``
            repeated (the other label's point is ``1 - threshold``, see :meth:`operating_point`).
        shown: The labels presented as findings (softmax: all).

    Raises:
        ValueError: an unknown kind, lengths that do not match the labels, a positive or shown
            label that is not a label, an operating point outside (0, 1) or a temperature <= 0.
    """

    kind: str
    labels: tuple[str, ...]
    positive_label: str
    temperatures: tuple[float, ...]
    thresholds: tuple[float, ...]
    shown: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"unknown head {self.kind!r}; a head is one of {', '.join(HEAD_KINDS)}")
        n = len(self.labels)
        if n < 1 or len(set(self.labels)) != n:
            raise ValueError(f"a head needs distinct labels, got {list(self.labels)}")
        if len(self.temperatures) != n or len(self.thresholds) != n:
            raise ValueError(f"{n} labels need {n} temperatures and {n} operating points, got "
                             f"{len(self.temperatures)} and {len(self.thresholds)}")
        for name in (self.positive_label, *self.shown):
            if name not in self.labels:
                raise ValueError(f"label {name!r} is not one of the head's labels {list(self.labels)}")
        if any(not 0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"operating points must lie in (0, 1), got {list(self.thresholds)}")
        if any(not t > 0.0 for t in self.temperatures):
            raise ValueError(f"temperatures must be > 0, got {list(self.temperatures)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def softmax(cls, labels: Sequence[str], positive_label: str, temperature: float = 1.0,
                threshold: float = 0.5) -> Head:
        """A softmax head with one temperature and one threshold on ``P(positive_label)``."""
        n = len(labels)
        return cls("softmax", tuple(labels), positive_label, (float(temperature),) * n,
                   (float(threshold),) * n, tuple(labels))

    @classmethod
    def sigmoid(cls, labels: Sequence[str], positive_label: str,
                findings: Mapping[str, Mapping[str, Any]] | None = None) -> Head:
        """A sigmoid head from per-finding settings (``{"temperature", "threshold", "shown"}``;
        a missing finding or key means temperature 1, operating point 0.5, shown)."""
        findings = findings or {}
        get = lambda name, key, default: findings.get(name, {}).get(key, default)  # noqa: E731
        return cls("sigmoid", tuple(labels), positive_label,
                   tuple(float(get(n, "temperature", 1.0)) for n in labels),
                   tuple(float(get(n, "threshold", 0.5)) for n in labels),
                   tuple(n for n in labels if get(n, "shown", True)))

    # ------------------------------------------------------------------ facts
    @property
    def multilabel(self) -> bool:
        """True for a sigmoid head (independent findings)."""
        return self.kind == "sigmoid"

    @property
    def positive_index(self) -> int:
        return self.labels.index(self.positive_label)

    @property
    def objective(self) -> str:
        """The explanation objective that sets the displayed probability: ``"logit"`` for a sigmoid
        head or a single output, ``"difference"`` for a softmax head with two or more outputs."""
        return "logit" if self.no_difference_reason else "difference"

    @property
    def no_difference_reason(self) -> str | None:
        """Why a logit difference does not set this head's probabilities (``"has a sigmoid head"``:
        its labels do not compete; ``"has a single output"``), or None when it does."""
        if self.multilabel:
            return "has a sigmoid head"
        return "has a single output" if len(self.labels) < 2 else None

    @property
    def positives(self) -> tuple[str, ...]:
        """The labels whose call is a positive finding (what a table flags): a softmax head's positive
        label, a sigmoid head's presented findings."""
        return self.shown if self.multilabel else (self.positive_label,)

    # ------------------------------------------------------------------ what callers ask
    @property
    def per_finding(self) -> bool:
        """Whether a decision is a set of independent findings, each with its own probability and
        operating point, presented as one row per finding (findings table, per-finding metrics,
        batch columns, evaluation and audit); False: one decided label, with the probability of
        the positive label against one threshold."""
        return self.multilabel

    @property
    def target_noun(self) -> str:
        """What an explanation target is called: ``"finding"`` (per-finding heads) or ``"class"``."""
        return "finding" if self.per_finding else "class"

    @property
    def default_target_text(self) -> str:
        """What a map explains unless the user picks another, in words (:meth:`default_target`):
        ``"top finding"`` or ``"predicted class"``."""
        return f"{'top' if self.per_finding else 'predicted'} {self.target_noun}"

    @property
    def hidden(self) -> tuple[str, ...]:
        """Labels kept in the output but not presented, in label order (a softmax head: none)."""
        return tuple(n for n in self.labels if n not in self.shown)

    def explain_targets(self, decision: Decision | Any) -> list[str]:
        """What a map can explain, in menu order: a softmax head's labels; a sigmoid head's findings in
        the order of the decision's rows (highest relative first), else its presented findings.

        Args:
            decision: This head's :class:`Decision`, or anything carrying its ``findings`` rows.
        """
        if not self.multilabel:
            return list(self.labels)
        names = [row["name"] for row in getattr(decision, "findings", None) or []]
        return names or list(self.shown) or [self.positive_label]

    def own_operating_point(self, label: str) -> float | None:
        """The operating point that belongs to ``label`` alone, so that a site's binary labels for it
        can recalibrate it: any finding of a sigmoid head, the positive label of a binary softmax
        head; None otherwise (a softmax head's other labels share its one threshold, or it decides by
        argmax).

        Raises:
            ValueError: not one of the labels.
        """
        point = self.operating_point(label)
        return point if self.multilabel or label == self.positive_label else None

    def negative_name(self, label: str) -> str:
        """What the images the head does not call ``label`` are called in a binary question about it:
        the other label of a binary softmax head's positive label, else ``"not <label>"``."""
        if not self.multilabel and len(self.labels) == 2 and label == self.positive_label:
            return self.labels[1 - self.positive_index]
        return f"not {label}"

    def card_fields(self, label: str, temperature: float, threshold: float,
                    findings: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """The model-card fields that store ``label``'s temperature and operating point, set to these
        values (for ``dataclasses.replace(card, **fields)``): a sigmoid head's ``findings`` (a copy,
        that finding's entry updated); a softmax head's ``temperature`` and ``threshold``.

        Args:
            label: A label with an operating point of its own (:meth:`own_operating_point`).
            temperature: Its new temperature.
            threshold: Its new operating point.
            findings: The card's current ``findings`` (left unchanged).
        """
        if not self.multilabel:
            return {"temperature": float(temperature), "threshold": float(threshold)}
        updated = copy.deepcopy(dict(findings))
        updated.setdefault(label, {}).update(temperature=float(temperature), threshold=float(threshold))
        return {"findings": updated}

    def require_per_finding(self, name: str, instead: str) -> None:
        """Raise unless the head decides per finding (:attr:`per_finding`).

        Args:
            name: The model's name, for the message.
            instead: What to use for this head, e.g. ``"the single-label evaluation"``.

        Raises:
            ValueError: a softmax head; the message says to use ``instead``.
        """
        if not self.per_finding:
            raise ValueError(f"model {name!r} has a softmax head (single-label): use {instead}")

    def index(self, label: str) -> int:
        """Output index of ``label``.

        Raises:
            ValueError: not one of the labels (the message lists them).
        """
        if label not in self.labels:
            raise ValueError(f"{label!r} is not one of the model's labels ({', '.join(self.labels)})")
        return self.labels.index(label)

    def operating_point(self, label: str) -> float | None:
        """Probability of ``label`` at which the head calls it (``None``: a multi-class softmax head
        decides by argmax and has no single point)."""
        i = self.index(label)
        if self.multilabel:
            return self.thresholds[i]
        if len(self.labels) != 2:
            return None
        t = self.thresholds[self.positive_index]
        return t if label == self.positive_label else 1.0 - t

    # ------------------------------------------------------------------ the rule
    def probabilities(self, logits: Any) -> np.ndarray:
        """Calibrated probabilities, (N, C) or (C,) logits -> the same shape, float64."""
        z = np.asarray(logits, dtype=np.float64)
        flat = z.reshape(1, -1) if z.ndim == 1 else z
        if flat.shape[1] != len(self.labels):
            raise ValueError(f"the model gives {flat.shape[1]} outputs but its card names {len(self.labels)} "
                             f"labels ({', '.join(self.labels)})")
        p = sigmoid_t(flat, self.temperatures) if self.multilabel else softmax_t(flat, self.temperatures[0])
        return p.reshape(z.shape)

    def relative(self, probabilities: Any) -> np.ndarray:
        """Probabilities rescaled so that each label's operating point is 0.5 (same shape)."""
        return relative_to_threshold(probabilities, np.asarray(self.thresholds))

    def is_called(self, label: str, probabilities: Sequence[float]) -> bool:
        """Whether the head calls ``label`` for one image's probabilities (C,)."""
        return label in self.decide(probabilities).called

    def decide(self, probabilities: Sequence[float]) -> Decision:
        """The decision for one image's calibrated probabilities (C,)."""
        p = np.asarray(probabilities, dtype=np.float64)
        pos = self.positive_index
        thr = self.thresholds[pos]
        if self.multilabel:
            rel = self.relative(p)
            rows = sorted(({"name": n, "probability": float(p[j]), "threshold": float(self.thresholds[j]),
                            "relative": float(rel[j]), "above": bool(p[j] >= self.thresholds[j])}
                           for j, n in enumerate(self.labels) if n in self.shown),
                          key=lambda row: -row["relative"])
            called = [row["name"] for row in rows if row["above"]]
            return Decision(", ".join(called) if called else NO_FINDING, called, rows, float(p[pos]),
                            bool(p[pos] >= thr), float(thr))
        above = bool(p[pos] >= thr)
        if len(self.labels) == 2:
            label = self.positive_label if above else self.labels[1 - pos]
        else:
            label = self.labels[int(np.argmax(p))]
        return Decision(label, [label], [], float(p[pos]), above, float(thr))

    def default_target(self, decision: Decision | Any) -> str:
        """The label an explanation shows by default: the top finding of a sigmoid head (called or
        not, by relative probability), the decided label of a softmax head.

        Args:
            decision: This head's :class:`Decision`, or anything carrying one's ``label`` and
                ``findings`` (a :class:`medcnn.inference.Prediction`, which the head already decided).
        """
        if self.multilabel:
            return decision.findings[0]["name"] if decision.findings else self.positive_label
        return decision.label
