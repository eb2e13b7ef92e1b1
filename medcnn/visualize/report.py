"""PDF report of one analysis, for a clinical meeting, and the card tables the app shows.

Built with matplotlib only (figures saved as PDF pages; no extra dependency) through the
flowing layout of :mod:`medcnn.visualize.layout`: every text block is wrapped by measured
width and continues on a new page when the page is full, so the model card's intended use
and limitations are printed in full (the report is one page for a short card, two for a
long one). The report holds the model input image, the saliency overlay, the class
probabilities, the operating threshold and decision, the out-of-distribution flag, the
model name and its card (summary, intended use, limitations, data sources), the
explanation method, the date and the disclaimer. :func:`write_case` and :func:`write_card`
are the blocks the case-series report (:mod:`medcnn.visualize.series`) reuses.

Privacy: the report is built from pixels, :class:`~medcnn.io.ImageMeta` (which never
holds patient identifiers) and the model card. The uploaded file name is *not* printed
(file names often contain patient names), and the PDF metadata carry no author.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np

from medcnn.models.card import ModelCard
from medcnn.visualize import findings as _findings
from medcnn.visualize import presentation
from medcnn.visualize.layout import Flow

__all__ = ["DISCLAIMER", "build_report", "card_sections", "card_summary", "decision_line", "group_metric_rows",
           "method_detail_lines", "metric_groups", "metric_rows", "model_rows", "ood_line", "report_flow",
           "report_header", "write_card", "write_case", "write_method_details"]

DISCLAIMER = (
    "Research and teaching tool, not a medical device. Its outputs are not a diagnosis and "
    "must not be used for patient care."
)

def card_summary(card: ModelCard) -> list[str]:
    """Short, human-readable lines describing a model card (for reports and the app)."""
    lines = [
        f"Model: {card.name} ({card.architecture}), {card.modality}, input {card.input_size[0]}x{card.input_size[1]}",
    ]
    dataset = card.training.get("dataset") if isinstance(card.training, dict) else None
    if card.head_rule.per_finding:  # findings, hidden ones, mean test AUC
        return [*lines, *([f"Training data: {dataset}"] if dataset else []), *_findings.card_lines(card)]
    lines.append(f"Classes: {', '.join(card.labels)}; positive class {card.positive_label}; "
                 f"threshold {card.threshold:.3f}; temperature {card.temperature:.3g}")
    if dataset:
        lines.append(f"Training data: {dataset}")
    test = card.metrics.get("test") if isinstance(card.metrics, dict) else None
    if isinstance(test, dict) and test.get("auc") is not None:
        ci = test.get("ci") or {}
        lines.append(
            f"Test (n={test.get('n', '?')}): AUC {_findings.ci_text(test.get('auc'), test.get('auc_ci') or ci.get('auc'))}; "
            f"sensitivity {_findings.ci_text(test.get('recall'), ci.get('recall'))}; "
            f"specificity {_findings.ci_text(test.get('specificity'), ci.get('specificity'))}"
        )
    else:
        lines.append("Test metrics: not recorded in the model card")
    return lines


#: (metric key, column title) of the metrics tables.
_TABLE_METRICS = (
    ("auc", "AUC"), ("pr_auc", "PR-AUC"), ("recall", "Sensitivity"), ("specificity", "Specificity"),
    ("precision", "PPV"), ("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced acc."),
    ("ece", "ECE"), ("brier", "Brier"),
)


def _is_metrics(value: Any) -> bool:
    return isinstance(value, dict) and "n" in value and any(k in value for k, _ in _TABLE_METRICS)


def _row(m: dict[str, Any], keys: tuple[tuple[str, str], ...] = _TABLE_METRICS) -> dict[str, Any]:
    ci = m.get("ci") or {}
    row: dict[str, Any] = {"n": m.get("n")}
    for key, title in keys:
        if key in m:
            row[title] = _findings.ci_text(m.get(key), (m.get("auc_ci") if key == "auc" else None) or ci.get(key))
    return row


def metric_rows(card: ModelCard) -> list[dict[str, Any]]:
    """One row per metrics set of the card (val, test, outside checks...), values with 95% CIs."""
    return [{"set": name, **_row(m)} for name, m in card.metrics.items() if _is_metrics(m)]


def metric_groups(card: ModelCard) -> list[tuple[str, str, dict[str, Any]]]:
    """Per-subgroup metrics of a card as ``(set, column, {group: metrics})``:
    ``metrics["test_by_view_position"]`` as stored by ``evaluate --by`` / calibration, or
    ``metrics["val"]["by_view_position"]`` as stored by training."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    for name, value in card.metrics.items():
        if not isinstance(value, dict):
            continue
        if "_by_" in name and isinstance(value.get("groups"), dict):
            found.append((name.split("_by_")[0], str(value.get("column", name.split("_by_")[1])), value["groups"]))
        for key, sub in value.items():
            if key.startswith("by_") and isinstance(sub, dict):
                groups = sub.get("groups", sub)
                found.append((name, key[3:], groups))
    return found


