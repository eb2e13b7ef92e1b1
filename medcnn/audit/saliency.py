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
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import pandas as pd

from medcnn.audit.regions import (  # re-exported
    boxes_mask,
    boxes_to_display,
    display_geometry,
    margin_mask,
    parse_boxes,
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


# --------------------------------------------------------------------------- metrics
def _check_mask(m: np.ndarray | None, shape: tuple[int, int], name: str) -> np.ndarray | None:
    if m is None:
        return None
    m = np.asarray(m, bool)
    if m.shape != shape:
        raise ValueError(f"{name} mask has shape {m.shape}, the heat map {shape}")
    return m


def location_metrics(heatmap: np.ndarray, *, thorax: np.ndarray | None = None,
                     margin: np.ndarray | None = None, boxes: np.ndarray | None = None) -> dict[str, Any]:
    """Where the saliency mass lies, for one map.

    Negative values are clipped to 0; mass shares are of the remaining total.

    Args:
        heatmap: float (H, W), larger = more important.
        thorax, margin, boxes: optional bool (H, W) masks (``boxes`` may be empty).

    Returns:
        ``outside_thorax`` / ``thorax_area`` (area share of the complement),
        ``margin_share`` / ``margin_area``, ``in_box`` / ``box_area`` and ``pointing``
        (share of the map's maximal pixels inside a box: 1 or 0 when the maximum is
        unique). Keys are present only for the masks given; ``None`` for a map without
        mass or an empty box mask.

    Raises:
        ValueError: not a 2-D map, non-finite values or a mask of another shape.
    """
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {h.shape}")
    if not np.isfinite(h).all():
        raise ValueError("heatmap has non-finite values")
    h = np.clip(h, 0, None)
    total = h.sum()
    p = h / total if total > 0 else None
    out: dict[str, Any] = {}

    def share(m: np.ndarray) -> float | None:
        return None if p is None else float(p[m].sum())

    if (t := _check_mask(thorax, h.shape, "thorax")) is not None:
        out["outside_thorax"] = share(~t)
        out["outside_thorax_area"] = float((~t).mean())
    if (m := _check_mask(margin, h.shape, "margin")) is not None:
        out["margin_share"] = share(m)
        out["margin_area"] = float(m.mean())
    if (b := _check_mask(boxes, h.shape, "boxes")) is not None:
        has = bool(b.any())
        out["in_box"] = share(b) if has else None
        out["box_area"] = float(b.mean()) if has else None
        out["pointing"] = float(b[h == h.max()].mean()) if has and p is not None else None
    return out


def _smooth_random(shape: tuple[int, int], rng: np.random.Generator, grid: int = 8) -> np.ndarray:
    """Grad-CAM-like random map: uniform noise on a coarse grid, bilinearly upsampled."""
    g = rng.random((grid, grid)).astype(np.float32)
    return cv2.resize(g, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def random_baseline(shape: tuple[int, int], masks: dict[str, np.ndarray | None], n: int = 50,
                    seed: int = 0) -> dict[str, dict[str, float]]:
    """Expected location metrics of maps that ignore the image.

    Args:
        shape: (H, W) of the maps.
        masks: ``{"thorax": m, "margin": m, "boxes": m}`` (any subset; None skipped).
        n: random maps of each kind.
        seed: RNG seed.

    Returns:
        ``{"area": {...}, "uniform": {...}, "smooth": {...}}``, each a dict of the same
        keys as :func:`location_metrics`: ``area`` is the analytic expectation (mass
        share = area share; pointing = area share), ``uniform`` the mean over i.i.d.
        uniform noise maps, ``smooth`` the mean over 8 x 8 noise upsampled like Grad-CAM.
    """
    kw = {k: v for k, v in masks.items() if v is not None and k in ("thorax", "margin", "boxes")}
    flat = np.ones(tuple(shape), np.float32)
    area = location_metrics(flat, **kw)
    if "pointing" in area and area.get("box_area") is not None:
        area["pointing"] = area["box_area"]
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {"area": area}
    for kind, make in (("uniform", lambda: rng.random(tuple(shape))),
                       ("smooth", lambda: _smooth_random(tuple(shape), rng))):
        runs = [location_metrics(make(), **kw) for _ in range(int(n))]
        out[kind] = {k: (None if any(r[k] is None for r in runs) else float(np.mean([r[k] for r in runs])))
                     for k in runs[0]}
    return out


# ----------------------------------------------------------------------------- audit
def _default_explain(model: Any, tensor: Any, *, target: int, method: str, layer: str) -> Any:
    from medcnn.explain import explain

    return explain(model, tensor, target=target, method=method, layer=layer)


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


_KEYS = {"outside_thorax": "outside_thorax_area", "margin_share": "margin_area",
         "in_box": "box_area", "pointing": "box_area"}


def _aggregate(records: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Per metric: mean, CI and the three random-map baselines over the images that have it."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, area_key in _KEYS.items():
        rows = [r for r in records if r["metrics"].get(key) is not None]
        if not rows:
            continue
        entry = _summarise([r["metrics"][key] for r in rows], rng)
        entry["random_area"] = float(np.mean([r["metrics"][area_key] for r in rows]))
        for kind in ("uniform", "smooth"):
            vals = [r["baseline"][kind].get(key) for r in rows]
            entry[f"random_{kind}"] = float(np.mean(vals)) if None not in vals else None
        out[key] = entry
    return out


def audit_saliency(
    model: Any,
    data: Any,
    *,
    card: Any = None,
    split: str | None = "test",
    classes: Sequence[str] | None = None,
    explain_fn: Callable[..., Any] | None = None,
    method: str = "gradcam",
    max_images: int | None = None,
    seed: int = 0,
    n_random: int = 20,
    device: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Saliency-location audit of a model over a labelled set.

    Args:
        model: a :class:`medcnn.inference.Predictor`, a model card (path or
            :class:`~medcnn.models.card.ModelCard`), or an ``nn.Module`` together with ``card``.
        data: labels.csv path(s) or a DataFrame (see :func:`medcnn.audit.load_table`).
        card: the model card when ``model`` is a bare module.
        split: split to audit (``None``: all).
        classes: labels to keep (default: the card's labels present in the data).
        explain_fn: ``fn(model, tensor (1, 1, H, W), *, target, method, layer)`` returning
            an (H, W) map or an object with ``.heatmap``; default :func:`medcnn.explain.explain`
            (its [0, 1] ``heatmap`` is used).
        method: saliency method name passed to ``explain_fn``.
        max_images: random stratified subsample.
        seed: seed of the subsample, random maps and bootstrap.
        n_random: random maps per image and kind for the baseline.
        device: device when ``model`` is a card.
        progress: progress bar.

    Returns:
        JSON-ready dict: ``model``, ``method``, ``split``, ``n``, ``metrics`` and
        ``by_label`` (per metric: ``mean``, 95 % bootstrap ``ci`` over images, ``n``,
        ``random_area`` / ``random_uniform`` / ``random_smooth`` baselines),
        ``thorax_method`` counts, ``per_image`` (row index, label, metrics), ``flags``
        (plain-language findings) and ``seconds``.

    Raises:
        ValueError: no rows left, or labels of the data unknown to the model.
    """
    import time

    t0 = time.perf_counter()
    net, card, pipe = _resolve_model(model, card, device)
    wanted = [str(c) for c in (classes or card.labels)]
    df = _audit_rows(data, split, wanted, max_images, seed)
    chest = str(card.modality).upper() == "CXR"
    rng_seed = np.random.SeedSequence(seed)
    records, methods = [], {"segmented": 0, "prior": 0}
    rows = df.to_dict("records")
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc="saliency audit", unit="img", leave=False)
    for i, row in enumerate(rows):
        heat, masks, how = _image_regions(net, card, pipe, row, explain_fn or _default_explain, method, chest)
        if how is not None:
            methods[how] += 1
        child = int(rng_seed.spawn(1)[0].generate_state(1)[0])
        records.append({"index": i, "label": row["label"], "metrics": location_metrics(heat, **masks),
                        "baseline": random_baseline(heat.shape, masks, n=n_random, seed=child)})
    by_label = {lab: _aggregate([r for r in records if r["label"] == lab], seed) for lab in wanted
                if any(r["label"] == lab for r in records)}
    report = {
        "model": card.name, "method": method, "split": split, "n": len(records), "labels": wanted,
        "positive": card.positive_label, "metrics": _aggregate(records, seed), "by_label": by_label,
        "thorax_method": methods if chest else None,
        "per_image": [{"index": r["index"], "label": r["label"], **r["metrics"]} for r in records],
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


def _image_regions(net: Any, card: Any, pipe: Any, row: dict[str, Any], explain_fn: Callable[..., Any],
                   method: str, chest: bool) -> tuple[np.ndarray, dict[str, np.ndarray | None], str | None]:
    """Saliency map of one row on its display image, the region masks, and how the thorax was found.

    Returns:
        ``(heat (H, W), {"margin", "thorax" (chest X-rays), "boxes" (rows with boxes)},
        "segmented" | "prior" | None)``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img = read_image(row["path"])
    res = pipe(img, keep_steps=True)
    dev = next(net.parameters()).device if hasattr(net, "parameters") else None
    x = res.tensor.to(dev) if dev is not None else res.tensor
    heat = _as_map(explain_fn(net, x, target=card.positive_index, method=method, layer=card.target_layer),
                   res.display.shape)
    masks: dict[str, np.ndarray | None] = {"margin": margin_mask(res.display.shape)}
    how = None
    if chest:
        masks["thorax"], how = thorax_mask(res.display, return_method=True)
    boxes = parse_boxes(row.get("rsna_boxes_1024"))
    if boxes:
        masks["boxes"] = boxes_mask(res.display.shape, boxes_to_display(boxes, img.pixels.shape, res.steps))
    return heat, masks, how


_NAMES = {"outside_thorax": "mass outside the thorax", "margin_share": "mass on the image margins",
          "in_box": "mass inside the radiologists' boxes", "pointing": "pointing-game hit rate"}


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
    lines = [f"saliency-location audit: model {report['model']}, {report['method']}, "
             f"{report['n']} images of split {report['split']}"]
    for key, m in report["metrics"].items():
        if m["mean"] is None:
            continue
        smooth = f", smooth random map {m['random_smooth']:.1%}" if m.get("random_smooth") is not None else ""
        lines.append(f"  {_NAMES[key]:<38} {m['mean']:6.1%} [{m['ci'][0]:.1%}, {m['ci'][1]:.1%}]  "
                     f"(random: area share {m['random_area']:.1%}{smooth}; n={m['n']})")
    if report.get("thorax_method"):
        tm = report["thorax_method"]
        lines.append(f"  thorax estimate: {tm['segmented']} segmented, {tm['prior']} anatomical prior")
    lines += [f"  {f}" for f in report["flags"]]
    return "\n".join(lines)
