"""The one-screen summary at the top of the Model card page, and which card the page opens on.

A clinician opening a model card needs, before anything else: what the model is for and on whom,
what each output means, how well it does (with confidence intervals), what its operating points
mean as sensitivity and specificity, what it must not be used for, and when it was last checked.
:func:`summary` gathers exactly that from the card as text and rows (no streamlit); :func:`show_summary`
draws it. The developer detail (commands, commit hashes, experiment tables, field dumps) stays
below it on the page, in expanders.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from medcnn.models.card import ModelCard
from medcnn.io import INPUT_KINDS
from medcnn.ood.scope import resolve_scope
from medcnn.visualize.findings import ci_text, finding_metric_rows, hidden_note

__all__ = ["CardSummary", "default_card_name", "ordered_cards", "show_summary", "summary"]


def default_card_name(cards: Sequence[ModelCard]) -> str | None:
    """The card the page opens on: the chest X-ray default (:data:`medcnn.inference.DEFAULT_CARDS`),
    else the first chest X-ray card, else the first card (None when there is none)."""
    from medcnn.inference import DEFAULT_CARDS

    names = [c.name for c in cards]
    for family in ("CXR", "CT"):
        if DEFAULT_CARDS.get(family) in names:
            return DEFAULT_CARDS[family]
    cxr = [c.name for c in cards if c.modality == "CXR"]
    return (cxr or names or [None])[0]


def ordered_cards(cards: Sequence[ModelCard]) -> list[ModelCard]:
    """``cards`` with the default one first (:func:`default_card_name`), the others in their order."""
    first = default_card_name(cards)
    return sorted(cards, key=lambda c: c.name != first)


@dataclass
class CardSummary:
    """What the top of a model card says (every field is text or rows of text)."""

    intended_use: str
    population: str
    outputs: list[str]
    performance_title: str
    performance: list[dict[str, str]]
    operating_points: list[str]
    must_not: list[str]
    checked: str
    notes: list[str] = field(default_factory=list)


def _population(card: ModelCard) -> str:
    scope = resolve_scope(card.modality, card.scope)
    parts = []
    if scope.get("min_age_years"):
        parts.append(f"Adults ({scope['min_age_years']} years and over)")
    views = scope.get("view_positions") or []
    if card.modality == "CXR":
        parts.append("frontal chest radiographs" + (f" ({' or '.join(views)})" if views else ""))
    elif card.modality == "CT":
        parts.append("axial chest CT slices")
    else:
        parts.append(f"{card.modality} images")
    files = [f"DICOM {', '.join(card.dicom_modalities)}"] if card.dicom_modalities else ["DICOM"]
    if card.modality != "CT":  # a CT slice needs its Hounsfield units: DICOM only
        files.append("PNG/JPEG")
    parts.append("read from " + " or ".join(files))
    return "; ".join(parts) + "."


def _outputs(card: ModelCard) -> list[str]:
    if card.head_rule.per_finding:
        shown = card.shown_findings()
        lines = [f"One calibrated probability per finding ({', '.join(shown) or 'none presented'}). Each "
                 "finding has its own operating point; a finding is called when its probability is at or "
                 "above it. An image may have none, one or several findings."]
        note = hidden_note(card)
        return [*lines, note] if note else lines
    other = [label for label in card.labels if label != card.positive_label]
    return [f"P({card.positive_label}): the calibrated probability that the image shows {card.positive_label} "
            f"rather than {' or '.join(other) or 'not'}.",
            f"The decision is {card.positive_label} when P({card.positive_label}) is at or above the threshold "
            f"{card.threshold:.3f}, otherwise {' / '.join(other) or 'negative'}."]


def _metric_sets(card: ModelCard) -> list[tuple[str, dict[str, Any]]]:
    """Held-out sets first: test, then outside checks (names with "test"), validation last."""
    sets = [(n, m) for n, m in card.metrics.items()
            if isinstance(m, dict) and "n" in m and m.get("auc") is not None]
    return sorted(sets, key=lambda item: (item[0] != "test", "test" not in item[0], item[0]))


def _softmax_performance(card: ModelCard) -> tuple[str, list[dict[str, str]], list[str]]:
    rows, points = [], []
    for name, m in _metric_sets(card):
        ci = m.get("ci") or {}
        rows.append({"set": name.replace("_", " "), "images": str(m.get("n")),
                     "AUC (95% CI)": ci_text(m.get("auc"), m.get("auc_ci") or ci.get("auc")),
                     "sensitivity (95% CI)": ci_text(m.get("recall"), ci.get("recall")),
                     "specificity (95% CI)": ci_text(m.get("specificity"), ci.get("specificity"))})
    held = next(((n, m) for n, m in _metric_sets(card) if n != "val"), None)
    if held and held[1].get("recall") is not None and held[1].get("specificity") is not None:
        n, m = held
        points.append(f"At the threshold {card.threshold:.3f} on P({card.positive_label}), on the {n.replace('_', ' ')} "
                      f"set ({m.get('n')} images): it calls {m['recall']:.0%} of {card.positive_label} images "
                      f"(sensitivity) and clears {m['specificity']:.0%} of the others (specificity).")
    else:
        points.append(f"Threshold {card.threshold:.3f} on P({card.positive_label}); no held-out sensitivity or "
                      "specificity is recorded in the card.")
    return "Performance on held-out images (95% bootstrap confidence intervals)", rows, points


def _multilabel_performance(card: ModelCard) -> tuple[str, list[dict[str, str]], list[str]]:
    split, rows = finding_metric_rows(card)
    shown = [r for r in rows if r["shown"] == "yes"]
    table = [{"finding": r["finding"], "AUC (95% CI)": r["AUC (95% CI)"], "operating point": r["operating point"],
              "sensitivity": r["sensitivity"], "specificity": r["specificity"]} for r in shown]
    where = {"test": "the held-out test set", "val": "validation (optimistic: it chose the operating points)"}
    title = f"Performance per presented finding, on {where.get(split, 'no recorded set')}"
    points = [_policy_point(r["finding"], card.findings.get(r["finding"]) or {}) or
              f"{r['finding']}: called at P ≥ {r['operating point']}: sensitivity {r['sensitivity']}, "
              f"specificity {r['specificity']}." for r in shown]
    return title, table, points or ["No operating points recorded."]


def _ci(m: dict[str, Any], key: str) -> str:
    value, ci = m.get(key), m.get(f"{key}_ci")
    if value is None:
        return "n/a"
    return f"{value:.2f} (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else f"{value:.2f}"


def _policy_point(name: str, f: dict[str, Any]) -> str | None:
    """A finding's operating point as its purpose and, on test (else validation), sensitivity, specificity
    and PPV with CIs at each recorded prevalence; None for a card without the policy's record."""
    m, where = (f.get("test"), "test") if f.get("test") else (f.get("val"), "validation")
    if not f.get("rule") or not m:
        return None
    ppv = [f"PPV {_ci(p, 'ppv')} at {p['prevalence']:.1%} prevalence ({source})"
           for source, p in (m.get("predictive") or {}).items()]
    return (f"{name}: called at P ≥ {f['threshold']:.3f}, chosen for {f['rule']}. On {where} "
            f"({m.get('n_pos')} with, {m.get('n_neg')} without): sensitivity {_ci(m, 'sensitivity')}, "
            f"specificity {_ci(m, 'specificity')}" + (f"; {'; '.join(ppv)}" if ppv else "") + ".")