def group_metric_rows(card: ModelCard) -> list[dict[str, Any]]:
    """Per-subgroup rows (e.g. per view) of :func:`metric_groups`, values with 95% CIs."""
    rows = []
    short = (("auc", "AUC"), ("recall", "Sensitivity"), ("specificity", "Specificity"))
    for split, column, groups in metric_groups(card):
        for group, m in groups.items():
            if isinstance(m, dict):
                rows.append({"set": split, "by": column, "group": group, **_row(m, short)})
    return rows


def model_rows(cards: list[ModelCard]) -> list[dict[str, Any]]:
    """Landing-page table: one row per model with its headline test (else val) metrics."""
    rows = []
    for card in cards:
        if card.head_rule.per_finding:
            rows.append(_findings.model_row(card))
            continue
        split = "test" if _is_metrics(card.metrics.get("test")) else "val"
        m = card.metrics.get(split) if _is_metrics(card.metrics.get(split)) else {}
        ci = m.get("ci") or {}
        rows.append({
            "model": card.name, "modality": card.modality, "architecture": card.architecture,
            "classes": ", ".join(card.labels), "metrics on": f"{split} (n={m['n']})" if m else "none recorded",
            "AUC (95% CI)": _findings.ci_text(m.get("auc"), m.get("auc_ci") or ci.get("auc")) if m else "n/a",
            "sensitivity": _findings.ci_text(m.get("recall"), ci.get("recall")) if m else "n/a",
            "specificity": _findings.ci_text(m.get("specificity"), ci.get("specificity")) if m else "n/a",
        })
    return rows


def _as_rgb(image: np.ndarray) -> np.ndarray:
    from medcnn.visualize.heatmap import to_uint8

    return to_uint8(image)


def _meta_line(meta: Any) -> str:
    if meta is None:
        return ""
    parts = [f"{getattr(meta, 'source_format', '?').upper()}", f"modality {getattr(meta, 'modality', '?')}"]
    for attr, label in (("body_part", "body part"), ("view_position", "view")):
        value = getattr(meta, attr, None)
        if value:
            parts.append(f"{label} {value}")
    parts.append(f"{getattr(meta, 'rows', '?')} x {getattr(meta, 'columns', '?')} px")
    if getattr(meta, "n_frames", 1) > 1:
        parts.append(f"frame {meta.frame + 1}/{meta.n_frames}")
    return "Image: " + ", ".join(parts)


def decision_line(card: ModelCard, prediction: Any) -> str:
    """The decision as printed (:func:`medcnn.visualize.presentation.decision_line`): the label and
    what its probability says, or "not analysed" when the out-of-distribution gate withholds it."""
    return presentation.decision_line(card, prediction)


def ood_line(prediction: Any) -> str | None:
    """The out-of-distribution message (:func:`medcnn.visualize.presentation.caution_text`), or None
    when the image passed the gate."""
    return presentation.caution_text(prediction)


def card_sections(card: ModelCard) -> list[tuple[str, list[str]]]:
    """The card's text for a report, in full: ``(title, paragraphs)`` for the summary,
    intended use, limitations and data sources (with citations and licences)."""
    sections = [("Model card", card_summary(card)),
                ("Intended use", [card.intended_use or "Not stated."]),
                ("Limitations", list(card.limitations) or ["None stated."])]
    training = card.training if isinstance(card.training, dict) else {}
    sources = []
    for src in training.get("sources", []) or []:
        if not isinstance(src, dict):
            continue
        sources.append(f"{src.get('dataset', '?')}: {src.get('description') or src.get('title', '')}".strip())
        cites = src.get("citation", [])
        sources.extend(f"Cite: {c}" for c in ([cites] if isinstance(cites, str) else cites))
        if src.get("licence"):
            sources.append(f"Licence: {src['licence']}")
    for key, label in (("citation", "Cite"), ("licence", "Licence"), ("license", "Licence")):
        if isinstance(training.get(key), str) and training[key]:
            sources.append(f"{label}: {training[key]}")
    if sources:
        sections.append(("Training data", sources))
    return sections


