"""One presentation of a result, written once: the words every page, table and report uses.

A result is a :class:`medcnn.inference.Prediction` read against its
:class:`~medcnn.models.card.ModelCard` (whose :attr:`~medcnn.models.card.ModelCard.head_rule` made
the decision). This module owns how that result is *said*; the Analyze page, Case review, the
PDF report, the case-series report and the Batch table all ask it, so a result reads the same on a
screen, on a projector and on paper:

* the decision (:func:`decision`, :func:`decision_line`): the decided label, or "not analysed"
  when the out-of-distribution gate withholds the result;
* what the probability means (:func:`probability_text`): a softmax card's ``P(positive)`` against
  its threshold, a multi-label card's count of findings at or above their own operating points;
* the gate's words (:func:`ood_heading`, :func:`caution_text`): shown at the *top* of a result,
  above the probabilities and the findings table, because they change how everything below is read;
* what the card says beside a result on this kind of input (:func:`caveat`: where the evidence for
  the output differs by input, e.g. a CT model measured on 8-bit slices and not on scanner DICOM);
* what an empty or uncalled map means (:func:`map_notice`), in words rather than parameter names;
* the map-scaling rule (:func:`map_scale`, :func:`scale_caption`);
* the Batch row's cells (:func:`decision`, :func:`batch_probability`, :func:`batch_caution`,
  :func:`thumbnail_caption`).

Pure text from values (numpy and the standard library only; no streamlit, no torch).
"""
from __future__ import annotations

from typing import Any

from medcnn.models.head import NOT_ANALYSED

__all__ = ["EMPTY_MAP_NOTICE", "NOT_ANALYSED", "batch_caution", "batch_probability",
           "caution_text", "caveat", "decision", "decision_line", "decision_parts", "findings_count_text", "map_notice",
           "map_scale", "ood_heading", "probability_text", "scale_caption", "thumbnail_caption", "withheld"]

#: What an empty map means when the explanation carries no notice of its own.
EMPTY_MAP_NOTICE = ("The map is empty: no region of the image raises the explained score, so this method "
                    "has nothing to show here. It is not evidence that the image is normal.")
_OUTSIDE = "Not analysed: this image is outside what the model reads."
_UNUSUAL = "Caution: this image is unusual for this model."
_WITHHELD_DETAIL = "probabilities not shown: this image is outside what the model reads"


def withheld(prediction: Any) -> bool:
    """True when the out-of-distribution gate withholds the result (nothing may be presented as one)."""
    ood = getattr(prediction, "ood", None)
    return bool(ood is not None and ood.withheld)


def decision(prediction: Any) -> str:
    """The decision as a short text: the decided label(s), or :data:`NOT_ANALYSED` (the prediction's
    own rule, :attr:`medcnn.inference.Prediction.decision`)."""
    return str(prediction.decision)


def findings_count_text(prediction: Any) -> str:
    """``"k of n findings at or above their operating points"`` of a multi-label prediction."""
    rows = getattr(prediction, "findings", []) or []
    k = sum(bool(r.get("above")) for r in rows)
    return f"{k} of {len(rows)} findings at or above their operating points"


def probability_text(card: Any, prediction: Any) -> str:
    """What the probability says, in words.

    Softmax card: ``"P(COVID) = 0.528, below the threshold 0.600"`` (always the probability of
    the card's positive label, whatever was decided). Multi-label card: :func:`findings_count_text`.
    A withheld result: that the probabilities are not shown.
    """
    if withheld(prediction):
        return _WITHHELD_DETAIL
    if card.head_rule.per_finding:
        return findings_count_text(prediction)
    side = "at or above" if prediction.above_threshold else "below"
    return f"P({card.positive_label}) = {prediction.positive_prob:.3f}, {side} the threshold {prediction.threshold:.3f}"


def decision_parts(card: Any, prediction: Any) -> tuple[str, str]:
    """``(decision, detail)``: :func:`decision` in the card's words (``card.wording``: a CT slice's
    "NonCOVID" is said as what one slice can show) and :func:`probability_text` (pages set the
    first in bold)."""
    said = decision(prediction)
    return (getattr(card, "wording", None) or {}).get(said, said), probability_text(card, prediction)


def decision_line(card: Any, prediction: Any) -> str:
    """``"Decision: <decision> · <probability text>"``: the one decision line of pages and reports."""
    head, detail = decision_parts(card, prediction)
    return f"Decision: {head} · {detail}"


def ood_heading(ood: Any) -> tuple[str | None, list[str]]:
    """Title and reasons of the out-of-distribution message (``(None, [])`` when the image passed).

    The gate answers two questions (:class:`medcnn.ood.OODResult` ``kind`` and ``style``), and the
    title says which one spoke: withheld -> the not-analysed title; the kind question cautions ->
    "may not be the kind of image this model reads"; only the style question cautions -> "acquired
    differently from the training films: results may be less reliable" (the film is the kind the
    model reads, from another scanner or processing). A verdict without the parts (an older gate,
    header checks alone) keeps the one caution title.
    """
    kind_title = "Caution: this may not be the kind of image this model reads."
    style_title = "Caution: acquired differently from the training films: results may be less reliable."
    if ood is None or not ood.flagged:
        return None, []
    if ood.withheld:
        return _OUTSIDE, list(ood.reasons)
    kind, style = getattr(ood, "kind", None), getattr(ood, "style", None)
    if style is not None and style.flagged and not (kind is not None and kind.flagged):
        return style_title, list(ood.reasons)
    if kind is not None and kind.flagged and style is not None:
        return kind_title, list(ood.reasons)
    return _UNUSUAL, list(ood.reasons)


