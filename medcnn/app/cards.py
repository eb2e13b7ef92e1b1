"""Model-card page helpers: evaluation figures as cached PNGs, and every card field as a
readable table or Vega-Lite chart (no JSON trees).

The confusion matrix comes from the counts stored in the card; ROC, precision-recall and
reliability curves need per-image scores: the card's own (``metrics[split]["scores"]``,
written by ``evaluate --calibrate --write-card``), else computed by :func:`score_split`
from the model's data split when it is on this machine. Every cache key holds the card files'
modification time (:func:`card_mtime`), so retraining invalidates the figures.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from medcnn.app.compute import compute_slot
from medcnn.app.state import _mtime
from medcnn.models.card import ModelCard

__all__ = ["card_figure_png", "card_mtime", "ci_chart", "ci_points", "experiment_rows", "finding_figure_png",
           "finding_score_splits", "flatten", "fmt",
           "group_sets", "has_stored_scores", "history_chart", "metric_sets", "model_fields", "nested_tables",
           "ood_summary", "per_class_rows", "preprocessing_rows", "score_split", "split_count_chart",
           "split_count_rows"]



def card_mtime(card: ModelCard) -> float:
    """Modification time of a card's files (cache key part: edits invalidate figures)."""
    return _mtime(str(card.path))


def has_stored_scores(card: ModelCard, split: str) -> bool:
    """Whether the card holds per-image scores for ``split`` (curves need no data)."""
    stored = (card.metrics.get(split) or {}).get("scores") or {}
    return bool(stored.get("y")) and len(stored.get("y", [])) == len(stored.get("prob", []))


