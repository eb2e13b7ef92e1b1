"""Site onboarding: refit a label's temperature and operating point only where held-out data shows it helps.

Scores drift between hospitals and scanner versions while the ranking of cases often holds, so a
site can re-fit the two numbers a card applies after the network, the temperature (Guo et al.
2017, "On Calibration of Modern Neural Networks", ICML) and the operating point (Youden 1950,
Cancer 3(1)), without retraining. A refit measured on the images it was fitted on always looks
better; on other images of the same site it can be worse. So each component is refitted only
where grouped cross-validation on the site's images shows that it helps
(:mod:`medcnn.evaluation.site_cv`, rule in :data:`~medcnn.evaluation.site_cv.RULE`); otherwise the
shipped value is kept and the report says why. The headline figures are the held-out ones
(before: the shipped point; after: what would be written, refitted on the other folds), with
95 % cluster-bootstrap CIs; in-sample figures are kept only as a secondary record.

The label is the positive label of a softmax card or one finding of a multi-label card
(:class:`~medcnn.evaluation.site_task.SiteTask`); the site's labels are 0/1 for it. Images the
model does not analyse (withheld by the out-of-distribution gate, unreadable, ...) cannot shape an
operating point the app applies only to analysed images, but they are counted and reported per
class, never silently dropped. The network weights are never touched
(:func:`medcnn.evaluation.site_card.write_recalibrated` copies them byte for byte).

Everything here works on logits (pure numpy, no torch); reading images and running the model is
the caller's job (``python -m medcnn recalibrate``, the app's Recalibrate page).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from medcnn.notices import collected
from medcnn.evaluation.metrics import compute_metrics
from medcnn.evaluation.site_cv import RULE, after_arms, cross_validate, decide
from medcnn.evaluation.site_task import InsufficientSiteDataError, Point, RecalibrationError, SiteTask
from medcnn.models.card import ModelCard

__all__ = [
    "DEFAULT_MIN_PER_CLASS",
    "InsufficientSiteDataError",
    "RecalibrationError",
    "binary_names",
    "component_rows",
    "left_out_rows",
    "recalibrate",
    "summary_rows",
]

#: Fewest labelled images of each class accepted for a recalibration (see InsufficientSiteDataError).
DEFAULT_MIN_PER_CLASS = 20
_GATE = "withheld by the out-of-distribution gate"
_QUANTITIES = (("sensitivity", "sensitivity"), ("specificity", "specificity"),
               ("balanced_accuracy", "balanced accuracy"), ("flagged", "flagged share"),
               ("ece", "ECE (calibration error)"), ("nll", "NLL (log loss)"))


def binary_names(card: ModelCard, finding: str | None = None, positive: str | None = None) -> list[str]:
    """(negative, positive) names of the site's binary problem.

    Args:
        card: The card.
        finding: The label recalibrated (default: the card's positive label).
        positive: The site label that marks positives for ``finding`` (multi-label cards).
    """
    finding = finding or card.positive_label
    if positive:
        return [f"not {positive}", positive]
    return [card.head_rule.negative_name(finding), finding]


def _check_inputs(task: SiteTask, logits: Any, y: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(y).ravel()
    if z.ndim != 2 or z.shape[1] != task.n_outputs:
        raise RecalibrationError(f"logits must be (N, {task.n_outputs}) for model {task.card.name!r} "
                                 f"(labels {', '.join(task.card.labels)}), got shape {z.shape}")
    if z.shape[0] != t.size:
        raise RecalibrationError(f"logits have {z.shape[0]} rows but y has {t.size}")
    if not np.isfinite(z).all():
        raise RecalibrationError("logits must be finite (got NaN or inf)")
    if t.size and not np.isin(t, [0, 1]).all():
        raise RecalibrationError(f"y must be 0/1 (1 = positive for {task.finding!r}), got values "
                                 f"{sorted(set(t.tolist()))[:10]}")
    g = None if groups is None else np.asarray(groups).astype(str).ravel()
    if g is not None and g.size != t.size:
        raise RecalibrationError(f"groups must have one value per row ({t.size}), got {g.size}")
    return z, t.astype(np.int64), g


def _left_out(names: list[str], counts: dict[str, int], left_out: Mapping[str, Mapping[str, int]] | None) -> dict:
    """Per class: listed, used, withheld by the gate (count and share), and every reason."""
    out = {}
    for name in names:
        reasons = {str(k): int(v) for k, v in (left_out or {}).get(name, {}).items() if v}
        listed = counts[name] + sum(reasons.values())
        withheld = sum(v for k, v in reasons.items() if _GATE in k)
        out[name] = {"listed": listed, "used": counts[name], "withheld": withheld,
                     "withheld_share": withheld / listed if listed else 0.0, "reasons": reasons}
    return out


def _check_counts(names: list[str], counts: dict[str, int], left: dict, min_per_class: int) -> None:
    if int(min_per_class) < 1:
        raise RecalibrationError(f"min_per_class must be >= 1, got {min_per_class}")
    if min(counts.values()) >= int(min_per_class):
        return
    lost = "; ".join(f"{n}: {sum(left[n]['reasons'].values())} of {left[n]['listed']} left out "
                     f"({', '.join(f'{v} {k}' for k, v in sorted(left[n]['reasons'].items()))})"
                     for n in names if left[n]["reasons"])
    raise InsufficientSiteDataError(counts, int(min_per_class), f" Not counted: {lost}." if lost else "")


def _held_out(evidence: dict[str, Any], decision: dict[str, Any]) -> dict[str, Any] | None:
    """Before (shipped) / after (written) / change on the held-out folds, each with its 95 % CI."""
    stats = evidence["stats"]
    if stats is None:
        return None
    arms = after_arms(evidence, decision)
    out: dict[str, Any] = {"folds": evidence["folds"], "before": {}, "after": {}, "change": {}}
    for key, _ in _QUANTITIES:
        arm = arms[key]
        out["before"][key], out["before"][f"{key}_ci"] = stats[key]["old"]["value"], stats[key]["old"]["ci"]
        out["after"][key], out["after"][f"{key}_ci"] = stats[key][arm]["value"], stats[key][arm]["ci"]
        kept = arm == "old"
        out["change"][key] = 0.0 if kept else stats[key]["change"]["value"]
        out["change"][f"{key}_ci"] = [0.0, 0.0] if kept else stats[key]["change"]["ci"]
    return out


def _held_out_scores(evidence: dict[str, Any], decision: dict[str, Any], y: np.ndarray) -> dict[str, list] | None:
    """Out-of-fold ``y``, ``before`` / ``after`` probabilities (for the page's plots), sorted so that no
    row order of the site data is kept; None without evidence."""
    arms = evidence["arms"]
    if arms is None:
        return None
    after = arms["p_new"] if decision["temperature"]["refit"] else arms["p_old"]
    order = np.lexsort((y, -arms["p_old"]))
    return {"y": y[order].tolist(), "before": arms["p_old"][order].tolist(), "after": after[order].tolist()}


def _in_sample(task: SiteTask, z: np.ndarray, y: np.ndarray, point: Point, names: list[str],
               g: np.ndarray | None) -> dict[str, Any]:
    """Metrics on the images the point was fitted on: a record, never the headline, so no CIs."""
    prob = task.probability(z, point.temperature)
    return {**compute_metrics(y, prob, point.threshold, labels=names, n_boot=0, groups=g),
            "temperature": point.temperature}


def recalibrate(
    card: ModelCard,
    logits: np.ndarray,
    y: np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    *,
    finding: str | None = None,
    names: Sequence[str] | None = None,
    left_out: Mapping[str, Mapping[str, int]] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    folds: int = 5,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decide, per component, whether the site's images show a refit helps, and refit only those.

    Args:
        card: The model card whose logits these are.
        logits: float (N, C) raw logits in ``card.labels`` order, of the images the model analyses.
        y: int (N,) 0/1: 1 = the image is positive for ``finding``.
        groups: Optional (N,) patient id per row: folds keep a patient's images together and the
            bootstrap resamples whole patients.
        min_per_class: Fewest usable rows of each class.
        finding: The label recalibrated (default: the card's positive label; a multi-label card:
            one of its findings, whose temperature and operating point alone may change).
        names: (negative, positive) class names (default :func:`binary_names`).
        left_out: Class name -> {reason -> count} of the site's images not in ``logits`` (e.g.
            withheld by the gate): reported per class with the share withheld.
        n_boot: Bootstrap resamples of every CI (0: no CIs, so nothing can be shown to help and
            every component is kept).
        seed: Seed of the folds and the bootstrap.
        folds: Folds of the cross-validation.

    Returns:
        ``(fields, report)``. ``fields``: ``finding``, ``temperature`` and ``threshold`` to
        write, ``changed`` (False: every component kept, the shipped card stands), ``metrics``
        (in-sample ``site`` with per-image ``scores``, and ``site_before_recalibration``) and
        ``held_out_scores`` (out-of-fold ``y`` / ``before`` / ``after`` probabilities, for plots;
        not written into a card). ``report``: JSON-ready ``model``, ``finding``,
        ``labels``, ``n_images``, ``counts``, ``left_out`` (per class: listed, used, withheld,
        withheld_share, reasons), ``min_per_class``, ``bootstrap``, ``n_groups``, ``n_boot``,
        ``held_out`` (before / after / change with ``*_ci``; None without evidence),
        ``ranking``, ``components`` (per component: shipped, written, refit, reason), ``rule``,
        ``before`` / ``after`` (temperature, threshold), ``in_sample`` and ``notes``.

    Raises:
        InsufficientSiteDataError: a class has fewer than ``min_per_class`` rows (the message says
            how many, why the minimum exists, and what was left out).
        RecalibrationError: logits, labels or groups of the wrong shape or values; a label with
            no operating point of its own.
    """
    task = SiteTask(card, finding)
    z, t, g = _check_inputs(task, logits, y, groups)
    names = list(names or binary_names(card, task.finding))
    counts = {names[0]: int((t == 0).sum()), names[1]: int((t == 1).sum())}
    left = _left_out(names, counts, left_out)
    _check_counts(names, counts, left, min_per_class)

    evidence = cross_validate(task, z, t, g, folds=folds, n_boot=n_boot, seed=seed)
    decision = decide(evidence)
    refit_t, refit_op = decision["temperature"]["refit"], decision["operating_point"]["refit"]
    with collected() as caught:  # reported in the notes
        point = task.fit(z, t, temperature=refit_t, threshold=refit_op)
    shipped = task.shipped
    components = {
        "temperature": {"shipped": shipped.temperature, "written": point.temperature, **decision["temperature"]},
        "operating_point": {"shipped": shipped.threshold, "written": point.threshold, **decision["operating_point"]},
    }
    notes = list(caught)
    if not (refit_t or refit_op):
        notes.insert(0, "nothing is refitted: the held-out folds do not show that a refit helps, so the "
                        "shipped card stands as it is")
    elif refit_t and not refit_op:
        notes.append("the operating point is kept: the threshold is carried to the new temperature so that "
                     "it calls exactly the same images")
    shares = {n: v["withheld_share"] for n, v in left.items()}
    if max(shares.values()) > 0:
        notes.append("images withheld by the gate get no result at this site whatever the card says; the figures "
                     "describe the images the model analyses (" + ", ".join(
                         f"{n}: {left[n]['withheld']} of {left[n]['listed']} withheld, {shares[n]:.0%}"
                         for n in names) + ")")
    report = {
        "model": card.name, "finding": task.finding, "labels": names, "n_images": int(t.size), "counts": counts,
        "left_out": left, "min_per_class": int(min_per_class), "bootstrap": "groups" if g is not None else "rows",
        "n_groups": int(len(np.unique(g))) if g is not None else int(t.size), "n_boot": int(n_boot),
        "held_out": _held_out(evidence, decision), "ranking": evidence["ranking"], "components": components,
        "rule": dict(RULE), "before": {"temperature": shipped.temperature, "threshold": shipped.threshold},
        "after": {"temperature": point.temperature, "threshold": point.threshold}, "notes": notes,
    }
    m_before = _in_sample(task, z, t, shipped, names, g)
    m_after = _in_sample(task, z, t, point, names, g)
    report["in_sample"] = {side: {k: m[k] for k in ("recall", "specificity", "balanced_accuracy", "ece", "auc")}
                           for side, m in (("before", m_before), ("after", m_after))}
    p_new = task.probability(z, point.temperature)
    order = np.lexsort((t, -p_new))  # sorted, so no row order of the site data is kept
    m_after["scores"] = {"y": [int(v) for v in t[order]], "prob": [float(v) for v in p_new[order]]}
    m_after["notes"] = list(m_after.get("notes", [])) + [
        "measured on the images it was fitted on (optimistic); metrics['recalibration']['held_out'] has the "
        "cross-validated figures"]
    fields = {"finding": task.finding, "temperature": point.temperature, "threshold": point.threshold,
              "changed": bool(refit_t or refit_op),
              "metrics": {"site": m_after, "site_before_recalibration": m_before},
              "held_out_scores": _held_out_scores(evidence, decision, t)}
    return fields, report


def _fmt(value: float | None, ci: Sequence[float] | None = None, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    f = "{:+.3f}" if sign else "{:.3f}"
    return f.format(value) + (f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci else "")


def summary_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The headline table: held-out before (shipped) / after (written) / change, 95 % CIs in brackets.

    Returns:
        One row per quantity with ``quantity``, ``before (held-out)``, ``after (held-out)`` and
        ``change``; empty when there is no held-out evidence.
    """
    held = report.get("held_out")
    if not held:
        return []
    return [{"quantity": title, "before (held-out)": _fmt(held["before"][k], held["before"][f"{k}_ci"]),
             "after (held-out)": _fmt(held["after"][k], held["after"][f"{k}_ci"]),
             "change": _fmt(held["change"][k], held["change"][f"{k}_ci"], sign=True)} for k, title in _QUANTITIES]


def component_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per component: shipped value, value written, refit or kept, and why."""
    return [{"component": name.replace("_", " "), "shipped": f"{c['shipped']:.4g}", "written": f"{c['written']:.4g}",
             "decision": "refit" if c["refit"] else "kept", "why": c["reason"]}
            for name, c in report["components"].items()]


def left_out_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """One row per class: images listed, used, withheld by the gate (count and share), other reasons."""
    rows = []
    for name, v in report["left_out"].items():
        other = {k: n for k, n in v["reasons"].items() if _GATE not in k}
        rows.append({"class": name, "listed": str(v["listed"]), "used": str(v["used"]),
                     "withheld by the gate": f"{v['withheld']} ({v['withheld_share']:.0%})",
                     "other left out": ", ".join(f"{n} {k}" for k, n in sorted(other.items())) or "none"})
    return rows
