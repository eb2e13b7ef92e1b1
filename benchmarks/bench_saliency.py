"""Benchmark: where the saliency map points when it explains the single logit vs the logit
difference that sets the displayed probability, on radiologists' boxes.

    OMP_NUM_THREADS=1 python benchmarks/bench_saliency.py --model weights/cxr_pneumonia.json \\
        --labels ../shared/data/rsna_cxr_pneumonia/labels.csv --split val [--method integrated_gradients]

For each method (``--method``, repeatable; default Grad-CAM) the saliency-location audit
(:func:`medcnn.audit.saliency.audit_saliency`) runs twice on the same films: with
``objective="logit"`` (before: the positive label's logit alone) and with
``objective="difference"`` (after: positive logit minus the other logit, the default).
The films are every row of the split with one of the card's labels; boxes come from
``rsna_boxes_1024`` only. Printed per method: the pointing game and the mass inside the
boxes (empty map counted as a miss / 0, and over non-empty maps only), mass outside the
thorax, the number of empty maps on positive films, on films above and below the card's
operating point, the paired change of hits, and the display figures used to choose the
app's default (how many films the model does not call still get a non-empty map).
Every figure is printed before | after | after - before (and after / before for times).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(model: str, labels: str, split: str, method: str, objective: str, n_random: int) -> dict[str, Any]:
    """One audit; soft warnings (IG short of its tolerance) are counted, not printed per film."""
    import warnings

    from medcnn.audit.saliency import audit_saliency

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = audit_saliency(model, labels, split=split, method=method, objective=objective,
                             n_random=n_random, seed=0, device="cpu")
    rep["warnings"] = len([w for w in caught if issubclass(w.category, UserWarning)])
    return rep


def _metric(rep: dict[str, Any], key: str, subset: str | None = None) -> tuple[float | None, str]:
    m = (rep["by_label"].get(subset, {}) if subset else rep["metrics"]).get(key)
    if not m or m["mean"] is None:
        return None, "-"
    return m["mean"], f"{m['mean']:.3f} [{m['ci'][0]:.2f}, {m['ci'][1]:.2f}] n={m['n']}"


def _count(c: dict[str, int]) -> tuple[float, str]:
    return float(c["empty"]), f"{c['empty']}/{c['n']}"


def _rows(rep: dict[str, Any]) -> dict[str, tuple[float | None, str]]:
    """Figure name -> (value for the difference column, text)."""
    pos = rep["positive"]
    em = rep["empty_maps"]
    per = rep["per_image"]
    called_box = [r for r in per if r.get("pointing_all") is not None and r["above_operating_point"]]
    below = [r for r in per if not r["above_operating_point"]]
    below_lit = sum(not r["empty_map"] for r in below)
    called = [r["probability"] for r in per if r["above_operating_point"]]
    gated = [r["pointing_all"] if r["above_operating_point"] else 0.0 for r in per if r.get("pointing_all") is not None]
    hits_called = float(np.mean([r["pointing_all"] for r in called_box])) if called_box else None
    return {
        "pointing game, empty map = miss": _metric(rep, "pointing_all"),
        "pointing game, non-empty maps": _metric(rep, "pointing"),
        "mass in boxes, empty map = 0": _metric(rep, "in_box_all"),
        "mass in boxes, non-empty maps": _metric(rep, "in_box"),
        "mass outside the thorax": _metric(rep, "outside_thorax"),
        f"empty maps on {pos} films": _count(em["by_label"][pos]),
        "empty maps above the operating point": _count(em["above_operating_point"]),
        "empty maps below the operating point": _count(em["below_operating_point"]),
        "pointing on box films the model calls": (hits_called, "-" if hits_called is None else
                                                  f"{hits_called:.3f} n={len(called_box)}"),
        "pointing gated at the operating point": (float(np.mean(gated)) if gated else None,
                                                  f"{np.mean(gated):.3f} n={len(gated)}" if gated else "-"),
        "films not called with a non-empty map": (float(below_lit), f"{below_lit}/{len(below)}"),
        "median P of called films": (float(np.median(called)) if called else None,
                                     f"{np.median(called):.3f} (min {min(called):.3f})" if called else "-"),
        "seconds": (rep["seconds"], f"{rep['seconds']:.1f}"),
    }


def _paired(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Paired change of pointing hits on the box films (same films, same order)."""
    pairs = [(b["pointing_all"], a["pointing_all"]) for b, a in zip(before["per_image"], after["per_image"])
             if b.get("pointing_all") is not None]
    gained = sum(a >= 0.5 > b for b, a in pairs)
    lost = sum(b >= 0.5 > a for b, a in pairs)
    return f"paired on {len(pairs)} box films: {gained} misses became hits, {lost} hits became misses"


def _table(method: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    rb, ra = _rows(before), _rows(after)
    lines = [f"\n{method}: before = {before['objective']}, after = {after['objective']}; split "
             f"{after['split']}, {after['n']} films, operating point P({after['positive']}) >= "
             f"{after['threshold']:.3f}",
             f"{'figure':<42}{'before (single logit)':>30}{'after (logit difference)':>30}{'after - before':>16}"]
    for name in rb:
        (vb, tb), (va, ta) = rb[name], ra[name]
        if name == "seconds":
            change = f"{va / vb:.2f}x" if vb else "-"
        else:
            change = "-" if va is None or vb is None else f"{va - vb:+.3f}"
        lines.append(f"{name:<42}{tb:>30}{ta:>30}{change:>16}")
    lines.append(_paired(before, after))
    if before["warnings"] or after["warnings"]:
        lines.append(f"soft warnings (e.g. IG short of its tolerance): before {before['warnings']}, "
                     f"after {after['warnings']} films")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="weights/<name>.json")
    p.add_argument("--labels", required=True, help="labels.csv with rsna_boxes_1024")
    p.add_argument("--split", default="val")
    p.add_argument("--method", action="append", default=None, help="saliency method (repeatable; default gradcam)")
    p.add_argument("--n-random", type=int, default=20, help="random maps per film for the baselines")
    p.add_argument("--json-out", default=None, help="write both reports (per film) here")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    print(f"model {args.model}, labels {args.labels}, split {args.split}, torch threads 1")
    for method in args.method or ["gradcam"]:
        before = _run(args.model, args.labels, args.split, method, "logit", args.n_random)
        after = _run(args.model, args.labels, args.split, method, "difference", args.n_random)
        print(_table(method, before, after), flush=True)
        out[method] = {"logit": before, "difference": after}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
