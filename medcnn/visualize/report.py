"""One-page PDF report of an analysis, for a clinical meeting.

Built with matplotlib only (a :class:`~matplotlib.figure.Figure` saved as PDF; no extra
dependency). The report holds the model input image, the saliency overlay, the class
probabilities, the operating threshold and decision, the model name and a summary of
its card, the explanation method, the date and the disclaimer.

Privacy: the report is built from pixels, :class:`~medcnn.io.ImageMeta` (which never
holds patient identifiers) and the model card. The uploaded file name is *not* printed
(file names often contain patient names), and the PDF metadata carry no author.
"""
from __future__ import annotations

import io
import textwrap
from datetime import datetime, timezone
from typing import Any

import numpy as np

from medcnn.models.card import ModelCard

__all__ = ["DISCLAIMER", "build_report", "report_figure", "card_summary", "group_metric_rows", "metric_rows", "model_rows"]

DISCLAIMER = (
    "Research and teaching tool, not a medical device. Its outputs are not a diagnosis and "
    "must not be used for patient care."
)

_A4 = (8.27, 11.69)  # inches, portrait


def _fmt_ci(value: Any, ci: Any) -> str:
    if value is None:
        return "n/a"
    if ci and len(ci) == 2 and None not in ci:
        return f"{value:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    return f"{value:.3f}"


