"""Saliency-location audit: where does a model look, compared with where it should?

For every image of a labelled set, the model's saliency map (Grad-CAM by default) is
compared with three regions of the *display* image (same geometry as the map):

* the thorax (:func:`thorax_mask`, chest X-rays only): mass outside it is attention on
  the neck, the arms, the background or the text outside the body;
* the image margins (:func:`margin_mask`), where burned-in text and markers sit;
* radiologists' boxes (:func:`boxes_mask`, from ``rsna_boxes_1024`` where present): the
  share of mass inside the boxes (the "energy-based pointing game", Wang et al. 2020,
  Score-CAM) and the pointing game (is the map's maximum inside a box? Zhang et al.
  2016, "Top-down neural attention by excitation backprop").

Each figure is reported next to a random-map baseline (:func:`random_baseline`): a map
that ignores the image puts on average a mass share equal to the region's area share,
so "32 % outside the thorax" only means something next to "the thorax's complement is
35 % of the image".

The thorax estimate and its limits are documented in :mod:`medcnn.audit.regions`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import pandas as pd

from medcnn.notices import collected
from medcnn.audit.regions import (  # re-exported
    boxes_mask,
    boxes_to_display,
    display_geometry,
    location_metrics,
    margin_mask,
    parse_boxes,
    random_baseline,
    thorax_mask,
)
from medcnn.audit.table import load_table
from medcnn.evaluation.bootstrap import mean_ci
from medcnn.io import read_image

__all__ = [
    "audit_saliency",
    "boxes_mask",
    "boxes_to_display",
    "display_geometry",
    "format_saliency_summary",
    "location_metrics",
    "margin_mask",
    "parse_boxes",
    "random_baseline",
    "thorax_mask",
]


# ----------------------------------------------------------------------------- audit
def _default_explain(model: Any, tensor: Any, *, target: int, method: str, layer: str,
                     objective: str = "auto", head: Any = None) -> Any:
    from medcnn.explain import explain

    return explain(model, tensor, target=target, method=method, layer=layer, objective=objective, head=head)


def _as_map(heat: Any, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 map from an :class:`medcnn.explain.Explanation`, tensor or array."""
    heat = getattr(heat, "heatmap", heat)
    if hasattr(heat, "detach"):
        heat = heat.detach().cpu().numpy()
    h = np.asarray(heat, dtype=np.float32).squeeze()
    if h.ndim != 2:
        raise ValueError(f"the explanation must be an (H, W) map, got shape {h.shape}")
    if h.shape != shape:
        h = cv2.resize(h, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return h


def _resolve_model(model: Any, card: Any, device: Any) -> tuple[Any, Any, Any]:
    """(network, card, pipeline) from a Predictor, a card (path) or a module + card."""
    from medcnn.models.card import ModelCard
    from medcnn.preprocess import Pipeline

    if hasattr(model, "model") and hasattr(model, "card") and hasattr(model, "pipeline"):
        return model.model, model.card, model.pipeline
    if isinstance(model, (str, os.PathLike, ModelCard)):
        from medcnn.inference import Predictor

        p = Predictor(model, device=device)
        return p.model, p.card, p.pipeline
    if card is None:
        raise ValueError("pass a card (ModelCard or its path) with an nn.Module model")
    card = card if isinstance(card, ModelCard) else ModelCard.load(card)
    return model, card, Pipeline.from_config(card.preprocessing)


def _summarise(values: list[float | None], rng: np.random.Generator, n_boot: int = 1000) -> dict[str, Any]:
    """Mean over images with a 95 % bootstrap CI (images resampled i.i.d.); None values skipped."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "ci": None, "n": 0}
    return {"mean": float(v.mean()), "ci": mean_ci(v, rng, n_boot), "n": int(v.size)}


# metric -> (area key of its random-map value, key of its random-map baselines)
_KEYS = {"outside_thorax": ("outside_thorax_area", "outside_thorax"),
         "margin_share": ("margin_area", "margin_share"), "in_box": ("box_area", "in_box"),
         "pointing": ("box_area", "pointing"), "in_box_all": ("box_area", "in_box"),
         "pointing_all": ("box_area", "pointing")}


def _aggregate(records: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Per metric: mean, CI and the three random-map baselines over the images that have it."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, (area_key, base_key) in _KEYS.items():
        rows = [r for r in records if r["metrics"].get(key) is not None]
        if not rows:
            continue
        entry = _summarise([r["metrics"][key] for r in rows], rng)
        entry["random_area"] = float(np.mean([r["metrics"][area_key] for r in rows]))
        for kind in ("uniform", "smooth"):
            vals = [r["baseline"][kind].get(base_key) for r in rows]
            entry[f"random_{kind}"] = float(np.mean(vals)) if None not in vals else None
        out[key] = entry
    return out


def _empty_maps(records: list[dict[str, Any]], labels: Sequence[str]) -> dict[str, Any]:
    """Empty-map counts per label and on either side of the operating point."""
    def count(rows: list[dict[str, Any]]) -> dict[str, int]:
        return {"n": len(rows), "empty": sum(bool(r["empty_map"]) for r in rows)}

    return {"by_label": {lab: count([r for r in records if r["label"] == lab]) for lab in labels},
            "above_operating_point": count([r for r in records if r["above_operating_point"]]),
            "below_operating_point": count([r for r in records if not r["above_operating_point"]])}


def audit_saliency(
    model: Any,
    data: Any,
    *,
    card: Any = None,
    split: str | None = "test",
    classes: Sequence[str] | None = None,
    explain_fn: Callable[..., Any] | None = None,
    method: str = "gradcam",
    objective: str = "auto",
    max_images: int | None = None,
    seed: int = 0,
    n_random: int = 20,
    device: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Saliency-location audit of a model over a labelled set.

    The map explained is that of the card's positive label. Box metrics come in two
    forms: ``in_box`` / ``pointing`` over the maps that have mass (an empty map has no
    maximum), and ``in_box_all`` / ``pointing_all`` over every film with boxes, an empty
    map counting as 0 (a miss), which is what a reader of the app experiences.

    Args:
        model: a :class:`medcnn.inference.Predictor`, a model card (path or
            :class:`~medcnn.models.card.ModelCard`), or an ``nn.Module`` together with ``card``.
        data: labels.csv path(s) or a DataFrame (see :func:`medcnn.audit.load_table`).
        card: the model card when ``model`` is a bare module.
        split: split to audit (``None``: all).
        classes: labels to keep (default: the card's labels present in the data).
        explain_fn: ``fn(model, tensor (1, 1, H, W), *, target, method, layer)`` returning
            an (H, W) map or an object with ``.heatmap``; default :func:`medcnn.explain.explain`
            (its [0, 1] ``heatmap`` is used) with ``objective``.
        method: saliency method name passed to ``explain_fn``.
        objective: what the default ``explain_fn`` explains (:mod:`medcnn.explain.objective`:
            ``"auto"``, ``"difference"`` or ``"logit"``); ignored with a custom ``explain_fn``.
        max_images: random stratified subsample.
        seed: seed of the subsample, random maps and bootstrap.
        n_random: random maps per image and kind for the baseline.
        device: device when ``model`` is a card.
        progress: progress bar.

    Returns:
        JSON-ready dict: ``model``, ``method``, ``objective`` (what was explained, e.g.
        ``"logit difference (PNEUMONIA - NORMAL)"``), ``split``, ``n``, ``metrics`` and
        ``by_label`` (per metric: ``mean``, 95 % bootstrap ``ci`` over images, ``n``,
        ``random_area`` / ``random_uniform`` / ``random_smooth`` baselines),
        ``empty_maps`` (counts per label and above / below the card's operating point),
        ``thorax_method`` counts, ``per_image`` (row index, path, label, calibrated
        positive ``probability``, ``above_operating_point``, ``empty_map``, metrics),
        ``flags`` (plain-language findings) and ``seconds``.

    Raises:
        ValueError: no rows left, or labels of the data unknown to the model.
    """
    import functools
    import time

    t0 = time.perf_counter()
    net, card, pipe = _resolve_model(model, card, device)
    wanted = [str(c) for c in (classes or card.labels)]
    df = _audit_rows(data, split, wanted, max_images, seed)
    chest = str(card.modality).upper() == "CXR"
    fn = explain_fn or functools.partial(_default_explain, objective=objective, head=card.head_rule)
    rng_seed = np.random.SeedSequence(seed)
    records, methods, explained = [], {"segmented": 0, "prior": 0}, None
    rows = df.to_dict("records")
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="saliency audit", unit="img", leave=False)
    for i, row in enumerate(rows):
        img = _image_regions(net, card, pipe, row, fn, method, chest)
        if img["how"] is not None:
            methods[img["how"]] += 1
        explained = explained or img["objective"]
        metrics = location_metrics(img["heat"], **img["masks"])
        if metrics.get("box_area") is not None:  # an empty map is a miss
            metrics["in_box_all"] = metrics["in_box"] or 0.0
            metrics["pointing_all"] = metrics["pointing"] or 0.0
        child = int(rng_seed.spawn(1)[0].generate_state(1)[0])
        records.append({"index": i, "path": str(row["path"]), "label": row["label"], "metrics": metrics,
                        "probability": img["probability"], "above_operating_point": img["above"],
                        "empty_map": img["empty"],
                        "baseline": random_baseline(img["heat"].shape, img["masks"], n=n_random, seed=child)})
    by_label = {lab: _aggregate([r for r in records if r["label"] == lab], seed) for lab in wanted
                if any(r["label"] == lab for r in records)}
    report = {
        "model": card.name, "method": method, "objective": explained or "custom explain_fn",
        "split": split, "n": len(records), "labels": wanted, "positive": card.positive_label,
        "threshold": float(card.threshold), "metrics": _aggregate(records, seed), "by_label": by_label,
        "empty_maps": _empty_maps(records, wanted), "thorax_method": methods if chest else None,
        "per_image": [{k: r[k] for k in ("index", "path", "label", "probability", "above_operating_point",
                                         "empty_map")} | r["metrics"] for r in records],
    }
    report["flags"] = _flags(report["metrics"])
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report