@st.cache_data(show_spinner=False, max_entries=8)
def score_split(card_path: str, mtime: float, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(y, prob) of the card's model on one split: the scores stored in the card, else
    computed on its training data (labels.csv named in the card) when that is here.

    Raises:
        ValueError: no stored scores and the card names no labels file that exists here.
    """
    from medcnn.evaluation.evaluate import score_dataset

    card = ModelCard.load(card_path)
    if has_stored_scores(card, split):
        stored = card.metrics[split]["scores"]
        return np.asarray(stored["y"], dtype=np.int64), np.asarray(stored["prob"], dtype=np.float64)
    wanted = [str(p) for p in card.training.get("data", [])]
    # Data paths are recorded relative to where training ran: the working directory, or the
    # folder above the weights folder (the checkout the card was trained in).
    roots = (Path.cwd(), Path(card_path).resolve().parent.parent)
    data = [next((str(q) for q in (root / p for root in roots) if q.exists()), None) for p in wanted]
    if not wanted or None in data:
        raise ValueError(f"the data of {card.name!r} ({card.training.get('data') or 'not recorded'}) "
                         "is not available on this machine")
    with compute_slot():  # one slot for the whole split: a rare, explicit request on this page
        scores = score_dataset(card_path, data, split)
    return np.asarray(scores.y_pos), np.asarray(scores.prob())


@st.cache_data(show_spinner=False, max_entries=64)
def card_figure_png(kind: str, card_path: str, mtime: float, split: str) -> bytes:
    """PNG of one evaluation figure of a card: ``confusion`` (from the stored counts) or
    ``roc`` / ``pr`` / ``reliability`` (from :func:`score_split`)."""
    from medcnn.visualize import plots

    card = ModelCard.load(card_path)
    m = card.metrics.get(split, {})
    title = f"{card.name} ({split})"
    if kind == "confusion":
        labels = m.get("labels") or [f"not {card.positive_label}", card.positive_label]
        fig = plots.confusion_figure(m["confusion_matrix"], labels, f"{title}: threshold {card.threshold:.3f}")
    else:
        y, p = score_split(card_path, mtime, split)
        fig = {"roc": lambda: plots.roc_figure(y, p, card.threshold, f"{title}: ROC"),
               "pr": lambda: plots.pr_figure(y, p, card.threshold, f"{title}: precision-recall"),
               "reliability": lambda: plots.reliability_figure(y, p, title=f"{title}: reliability")}[kind]()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def finding_score_splits(card: ModelCard) -> list[str]:
    """Metrics sets of a multi-label card holding per-image scores for every finding (test first)."""
    splits = [name for name, m in card.metrics.items() if isinstance(m, dict) and isinstance(m.get("scores"), dict)
              and card.labels and all(isinstance(m["scores"].get(n), dict) for n in card.labels)]
    return sorted(splits, key=lambda name: name != "test")


@st.cache_data(show_spinner=False, max_entries=64)
def finding_figure_png(kind: str, card_path: str, mtime: float, split: str, finding: str) -> bytes:
    """PNG of ``roc`` / ``pr`` / ``reliability`` of one finding of a multi-label card, from the per-image
    scores stored with its metrics, at the finding's operating point."""
    from medcnn.visualize import plots

    card = ModelCard.load(card_path)
    stored = card.metrics[split]["scores"][finding]
    y, p = np.asarray(stored["y"], dtype=np.int64), np.asarray(stored["prob"], dtype=np.float64)
    threshold, title = float(card.findings[finding].get("threshold", 0.5)), f"{finding} ({split})"
    fig = {"roc": lambda: plots.roc_figure(y, p, threshold, f"{title}: ROC"),
           "pr": lambda: plots.pr_figure(y, p, threshold, f"{title}: precision-recall"),
           "reliability": lambda: plots.reliability_figure(y, p, title=f"{title}: reliability")}[kind]()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def ood_summary(card: ModelCard) -> tuple[str, list[dict[str, Any]]]:
    """A sentence on the card's out-of-distribution gate and its measured rates, one row per set."""
    ood = card.ood or {}
    if not ood.get("measured"):
        return ("This model has no image-based out-of-distribution gate: only the DICOM header checks "
                "run, so PNG/JPEG images of other anatomy would still get an answer."), []
    title = (f"Images are scored against the training images ({ood.get('method', 'Mahalanobis distance')}). "
             f"Above **{ood['caution_threshold']:.2f}** a result is shown with a caution; above "
             f"**{ood['refuse_threshold']:.2f}** the image is not analysed. Fitted on "
             f"{ood.get('fitted_on', {}).get('n', '?')} training images only; no image below was used to fit it.")
    rows = []
    for kind, label in (("in_distribution", "should be read"), ("outside", "should be flagged")):
        for name, r in ood["measured"].get(kind, {}).items():
            if r.get("n"):
                rows.append({"set": name, "expected": label, "n": r["n"],
                             "flagged %": round(100 * r["flagged"], 1), "not analysed %": round(100 * r["outside"], 1)})
    return title, rows



# --------------------------------------------------------------------------- readable tables
_CI_KEYS = ("ci", "auc_ci")


def fmt(value: Any) -> str:
    """A card value as short readable text: 3 decimals (scientific below 0.001), CIs as
    ``lo–hi``, lists joined with commas, yes/no for booleans, "—" for nothing."""
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        size = abs(value)
        if value != value or value == 0:
            return "n/a" if value != value else "0"
        if size < 0.001:
            return f"{value:.2e}"
        return f"{value:.3f}" if size < 1 else f"{value:.4g}" if size < 1000 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, float) for v in value):
            return f"{fmt(value[0])}–{fmt(value[1])}"
        return ", ".join(fmt(v) for v in value)
    return str(value)