_DATE_KEYS = ("date", "evaluated", "checked", "created")


def _dates(value: Any, depth: int = 0) -> list[str]:
    """Every ``YYYY-MM-DD`` under a date-like key of a card section (a few levels deep)."""
    if depth > 3 or not isinstance(value, dict):
        return []
    found = [str(v)[:10] for k, v in value.items() if k in _DATE_KEYS and isinstance(v, str) and len(v) >= 10]
    for v in value.values():
        found += _dates(v, depth + 1)
    return [d for d in found if d[:4].isdigit() and d[4] == "-"]


def _checked(card: ModelCard) -> str:
    trained = str((card.training or {}).get("date") or "")[:10]
    later = sorted(_dates(card.metrics) + _dates(card.audit))
    if later and later[-1] > trained:
        return f"{later[-1]} (the latest evaluation recorded in the card; trained {trained or 'on an unrecorded date'})."
    if trained:
        return f"{trained} (when it was trained; the card records no later evaluation date)."
    return "not recorded in the card."


def summary(card: ModelCard) -> CardSummary:
    """The one-screen summary of ``card`` (every field is text, or rows of text for a table)."""
    title, rows, points = (_multilabel_performance if card.head_rule.per_finding else _softmax_performance)(card)
    return CardSummary(
        intended_use=card.intended_use or "Not stated.", population=_population(card),
        outputs=[*_outputs(card), *(f"On {INPUT_KINDS[kind]}: {text}" for kind, text in card.caveats.items())],
        performance_title=title, performance=rows, operating_points=points,
        must_not=["Diagnosis, triage or any decision about a patient: it is a research and teaching tool, not a "
                  "medical device.", *card.limitations],
        checked=_checked(card))


def show_summary(card: ModelCard) -> None:
    """Draw :func:`summary` (one screen: the developer detail follows below, in expanders)."""
    import streamlit as st

    s = summary(card)
    left, right = st.columns(2)
    with left:
        st.markdown(f"**Intended use.** {s.intended_use}")
        st.markdown(f"**Population.** {s.population}")
        st.markdown("**What the output means.**\n" + "\n".join(f"- {line}" for line in s.outputs))
    with right:
        st.markdown(f"**{s.performance_title}**")
        if s.performance:
            st.table(s.performance, border="horizontal", hide_index=True)
        else:
            st.caption("No metrics recorded in this card.")
        st.markdown("**Operating points.**\n" + "\n".join(f"- {line}" for line in s.operating_points))
        st.markdown(f"**Last checked:** {s.checked}")
    with st.expander("**Must not be used for** (and the model's limitations)", expanded=True,
                     key=f"must_not_{card.name}"):
        st.markdown("\n".join(f"- {line}" for line in s.must_not))