def _audit_rows(data: Any, split: str | None, wanted: list[str], max_images: int | None,
                seed: int) -> pd.DataFrame:
    """Rows of the wanted labels and split; a label-stratified random subsample of ``max_images``."""
    df = load_table(data, split=split)
    df = df[df["label"].isin(wanted)].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no rows with labels {wanted} (split {split!r}) in the data")
    if max_images is not None and len(df) > max_images:
        shuffled = df.sample(frac=1.0, random_state=seed)
        quota = {lab: max(1, round(max_images * n / len(df))) for lab, n in df["label"].value_counts().items()}
        keep = shuffled.groupby("label").cumcount() < shuffled["label"].map(quota)
        df = shuffled[keep].sort_index().reset_index(drop=True)
    return df


def _positive_decision(net: Any, card: Any, x: Any) -> tuple[float, bool]:
    """The calibrated probability of the card's positive label (what the app displays) and whether
    it is at or above its operating point: the card's head decides (a finding's own point for a
    multi-label card)."""
    import torch

    with torch.inference_mode():
        logits = net(x).float().cpu().numpy()
    d = card.head_rule.decide(card.head_rule.probabilities(logits)[0])
    return d.positive_prob, d.above_threshold


def _image_regions(net: Any, card: Any, pipe: Any, row: dict[str, Any], explain_fn: Callable[..., Any],
                   method: str, chest: bool) -> dict[str, Any]:
    """Saliency map of one row on its display image, its region masks and the model's call.

    Returns:
        ``{"heat": (H, W), "masks": {"margin", "thorax" (chest X-rays), "boxes" (rows with
        boxes)}, "how": "segmented" | "prior" | None, "probability", "above", "empty",
        "objective"}``.
    """
    with collected():  # decode notes (colour -> grey, ...) are not audit results
        img = read_image(row["path"])
    res = pipe(img, keep_steps=True)
    dev = next(net.parameters()).device if hasattr(net, "parameters") else None
    x = res.tensor.to(dev) if dev is not None else res.tensor
    exp = explain_fn(net, x, target=card.positive_index, method=method, layer=card.target_layer)
    heat = _as_map(exp, res.display.shape)
    p, above = _positive_decision(net, card, x)
    masks: dict[str, np.ndarray | None] = {"margin": margin_mask(res.display.shape)}
    how = None
    if chest:
        masks["thorax"], how = thorax_mask(res.display, return_method=True)
    boxes = parse_boxes(row.get("rsna_boxes_1024"))
    if boxes:
        masks["boxes"] = boxes_mask(res.display.shape, boxes_to_display(boxes, img.pixels.shape, res.steps))
    return {"heat": heat, "masks": masks, "how": how, "probability": p, "above": above,
            "empty": bool(float(heat.max()) <= 0.0), "objective": getattr(exp, "params", {}).get("objective")}


