"""Probability-aware display data for a map: is the explained class called at all?

A saliency map is normalised to [0, 1] on every image, so the map of a class the model
rejects glows as brightly as the map of a confident finding. CheXlocalize (Saporta et al.
2022, "Benchmarking saliency methods for chest X-ray interpretation", Nature Machine
Intelligence) therefore gates maps by the model's probability: below a cutoff the
segmentation is empty. Here the cutoff is the model card's operating point, and the map
is kept but labelled: :func:`at_operating_point` attaches the probability, the operating
point, whether the class is called and a one-sentence ``notice`` to an
:class:`~medcnn.explain.Explanation`; the page shows the notice next to the map and can
scale the map by ``Explanation.probability`` (the "scaled by probability" view).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from medcnn.explain.core import Explanation
from medcnn.models.head import Head

__all__ = ["at_operating_point", "judged_by_head"]


def _notice(exp: Explanation, label: str, p: float, op: float | None, called: bool) -> str | None:
    score = exp.params.get("objective", f"{label} score")
    where = (f"P({label}) = {p:.3f}" + (f", below the operating point {op:.3f}" if op is not None else ""))
    if not called and exp.empty:
        return (f"The model does not call {label} on this image ({where}), and no region raises "
                f"the {score}: the map is empty.")
    if not called:
        return (f"The model does not call {label} on this image ({where}). The map shows what "
                f"raises the {score} here; it is not a finding.")
    if exp.empty:
        return (f"The model calls {label} (P({label}) = {p:.3f}), but this map is empty: no region "
                f"raises the {score}, so the call rests on the image as a whole rather than on a region "
                f"this method can show. Try Integrated Gradients or occlusion.")
    return None


def at_operating_point(exp: Explanation, probability: float, operating_point: float | None = None, *,
                       called: bool | None = None, label: str | None = None) -> Explanation:
    """A copy of ``exp`` with the target's probability, operating point, call and notice.

    Args:
        exp: The explanation (not modified).
        probability: Calibrated probability of the explained class, as displayed.
        operating_point: Probability at which the model calls the class
            (:func:`operating_point`), or None (multi-class: pass ``called``).
        called: Whether the model calls the class; default ``probability >=
            operating_point``. Pass the prediction's own decision when you have it (the
            negative class of a binary card is called only strictly above its point).
        label: Class name for the notice (default ``"class <target>"``).

    Returns:
        A new :class:`~medcnn.explain.Explanation` with ``probability``,
        ``operating_point``, ``called`` and ``notice`` set.

    Raises:
        ValueError: a probability outside [0, 1], or neither ``operating_point`` nor
            ``called`` given.
    """
    p = float(probability)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if called is None:
        if operating_point is None:
            raise ValueError("pass operating_point or called")
        called = p >= float(operating_point)
    op = None if operating_point is None else float(operating_point)
    name = label or f"class {exp.target}"
    return dataclasses.replace(exp, probability=p, operating_point=op, called=bool(called),
                               notice=_notice(exp, name, p, op, bool(called)))


def judged_by_head(exp: Explanation, head: Head, result: Any, label: str) -> Explanation:
    """:func:`at_operating_point` with everything taken from the model's decision rule.

    A stage hands its result on: when the caller has the image's prediction, whether ``label`` is
    called is read from the decision the head already made (its ``called`` labels), not decided
    again from the probabilities. A caller with only probabilities lets the head decide
    (:meth:`Head.is_called`); both give the same answer, since the prediction's decision is
    :meth:`Head.decide` of the same probabilities.

    Args:
        exp: The explanation of ``label`` (not modified).
        head: The model's :class:`~medcnn.models.head.Head` (``card.head_rule``).
        result: The image's :class:`medcnn.inference.Prediction` (or anything with its
            ``probabilities`` mapping, label -> calibrated probability, and ``called`` list), or,
            without one, the image's calibrated probabilities in label order (C,).
        label: The explained label.

    Returns:
        A copy of ``exp`` with the label's probability, its operating point
        (:meth:`Head.operating_point`), whether the model calls it and the notice.

    Raises:
        ValueError: ``label`` is not one of the head's labels.
    """
    i = head.index(label)
    if hasattr(result, "called") and hasattr(result, "probabilities"):  # a prediction: already decided
        p, called = float(result.probabilities[label]), label in result.called
    else:
        probabilities: Sequence[float] = result
        p, called = float(probabilities[i]), head.is_called(label, probabilities)
    return at_operating_point(exp, p, head.operating_point(label), called=called, label=label)