def _leaf(value: Any) -> bool:
    if isinstance(value, dict):
        return not value
    return not (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``{"a.b": text}`` of its leaves (formatted with :func:`fmt`)."""
    out: dict[str, str] = {}
    for key, v in value.items():
        name = f"{prefix}{key}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{name}."))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            out[name] = f"{len(v)} entries"
        else:
            out[name] = fmt(v)
    return out


def _title(path: list[str]) -> str:
    return " › ".join(p.replace("_", " ") for p in path)


def _filled(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    columns = list(dict.fromkeys(c for r in rows for c in r))
    return [{c: r.get(c, "—") for c in columns} for r in rows]


def nested_tables(value: Any, title: str, max_columns: int = 12,
                  max_transposed: int = 8) -> list[tuple[str, list[dict[str, str]]]]:
    """Any nested card value (audit results, training records...) as titled tables, never
    a JSON tree.

    Scalars of a dict become ``field | value`` rows. Two or more sibling dicts of one kind
    (each holding at least half of their fields) become one table: a row per sibling when
    their flattened fields fit in ``max_columns`` columns, else (up to ``max_transposed``
    siblings and ``4 * max_columns`` fields) a row per field and a column per sibling;
    otherwise each sibling is walked on its own. A list of dicts is a table with a row per
    entry. Titles are the path below ``title`` (``"audit › dataset › best"``).

    Returns:
        ``(title, rows)`` per table, in the order of the value.
    """
    tables: list[tuple[str, list[dict[str, str]]]] = []

    def walk(v: Any, path: list[str]) -> None:
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            tables.append((_title(path), _filled([flatten(x) for x in v])))
            return
        if not isinstance(v, dict):
            tables.append((_title(path), [{"field": _title(path[-1:]), "value": fmt(v)}]))
            return
        leaves = {k: x for k, x in v.items() if _leaf(x)}
        nodes = {k: x for k, x in v.items() if not _leaf(x)}
        if leaves:
            tables.append((_title(path), [{"field": k.replace("_", " "), "value": fmt(x)} for k, x in leaves.items()]))
        if len(nodes) >= 2 and all(isinstance(x, dict) for x in nodes.values()):
            flat = {k: flatten(x) for k, x in nodes.items()}
            fields = list(dict.fromkeys(f for d in flat.values() for f in d))
            alike = min(len(d) for d in flat.values()) >= 0.5 * len(fields)  # siblings of one kind
            if alike and len(fields) <= max_columns:
                tables.append((_title(path), _filled([{"name": k, **d} for k, d in flat.items()])))
                return
            if alike and len(nodes) <= max_transposed and len(fields) <= 4 * max_columns:
                tables.append((_title(path), [{"field": f, **{k: d.get(f, "—") for k, d in flat.items()}}
                                              for f in fields]))
                return
        for k, x in nodes.items():
            walk(x, [*path, k])

    walk(value, [title])
    return tables


def model_fields(card: ModelCard) -> list[dict[str, str]]:
    """What the model is and how it decides: one ``field | value`` row per card field."""
    rows = [("Architecture", card.architecture), ("Modality", card.modality), ("Classes", card.labels),
            ("Positive class", card.positive_label), ("Input size", f"{card.input_size[0]} x {card.input_size[1]}"),
            ("Operating threshold", card.threshold), ("Temperature", card.temperature),
            ("Explained layer", card.target_layer), ("DICOM modalities", card.dicom_modalities or "any")]
    if card.head_rule.per_finding:  # each finding has its own operating point and temperature (findings table)
        rows[2:7] = [("Head", "sigmoid (multi-label: one probability per finding)"), ("Findings", card.labels),
                     ("Presented findings", card.shown_findings() or "none"),
                     ("Input size", f"{card.input_size[0]} x {card.input_size[1]}"),
                     ("Operating points, temperatures", "per finding (see the per-finding metrics)")]
    rows += [("Not known", "; ".join(card.unknown))] if card.unknown else []
    return [{"field": k, "value": fmt(v)} for k, v in rows]


def preprocessing_rows(card: ModelCard) -> list[dict[str, str]]:
    """The preprocessing pipeline: one row per step with its settings."""
    steps = (card.preprocessing or {}).get("steps", [])
    return [{"step": str(s.get("name", "?")), "settings": ", ".join(f"{k}={fmt(v)}" for k, v in s.items()
                                                                    if k != "name") or "—"}
            for s in steps if isinstance(s, dict)]


def split_count_rows(card: ModelCard) -> list[dict[str, Any]]:
    """Images per split and class (``training["split_counts"]``), with a total column."""
    counts = (card.training or {}).get("split_counts") or {}
    rows = []
    for split, per_class in counts.items():
        if isinstance(per_class, dict):
            rows.append({"split": split, **{str(k): int(v) for k, v in per_class.items()},
                         "total": int(sum(per_class.values()))})
    return rows


def split_count_chart(card: ModelCard) -> dict[str, Any] | None:
    """Vega-Lite grouped bars of :func:`split_count_rows` (None when the card has none)."""
    values = [{"split": r["split"], "class": k, "images": v} for r in split_count_rows(card)
              for k, v in r.items() if k not in ("split", "total")]
    if not values:
        return None
    return {"data": {"values": values}, "height": 180, "mark": {"type": "bar", "tooltip": True},
            "encoding": {"x": {"field": "split", "type": "nominal", "sort": None, "title": None},
                         "xOffset": {"field": "class"}, "y": {"field": "images", "type": "quantitative"},
                         "color": {"field": "class", "type": "nominal"}}}


def ci_chart(rows: list[dict[str, Any]], label: str = "set") -> dict[str, Any] | None:
    """Vega-Lite dot-and-interval chart: ``rows`` of ``{label, metric, value, lo, hi}``."""
    if not rows:
        return None
    return {"data": {"values": rows}, "height": {"step": 16},
            "encoding": {"y": {"field": label, "type": "nominal", "sort": None, "title": None,
                               "axis": {"labelLimit": 260}},
                         "yOffset": {"field": "metric"}, "color": {"field": "metric", "type": "nominal"}},
            "layer": [{"mark": {"type": "rule", "size": 2},
                       "encoding": {"x": {"field": "lo", "type": "quantitative", "scale": {"domain": [0, 1]},
                                          "title": "value with 95% CI"}, "x2": {"field": "hi"}}},
                      {"mark": {"type": "point", "filled": True, "size": 60, "tooltip": True},
                       "encoding": {"x": {"field": "value", "type": "quantitative"}}}]}


def ci_points(sets: dict[str, dict[str, Any]], keys: tuple[str, ...] = ("auc", "recall", "specificity"),
              label: str = "set") -> list[dict[str, Any]]:
    """``{label, metric, value, lo, hi}`` per metric of each named metrics dict (for :func:`ci_chart`);
    a metric without a CI gets a zero-width interval."""
    names = {"auc": "AUC", "recall": "sensitivity", "specificity": "specificity"}
    out = []
    for name, m in sets.items():
        for key in keys:
            if not isinstance(m.get(key), (int, float)):
                continue
            ci = (m.get("auc_ci") if key == "auc" else None) or (m.get("ci") or {}).get(key) or []
            lo, hi = ci if len(ci) == 2 and None not in ci else (m[key], m[key])
            n = f" (n={m['n']})" if m.get("n") is not None else ""
            out.append({label: f"{name}{n}", "metric": names.get(key, key), "value": float(m[key]),
                        "lo": float(lo), "hi": float(hi)})
    return out


def metric_sets(card: ModelCard) -> dict[str, dict[str, Any]]:
    """The card's metrics sets (val, test, outside checks), by name."""
    return {k: m for k, m in card.metrics.items() if isinstance(m, dict) and "n" in m}


def group_sets(card: ModelCard) -> dict[str, dict[str, Any]]:
    """Per-subgroup metrics (e.g. per view) as ``"test · view_position=AP" -> metrics``."""
    from medcnn.visualize.report import metric_groups

    return {f"{split} · {column}={group}": m for split, column, groups in metric_groups(card)
            for group, m in groups.items() if isinstance(m, dict)}


def per_class_rows(card: ModelCard) -> list[dict[str, str]]:
    """Per-class precision / recall / F1 / support of every metrics set that records them."""
    rows = []
    for split, m in card.metrics.items():
        for label, v in ((m.get("per_class") or {}).items() if isinstance(m, dict) else []):
            if isinstance(v, dict):
                rows.append({"set": split, "class": label, **{k: fmt(x) for k, x in v.items()}})
    return rows


def history_chart(card: ModelCard) -> dict[str, Any] | None:
    """Vega-Lite lines of the training history (losses and validation AUC per epoch)."""
    history = (card.training or {}).get("history") or []
    values = [{"epoch": h["epoch"], "series": k, "value": float(h[k])} for h in history if isinstance(h, dict)
              and "epoch" in h for k in ("train_loss", "val_loss", "val_auc") if isinstance(h.get(k), (int, float))]
    if not values:
        return None
    return {"data": {"values": values}, "height": 220, "mark": {"type": "line", "point": True, "tooltip": True},
            "encoding": {"x": {"field": "epoch", "type": "quantitative"},
                         "y": {"field": "value", "type": "quantitative", "title": None},
                         "color": {"field": "series", "type": "nominal"}}}


def experiment_rows(card: ModelCard) -> list[dict[str, str]]:
    """Experiments as flat rows (nested results become ``a.b`` columns; CIs as ``lo–hi``)."""
    return _filled([flatten(e) for e in card.experiments if isinstance(e, dict)])