_NAMES = {"outside_thorax": "mass outside the thorax", "margin_share": "mass on the image margins",
          "in_box": "mass inside the radiologists' boxes", "pointing": "pointing-game hit rate",
          "in_box_all": "box mass, empty map = 0", "pointing_all": "pointing hits, empty map = miss"}


def _flags(metrics: dict[str, Any]) -> list[str]:
    """Plain-language findings: a figure whose CI excludes the random-map (area) value."""
    flags = []
    for key, m in metrics.items():
        if m["ci"] is None:
            continue
        lo, hi, base = m["ci"][0], m["ci"][1], m["random_area"]
        worse = lo > base if key in ("outside_thorax", "margin_share") else hi < base
        better = hi < base if key in ("outside_thorax", "margin_share") else lo > base
        verdict = "worse than" if worse else ("better than" if better else "no different from")
        flags.append(f"{_NAMES[key]}: {m['mean']:.0%} (95% CI {lo:.0%}-{hi:.0%}), {verdict} a random map ({base:.0%})")
    return flags


def format_saliency_summary(report: dict[str, Any]) -> str:
    """Short human-readable summary of :func:`audit_saliency`'s report."""
    lines = [f"saliency-location audit: model {report['model']}, {report['method']} of the "
             f"{report.get('objective', 'logit')}, {report['n']} images of split {report['split']}"]
    for key, m in report["metrics"].items():
        if m["mean"] is None:
            continue
        smooth = f", smooth random map {m['random_smooth']:.1%}" if m.get("random_smooth") is not None else ""
        lines.append(f"  {_NAMES[key]:<38} {m['mean']:6.1%} [{m['ci'][0]:.1%}, {m['ci'][1]:.1%}]  "
                     f"(random: area share {m['random_area']:.1%}{smooth}; n={m['n']})")
    if report.get("empty_maps"):
        em = report["empty_maps"]
        parts = [f"{lab} {c['empty']}/{c['n']}" for lab, c in em["by_label"].items()]
        a, b = em["above_operating_point"], em["below_operating_point"]
        lines.append(f"  empty maps: {', '.join(parts)}; above the operating point {a['empty']}/{a['n']}, "
                     f"below {b['empty']}/{b['n']}")
    if report.get("thorax_method"):
        tm = report["thorax_method"]
        lines.append(f"  thorax estimate: {tm['segmented']} segmented, {tm['prior']} anatomical prior")
    lines += [f"  {f}" for f in report["flags"]]
    return "\n".join(lines)
