"""The findings of a multi-label (sigmoid head) model as text and tables: one image, and its card.

A multi-label card presents each finding with its own calibrated probability and operating point.
The rows of one image come sorted by ``relative``: the probability rescaled so that the finding's
operating point is 0.5 (:func:`medcnn.models.outputs.relative_to_threshold`), which puts findings
with different operating points on one scale (TorchXRayVision's ``op_threshs``). Findings the card
does not present (``shown`` is False: the model cannot be shown to detect them on held-out data)
are named in a note, never listed with a probability.

The Analyze, Batch and Model card pages, the PDF report and the case-series report all read these,
so a finding is worded the same everywhere.
"""
from __future__ import annotations

from typing import Any

from medcnn.visualize.layout import Flow

__all__ = ["HIDDEN_REASON", "call_text", "ci_text", "card_lines", "finding_metric_rows", "finding_rows",
           "hidden_findings", "hidden_note", "model_row", "write_findings"]

#: Why hidden findings are not presented (the card's per-finding ``reason`` says more).
HIDDEN_REASON = "the model cannot be shown to detect them on held-out data; see the model card"


def hidden_findings(card: Any) -> list[str]:
    """Outputs of a multi-label card that are not presented as findings, in label order ([] for softmax:
    :attr:`medcnn.models.head.Head.hidden`)."""
    return list(card.head_rule.hidden)


def hidden_note(card: Any) -> str | None:
    """``"Not shown: X, Y — <why>."``, or None when every finding is presented."""
    hidden = hidden_findings(card)
    return f"Not shown: {', '.join(hidden)} — {HIDDEN_REASON}." if hidden else None


def call_text(row: dict[str, Any]) -> str:
    """``"above operating point"`` / ``"below operating point"`` of a ``Prediction.findings`` row.

    "Above" means at or above: a finding is called when ``probability >= threshold``.
    """
    return "above operating point" if row.get("above") else "below operating point"


def finding_rows(prediction: Any) -> list[dict[str, Any]]:
    """The presented findings of one image, in the prediction's order (highest relative first).

    Returns:
        ``{"finding", "probability", "operating point", "relative", "call"}`` per row; numbers are
        floats (probability and operating point on the calibrated scale, relative in [0, 1] with
        0.5 at the operating point).
    """
    return [{"finding": r["name"], "probability": float(r["probability"]), "operating point": float(r["threshold"]),
             "relative": float(r["relative"]), "call": call_text(r)} for r in getattr(prediction, "findings", [])]


def _num(value: Any) -> str:
    return "—" if value is None else f"{float(value):.3f}"


def ci_text(value: Any, ci: Any) -> str:
    """``0.812 (95% CI 0.700-0.900)``, the value alone without a CI, ``n/a`` without a value."""
    if value is None:
        return "n/a"
    if ci and len(ci) == 2 and None not in ci:
        return f"{value:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"
    return f"{value:.3f}"


def _finding_metrics(card: Any) -> tuple[str | None, dict[str, Any]]:
    """The card's per-finding metrics set: ``("test", metrics)``, else validation's, else (None, {})."""
    metrics = card.metrics if isinstance(card.metrics, dict) else {}
    for split in ("test", "val"):
        m = metrics.get(split)
        if isinstance(m, dict) and isinstance(m.get("findings"), dict):
            return split, m
    return None, {}


def finding_metric_rows(card: Any) -> tuple[str | None, list[dict[str, str]]]:
    """Per-finding metrics of a multi-label card, one row per output in label order.

    Test metrics when the card holds them, else validation's (a card not yet evaluated on test).
    Columns: finding, AUC (95% CI), positives, negatives, operating point, sensitivity and
    specificity at it (with CIs when recorded), ECE, temperature, shown, reason. Every cell is text.

    Returns:
        ``(set name or None, rows)``; the rows still list every finding (metrics "n/a") when the card
        records none.
    """
    split, m = _finding_metrics(card)
    summary, full = m.get("findings") or {}, m.get("per_finding") or {}
    rows = []
    for name in card.labels:
        s = summary.get(name) if isinstance(summary.get(name), dict) else {}
        detail = full.get(name) if isinstance(full.get(name), dict) else {}
        ci = detail.get("ci") or {}
        f = card.findings.get(name, {})
        n_pos, n_neg = s.get("n_pos"), s.get("n_neg")
        rows.append({
            "finding": name, "AUC (95% CI)": ci_text(s.get("auc"), s.get("auc_ci") or ci.get("auc")),
            "positives": "—" if n_pos is None else str(n_pos), "negatives": "—" if n_neg is None else str(n_neg),
            "operating point": _num(f.get("threshold", 0.5)),
            "sensitivity": ci_text(s.get("sensitivity"), ci.get("recall")),
            "specificity": ci_text(s.get("specificity"), ci.get("specificity")),
            "ECE": _num(s.get("ece")), "temperature": f"{float(f.get('temperature', 1.0)):.3g}",
            "shown": "yes" if f.get("shown", True) else "no", "reason": str(f.get("reason") or "—"),
        })
    return split, rows


def card_lines(card: Any) -> list[str]:
    """The multi-label lines of :func:`medcnn.visualize.report.card_summary`: findings and test metrics."""
    shown = card.shown_findings()
    lines = [f"Findings (multi-label, each with its own calibrated probability and operating point): "
             f"{', '.join(shown) or 'none presented'}"]
    note = hidden_note(card)
    if note:
        lines.append(note)
    split, m = _finding_metrics(card)
    if split == "test" and m.get("mean_auc") is not None:
        n = f"n={m['n']}, " if m.get("n") is not None else ""
        lines.append(f"Test ({n}{len(m['findings'])} findings): mean AUC {m['mean_auc']:.3f}; per-finding AUCs, "
                     "sensitivities and specificities are in the model card")
    else:
        lines.append("Test metrics: not recorded in the model card")
    return lines


def model_row(card: Any) -> dict[str, str]:
    """The landing-page row of a multi-label card (the columns of :func:`medcnn.visualize.report.model_rows`):
    mean AUC over its findings; sensitivity and specificity are per finding, on the model card page."""
    split, m = _finding_metrics(card)
    n = f" (n={m['n']})" if m.get("n") is not None else ""
    mean = m.get("mean_auc")
    return {"model": card.name, "modality": card.modality, "architecture": card.architecture,
            "classes": ", ".join(card.shown_findings()) + " (multi-label)",
            "metrics on": f"{split}{n}" if split else "none recorded",
            "AUC (95% CI)": f"mean {mean:.3f} over {len(m['findings'])} findings" if mean is not None else "n/a",
            "sensitivity": "per finding (model card)" if split else "n/a",
            "specificity": "per finding (model card)" if split else "n/a"}


def write_findings(flow: Flow, card: Any, prediction: Any, target: str | None = None) -> None:
    """Print the findings table of one image (finding, probability, operating point, call), the note
    on hidden findings and, when a map was drawn, which finding it explains."""
    rows = [[r["finding"], f"{r['probability']:.3f}", f"{r['operating point']:.3f}", r["call"]]
            for r in finding_rows(prediction)]
    if rows:
        flow.table([("Finding", 0.34), ("Probability", 0.18), ("Operating point", 0.2), ("Call", 0.28)], rows)
    else:
        flow.text("This model presents no findings.", 8.5)
    note = hidden_note(card)
    if note:
        flow.space(2)
        flow.text(note, 8.5, color="#444444")
    if target:
        flow.space(2)
        flow.text(f"Explained finding: {target} (the map explains its logit, which sets P({target}))", 8.5)