def write_card(flow: Flow, card: ModelCard, title: str | None = None) -> None:
    """Print the whole model card text (:func:`card_sections`) at the cursor of ``flow``."""
    for i, (name, paragraphs) in enumerate(card_sections(card)):
        flow.heading(title if i == 0 and title else name, 12 if i == 0 else 10)
        if name in ("Limitations", "Training data"):
            flow.bullets(paragraphs, 8.5)
        else:
            for paragraph in paragraphs:
                flow.text(paragraph, 8.5)


def write_case(
    flow: Flow,
    card: ModelCard,
    prediction: Any,
    display: np.ndarray,
    overlay: np.ndarray | None,
    *,
    method: str = "",
    explanation_seconds: float | None = None,
    target: str | None = None,
    meta: Any = None,
    notice: str | None = None,
    image_height: float = 246.0,
) -> None:
    """Print one analysed image at the cursor: the out-of-distribution caution first (it changes how
    everything below is read), model input and overlay, what the map means when it could mislead,
    decision, class probabilities or findings (not when withheld), image and method lines.

    Method parameters are not printed here: :func:`write_method_details` prints them at the end.

    Args: see :func:`report_flow`; ``image_height`` is the height of the image row in points.
    """
    withheld = presentation.withheld(prediction)
    flag = presentation.caution_text(prediction)
    if flag:
        flow.text(flag, 10, weight="bold", color="#a00000" if withheld else "#8a4b00")
        flow.space(4)
    if overlay is not None:
        over_title = f"{method or 'Saliency'} overlay" + (f" (target {target})" if target else "")
    else:
        over_title = "No explanation: image not analysed" if withheld else "No explanation"
    flow.image_row([(_as_rgb(display), "Model input"), (None if overlay is None else _as_rgb(overlay), over_title)],
                   image_height)
    if overlay is not None and notice:
        flow.space(4)
        flow.text(f"About the map: {notice}", 9, color="#444444")
    flow.space(8)
    flow.text(decision_line(card, prediction), 10.5, weight="bold", color="#a00000" if withheld else "black")
    said = presentation.caveat(card, prediction, meta)
    if said:
        flow.space(2)
        flow.text(said, 9.5, color="#8a4b00")
    if not withheld and card.head_rule.per_finding:
        flow.space(4)
        _findings.write_findings(flow, card, prediction, target if overlay is not None else None)
    elif not withheld:
        flow.space(4)
        flow.bars(dict(prediction.probabilities), prediction.label, float(prediction.threshold),
                  f"calibrated probability (dashed: threshold {prediction.threshold:.3f} on "
                  f"P({card.positive_label}))")
    flow.space(4)
    if meta is not None:
        flow.text(_meta_line(meta), 8.5)
    if overlay is None:  # no map was drawn: name no method, target or parameters
        flow.text("Explanation: none" + (" (image not analysed)" if withheld else ""), 8.5)
        return
    expl = f"Explanation: {method or 'saliency map'}"
    if target:
        expl += f", target {card.head_rule.target_noun} {target}"
    if explanation_seconds is not None:
        expl += f", computed in {explanation_seconds:.2f} s"
    flow.text(expl, 8.5)


#: Method parameters in words (the details section); flags said elsewhere in words are left out.
_PARAM_WORDS: dict[str, str] = {
    "objective": "Explained score", "display": "Part of the map shown", "clip_percentile": "Percentile shown as 1",
    "layer": "Layer", "baseline": "Baseline", "black_from": "Black baseline taken from", "steps": "Path steps",
    "rule": "Step rule", "converged": "Reached its error tolerance", "tol": "Error tolerance",
    "delta": "Completeness gap (sum of attributions minus score change)",
    "rel_delta": "Completeness gap, relative", "rel_local_error": "Path integration error, relative",
    "precision_floor": "Numerical precision floor", "f_x": "Score of the image", "f_baseline": "Score of the baseline",
    "panels": "Integration panels", "nodes_per_panel": "Nodes per panel", "quadrature": "Quadrature",
    "internal_batch_size": "Batch size", "window": "Occlusion window", "stride": "Occlusion stride",
    "n_samples": "Noise samples", "stdev": "Noise standard deviation", "sigma": "Blur sigma",
    "baseline_value": "Baseline value", "relu_attributions": "Positive part only",
}
_SAID_ELSEWHERE = {"empty_map"}  # the map notice says it in words


