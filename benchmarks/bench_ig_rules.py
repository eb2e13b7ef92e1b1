"""Which Integrated Gradients quadrature reaches a given map error with the fewest gradients?

    python benchmarks/bench_ig_rules.py --model weights/cxr_pneumonia.json \
        --labels ../shared/data/rsna_cxr_pneumonia/labels.csv --split val --per-class 1

For each image (the first ``--per-class`` rows of each label of the split, in file order: use a
validation split, so that the rule is chosen without test images), the IG map of the card's
positive label (its explained objective, as the app computes it) is computed with a
``--reference-steps`` Gauss-Legendre rule and with each candidate rule; the map error is the
relative L2 distance to the reference, as in bench_explain.py. The cost of a rule is its number
of gradient evaluations (each costs the same forward + backward pass, so the time ratio of two
rules is their gradient ratio; bench_explain.py measures the time per gradient against Captum).

Candidates: plain Gauss-Legendre with n nodes on [0, 1] (Captum's default is n = 50) and
*warped* Gauss-Legendre, nodes ``a = t^p`` with weights ``p t^(p-1) w`` (the same integral after
the substitution a = t^p), which places nodes densely near the baseline (p > 1), or the mirror
substitution (p < 0 here: ``a = 1 - (1 - t)^|p|``), dense near the input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rule(n: int, p: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1] of n-point Gauss-Legendre after the substitution a = t^p
    (p > 0: nodes dense near the baseline) or a = 1 - (1 - t)^|p| (p < 0: dense near the input)."""
    from medcnn.explain.ig import gauss_legendre

    t, w = gauss_legendre(n)
    if p < 0:
        q = -p
        return 1.0 - (1.0 - t) ** q, w * q * (1.0 - t) ** (q - 1)
    return t ** p, w * p * t ** (p - 1)


def ig_map(path, nodes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    import torch

    g = path.gradients([float(a) for a in nodes])
    wt = torch.tensor(weights, dtype=g.dtype).view(-1, 1, 1, 1)
    return ((g * wt).sum(0, keepdim=True) * path.diff)[0].sum(0).numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--per-class", type=int, default=1)
    ap.add_argument("--reference-steps", type=int, default=1024)
    ap.add_argument("--sizes", default="16,24,32,40,50")
    ap.add_argument("--powers", default="1,1.5,2,3")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    torch.set_num_threads(1)
    from medcnn.explain.core import black_value
    from medcnn.explain.ig import _StraightPath
    from medcnn.explain.objective import ObjectiveHead, resolve_objective
    from medcnn.inference import Predictor
    from medcnn.io import read_image

    pred = Predictor(args.model, device="cpu", check=False)
    card, model = pred.card, pred.model
    for p in model.parameters():
        p.requires_grad_(False)
    objective = resolve_objective("auto", card.head_rule, len(card.labels))
    head = ObjectiveHead(model, objective)
    t = card.positive_index
    df = pd.read_csv(args.labels)
    df = df[df["split"] == args.split]
    rows = pd.concat([g.head(args.per_class) for _, g in df.groupby("label", sort=False)])
    sizes = [int(s) for s in args.sizes.split(",")]
    powers = [float(s) for s in args.powers.split(",")]
    results = []
    for _, row in rows.iterrows():
        x = pred.pipeline(read_image(Path(args.labels).parent / row["path"])).tensor
        b = torch.full_like(x, black_value(pred.pipeline))
        path = _StraightPath(lambda z: head(z)[:, t], x, b, batch=16)
        ref = ig_map(path, *rule(args.reference_steps))
        rec = {"image": Path(row["path"]).name[:12], "label": row["label"], "errors": {}}
        for p in powers:
            for n in sizes:
                m = ig_map(path, *rule(n, p))
                rec["errors"][f"p={p:g} n={n}"] = float(np.linalg.norm(m - ref) / np.linalg.norm(ref))
        results.append(rec)
        print(json.dumps(rec), flush=True)
    keys = list(results[0]["errors"])
    med = {k: float(np.median([r["errors"][k] for r in results])) for k in keys}
    worst = {k: float(np.max([r["errors"][k] for r in results])) for k in keys}
    print(f"\n{card.name} ({objective}), {len(results)} {args.split} images, median / worst map error:")
    for p in powers:
        print(f"  p={p:<4g}" + "".join(f"  n={n}: {med[f'p={p:g} n={n}']:.3f}/{worst[f'p={p:g} n={n}']:.3f}"
                                      for n in sizes))
    if args.json_out:
        args.json_out.write_text(json.dumps({"model": card.name, "objective": objective, "images": results,
                                             "median": med, "worst": worst}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