def card_summary(card: ModelCard) -> list[str]:
    """Short, human-readable lines describing a model card (for reports and the app)."""
    lines = [
        f"Model: {card.name} ({card.architecture}), {card.modality}, input {card.input_size[0]}x{card.input_size[1]}",
        f"Classes: {', '.join(card.labels)}; positive class {card.positive_label}; "
        f"threshold {card.threshold:.3f}; temperature {card.temperature:.3g}",
    ]
    dataset = card.training.get("dataset") if isinstance(card.training, dict) else None
    if dataset:
        lines.append(f"Training data: {dataset}")
    test = card.metrics.get("test") if isinstance(card.metrics, dict) else None
    if isinstance(test, dict) and test.get("auc") is not None:
        ci = test.get("ci") or {}
        lines.append(
            f"Test (n={test.get('n', '?')}): AUC {_fmt_ci(test.get('auc'), test.get('auc_ci') or ci.get('auc'))}; "
            f"sensitivity {_fmt_ci(test.get('recall'), ci.get('recall'))}; "
            f"specificity {_fmt_ci(test.get('specificity'), ci.get('specificity'))}"
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
            row[title] = _fmt_ci(m.get(key), (m.get("auc_ci") if key == "auc" else None) or ci.get(key))
    return row


def metric_rows(card: ModelCard) -> list[dict[str, Any]]:
    """One row per metrics set of the card (val, test, outside checks...), values with 95% CIs."""
    return [{"set": name, **_row(m)} for name, m in card.metrics.items() if _is_metrics(m)]


def group_metric_rows(card: ModelCard) -> list[dict[str, Any]]:
    """Per-subgroup rows (e.g. per view): ``metrics["test_by_view_position"]`` as stored by
    ``evaluate --by`` / calibration, or ``metrics["val"]["by_view_position"]`` as stored by training."""
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
    rows = []
    short = (("auc", "AUC"), ("recall", "Sensitivity"), ("specificity", "Specificity"))
    for split, column, groups in found:
        for group, m in groups.items():
            if isinstance(m, dict):
                rows.append({"set": split, "by": column, "group": group, **_row(m, short)})
    return rows


def model_rows(cards: list[ModelCard]) -> list[dict[str, Any]]:
    """Landing-page table: one row per model with its headline test (else val) metrics."""
    rows = []
    for card in cards:
        split = "test" if _is_metrics(card.metrics.get("test")) else "val"
        m = card.metrics.get(split) if _is_metrics(card.metrics.get(split)) else {}
        ci = m.get("ci") or {}
        rows.append({
            "model": card.name, "modality": card.modality, "architecture": card.architecture,
            "classes": ", ".join(card.labels), "metrics on": f"{split} (n={m['n']})" if m else "none recorded",
            "AUC (95% CI)": _fmt_ci(m.get("auc"), m.get("auc_ci") or ci.get("auc")) if m else "n/a",
            "sensitivity": _fmt_ci(m.get("recall"), ci.get("recall")) if m else "n/a",
            "specificity": _fmt_ci(m.get("specificity"), ci.get("specificity")) if m else "n/a",
        })
    return rows


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    return img


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


def report_figure(
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
) -> Any:
    """The one-page report as a matplotlib ``Figure`` (A4 portrait).

    Args:
        card: The model card used.
        prediction: :class:`medcnn.inference.Prediction` (probabilities, label, threshold...).
        display: float32 (H, W) in [0, 1] (the model-input image) or uint8 RGB/grey.
        overlay: uint8 (H, W, 3) saliency overlay on ``display``; ``None`` when the image was
            not analysed (the out-of-distribution gate withheld the result).
        method: Explanation method label (e.g. ``"Grad-CAM"``).
        method_params: Method parameters (printed compactly).
        explanation_seconds: Time the explanation took.
        target: Class the explanation targets.
        meta: :class:`medcnn.io.ImageMeta` (non-identifying fields only are printed).
        created: Report time (default: now, UTC).

    Returns:
        :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot state).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    created = created or datetime.now(timezone.utc)
    fig = Figure(figsize=_A4)
    FigureCanvasAgg(fig)
    fig.text(0.06, 0.955, "medcnn analysis report", fontsize=18, weight="bold")
    fig.text(0.06, 0.935, f"Created {created.strftime('%Y-%m-%d %H:%M %Z').strip()}", fontsize=9, color="#555")
    fig.text(0.06, 0.905, "\n".join(textwrap.wrap(DISCLAIMER, 100)), fontsize=9, color="#a00000",
             weight="bold", va="top")

    ax1 = fig.add_axes((0.06, 0.55, 0.42, 0.28))
    ax1.imshow(_as_rgb(display), cmap="gray", vmin=0, vmax=255)
    ax1.set_title("Model input", fontsize=10)
    ax2 = fig.add_axes((0.52, 0.55, 0.42, 0.28))
    if overlay is not None:
        ax2.imshow(_as_rgb(overlay))
        ax2.set_title(f"{method or 'Saliency'} overlay" + (f" (target {target})" if target else ""), fontsize=10)
    else:
        ax2.text(0.5, 0.5, "no explanation:\nimage not analysed", ha="center", va="center", fontsize=11)
    for ax in (ax1, ax2):
        ax.set_xticks([])
        ax.set_yticks([])

    ood = getattr(prediction, "ood", None)
    withheld = bool(ood is not None and ood.withheld)
    ax3 = fig.add_axes((0.22, 0.40, 0.70, 0.13))
    if withheld:
        ax3.set_visible(False)
    labels = list(prediction.probabilities)
    values = [float(prediction.probabilities[k]) for k in labels]
    colors = ["#c0392b" if k == prediction.label else "#95a5a6" for k in labels]
    ax3.barh(labels, values, color=colors)
    ax3.axvline(prediction.threshold, color="#2c3e50", linestyle="--", linewidth=1.5)
    ax3.set_xlim(0, 1)
    ax3.invert_yaxis()
    ax3.set_xlabel(f"calibrated probability (dashed: threshold {prediction.threshold:.3f} on P({card.positive_label}))",
                   fontsize=8)
    for i, v in enumerate(values):
        ax3.text(min(v + 0.01, 0.9), i, f"{v:.3f}", va="center", fontsize=8)
    ax3.tick_params(labelsize=8)

    if withheld:
        decision = "Decision: NOT ANALYSED - this image is outside what the model reads (probabilities not shown)"
    else:
        decision = (f"Decision: {prediction.label} (P({card.positive_label}) = {prediction.positive_prob:.3f} "
                    f"{'>=' if prediction.above_threshold else '<'} threshold {prediction.threshold:.3f})")
    fig.text(0.06, 0.355 if not withheld else 0.50, decision, fontsize=10, weight="bold", va="top",
             color="#a00000" if withheld else "black")
    lines = [_meta_line(meta), ""]
    if ood is not None and ood.flagged:
        head = "OUT OF SCOPE" if withheld else "CAUTION: unusual image for this model"
        lines.extend(textwrap.wrap(f"{head}: " + "; ".join(ood.reasons), 110))
        lines.append("")
    expl = f"Explanation: {method or 'none'}"
    if target:
        expl += f", target class {target}"
    if explanation_seconds is not None:
        expl += f", computed in {explanation_seconds:.2f} s"
    lines.append(expl)
    if method_params:
        params = ", ".join(f"{k}={v}" for k, v in method_params.items() if not isinstance(v, (list, dict)))
        lines.extend(textwrap.wrap(f"Method parameters: {params}", 110))
    lines.append("")
    for line in card_summary(card):
        lines.extend(textwrap.wrap(line, 110))
    if card.intended_use:
        lines.extend(textwrap.wrap(f"Intended use: {card.intended_use}", 110)[:3])
    if card.limitations:
        lines.extend(textwrap.wrap("Limitations: " + "; ".join(card.limitations), 110)[:4])
    fig.text(0.06, 0.33, "\n".join(line for line in lines), fontsize=8.5, va="top", linespacing=1.5)

    return fig


def build_report(card: ModelCard, prediction: Any, display: np.ndarray, overlay: np.ndarray,
                 **options: Any) -> bytes:
    """Render the one-page report and return the PDF bytes.

    Args:
        card, prediction, display, overlay, **options: see :func:`report_figure`.

    Returns:
        PDF file content (fonts embedded as TrueType so the text is searchable; no author
        in the PDF metadata).
    """
    import matplotlib

    fig = report_figure(card, prediction, display, overlay, **options)
    buf = io.BytesIO()
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        fig.savefig(buf, format="pdf", metadata={"Title": "medcnn analysis report", "Author": None,
                                                 "Creator": "medcnn", "Producer": None})
    return buf.getvalue()