def _param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " x ".join(_param_value(v) for v in value)
    return str(value)


def method_detail_lines(method_params: dict[str, Any]) -> list[str]:
    """``"<what it is>: <value>"`` per method parameter, in words (no raw parameter names)."""
    lines = []
    for key, value in method_params.items():
        if key in _SAID_ELSEWHERE or isinstance(value, dict) or value is None:
            continue
        lines.append(f"{_PARAM_WORDS.get(key, key.replace('_', ' ').capitalize())}: {_param_value(value)}")
    return lines


def write_method_details(flow: Flow, method: str, method_params: dict[str, Any] | None) -> None:
    """The explanation method's parameters, at the end of a report (for whoever reproduces the map)."""
    lines = method_detail_lines(method_params or {})
    if not lines:
        return
    flow.heading(f"Method details: {method or 'saliency map'}", 10)
    flow.text("; ".join(lines) + ".", 8)


def report_header(flow: Flow, title: str, created: datetime) -> None:
    """Title, creation time (UTC unless given) and the disclaimer, at the top of a report."""
    flow.text(title, 18, weight="bold")
    flow.text(f"Created {created.strftime('%Y-%m-%d %H:%M %Z').strip()}", 9, color="#444444")
    flow.space(4)
    flow.text(DISCLAIMER, 9, weight="bold", color="#a00000")
    flow.space(6)


def report_flow(
    card: ModelCard,
    prediction: Any,
    display: np.ndarray,
    overlay: np.ndarray | None,
    *,
    method: str = "",
    method_params: dict[str, Any] | None = None,
    explanation_seconds: float | None = None,
    target: str | None = None,
    meta: Any = None,
    created: datetime | None = None,
    notice: str | None = None,
) -> Flow:
    """The report of one image laid out on A4 pages (one for a short card, more when the
    card's text needs them; nothing is truncated).

    Args:
        card: The model card used.
        prediction: :class:`medcnn.inference.Prediction` (probabilities, label, threshold...).
        display: float32 (H, W) in [0, 1] (the model-input image) or uint8 RGB/grey.
        overlay: uint8 (H, W, 3) saliency overlay on ``display``; ``None`` when the image was
            not analysed (the out-of-distribution gate withheld the result).
        method: Explanation method label (e.g. ``"Grad-CAM"``).
        method_params: Method parameters (printed in words in a details section at the end).
        explanation_seconds: Time the explanation took.
        target: Class the explanation targets.
        meta: :class:`medcnn.io.ImageMeta` (non-identifying fields only are printed).
        created: Report time (default: now, UTC).
        notice: What the map means when it could mislead (``Explanation.notice``); default
            :func:`medcnn.visualize.presentation.map_notice` of ``method_params`` (an empty map).

    Sections (:attr:`Flow.sections`): ``"analysis"``, ``"model card"`` and, when a map was drawn
    with parameters, ``"method details"``.

    Returns:
        The :class:`~medcnn.visualize.layout.Flow` (its ``pages`` are matplotlib figures).
    """
    flow = Flow(footer=f"medcnn analysis report · {card.name}")
    flow.section("analysis")
    report_header(flow, "medcnn analysis report", created or datetime.now(timezone.utc))
    if overlay is not None and notice is None:
        notice = presentation.map_notice(params=method_params or {})
    write_case(flow, card, prediction, display, overlay, method=method, explanation_seconds=explanation_seconds,
               target=target, meta=meta, notice=notice)
    flow.space(6)
    flow.section("model card")
    write_card(flow, card, f"Model card: {card.name}")
    if overlay is not None and method_detail_lines(method_params or {}):
        flow.space(8)
        flow.section("method details")
        write_method_details(flow, method, method_params)
    return flow


def build_report(card: ModelCard, prediction: Any, display: np.ndarray, overlay: np.ndarray | None,
                 **options: Any) -> bytes:
    """Render the report of one image and return the PDF bytes.

    Args:
        card, prediction, display, overlay, **options: see :func:`report_flow`.

    Returns:
        PDF file content (fonts embedded as TrueType so the text is searchable; no author
        in the PDF metadata; no file name and no patient identifier anywhere).
    """
    return report_flow(card, prediction, display, overlay, **options).to_pdf("medcnn analysis report")