def caveat(card: Any, prediction: Any, meta: Any) -> str | None:
    """The card's caveat for this input's kind (``card.caveats`` by ``meta.input_kind``), or None.

    Said next to the decision of an analysed image; a withheld image has no result to qualify.
    """
    if meta is None or withheld(prediction):
        return None
    return (getattr(card, "caveats", None) or {}).get(getattr(meta, "input_kind", None))


def caution_text(prediction: Any) -> str | None:
    """The gate's message as one paragraph (title, then the reasons as sentences), or None.

    Printed at the top of a result, above the probabilities and the findings. The title names the
    question that spoke (:func:`ood_heading`).
    """
    title, reasons = ood_heading(getattr(prediction, "ood", None))
    if title is None:
        return None
    said = " ".join(f"{r[0].upper()}{r[1:]}{'' if r.endswith('.') else '.'}" for r in reasons if r)
    return f"{title} {said}".strip()


def map_notice(explanation: Any = None, params: dict[str, Any] | None = None) -> str | None:
    """What the map means when it could mislead, in words; None when there is nothing to say.

    The explanation's own ``notice`` (:func:`medcnn.explain.at_operating_point`: the target is not
    called, or the map is empty) when it has one; else :data:`EMPTY_MAP_NOTICE` for an empty map
    (``params["empty_map"]``, or ``explanation.empty``).

    Args:
        explanation: A :class:`medcnn.explain.Explanation` (or anything with ``notice`` /
            ``params``), or None.
        params: The explanation's parameters, when only they are at hand.
    """
    notice = getattr(explanation, "notice", None)
    if notice:
        return str(notice)
    p = params if params is not None else getattr(explanation, "params", None) or {}
    return EMPTY_MAP_NOTICE if p.get("empty_map") else None


def map_scale(probability: float | None, by_probability: bool = True) -> float | None:
    """The factor a map is multiplied by before it is drawn (:func:`medcnn.visualize.overlay` ``scale``).

    The rule: scaled by the calibrated probability of the explained target, so the map of a target the
    model gives a low probability stays dim; None (full contrast) when scaling is off or the probability
    is not known.
    """
    if not by_probability or probability is None:
        return None
    return min(max(float(probability), 0.0), 1.0)


def scale_caption(scale: float | None) -> str:
    """``"scaled by P = 0.62"`` or ``"full contrast"``."""
    return "full contrast" if scale is None else f"scaled by P = {scale:.2f}"


# --------------------------------------------------------------------------- Batch table
def batch_probability(card: Any, prediction: Any) -> str:
    """The probability cell of a table row (Batch, the case-series summary), as text that names its
    probability.

    Softmax: ``"P(COVID) = 0.528 (threshold 0.600)"``: the positive label's probability, named, so a
    ``NonCOVID`` row never shows a bare P(COVID). Multi-label: the count of findings at or above their
    operating points and the top finding's probability. Withheld: ``"not shown"``.
    """
    if withheld(prediction):
        return "not shown"
    if card.head_rule.per_finding:
        rows = getattr(prediction, "findings", []) or []
        text = findings_count_text(prediction)
        if rows:
            top = rows[0]
            text += f"; top P({top['name']}) = {float(top['probability']):.3f} (operating point {float(top['threshold']):.3f})"
        return text
    return f"P({card.positive_label}) = {prediction.positive_prob:.3f} (threshold {prediction.threshold:.3f})"


def batch_caution(prediction: Any) -> str:
    """The Batch row's caution cell: :func:`caution_text`, or ``""`` when the image passed the gate."""
    return caution_text(prediction) or ""


def thumbnail_caption(name: str, card: Any, prediction: Any, target: str | None = None,
                      target_probability: float | None = None) -> str:
    """A Batch thumbnail's caption: the image, the decision, the map's target when it differs, and the
    gate's caution in short (``"⚠ unusual image"``) when flagged.

    Args:
        name: What identifies the image on that page (file name or case number).
        card: The model card.
        prediction: The prediction.
        target: The label the map explains.
        target_probability: The calibrated probability of ``target``.
    """
    text = f"{name}: {decision(prediction)}"
    if target and target != prediction.label:
        text += f" · map: {target}"
    if target_probability is not None:
        text += f" (P({target}) = {float(target_probability):.2f})" if target else f" (P = {target_probability:.2f})"
    ood = getattr(prediction, "ood", None)
    if ood is not None and ood.flagged:
        text += " · ⚠ outside the model's scope" if ood.withheld else " · ⚠ unusual image: read with caution"
    return text
