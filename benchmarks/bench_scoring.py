"""Scoring throughput: the one scoring engine (``medcnn.scoring.Scorer``, batched per model) against
the per-file loop ``predict`` used before it (read, predict one image, next), on the same files in
the same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_scoring.py [--files N] [--batch-size 16] [--repeat 3]

Prints images/s of each and the ratio engine / per-file (> 1: the engine is faster), the median of
``--repeat`` alternating runs, and checks that both give the same decisions.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def per_file(files: list[str], weights: Path) -> tuple[float, list[str]]:
    from medcnn.inference import Predictor, resolve_card
    from medcnn.io import read_image

    predictors: dict[Path, Predictor] = {}
    decisions = []
    t0 = time.perf_counter()
    for f in files:
        img = read_image(f)
        card = resolve_card(img.meta, None, weights)
        predictors.setdefault(card, Predictor(card, device="cpu"))
        decisions.append(predictors[card].predict(img, keep_steps=False).decision)
    return time.perf_counter() - t0, decisions


def engine(files: list[str], weights: Path, batch_size: int) -> tuple[float, list[str]]:
    from medcnn.scoring import Scorer

    t0 = time.perf_counter()
    rows = Scorer(weights_dir=weights, device="cpu", batch_size=batch_size).rows(files)
    return time.perf_counter() - t0, [r["decision"] for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "rsna_cxr_pneumonia" / "test")
    ap.add_argument("--weights", type=Path, default=REPO / "weights")
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    files = sorted(str(p) for p in args.data.rglob("*.jpg"))[: args.files]
    if not files:
        print(f"no JPEG films under {args.data}", file=sys.stderr)
        return 2
    per_file(files[:2], args.weights)  # warm-up: weights and gate loaded, allocator warm
    base, new = [], []
    for _ in range(args.repeat):
        tb, db = per_file(files, args.weights)
        te, de = engine(files, args.weights, args.batch_size)
        if db != de:
            print("decisions differ between the two paths", file=sys.stderr)
            return 1
        base.append(len(files) / tb)
        new.append(len(files) / te)
    b, e = statistics.median(base), statistics.median(new)
    print(f"{len(files)} films, torch threads 1, batch {args.batch_size}, median of {args.repeat}")
    print(f"per-file loop (before): {b:.1f} img/s")
    print(f"scoring engine (after): {e:.1f} img/s")
    print(f"ratio engine / per-file: {e / b:.2f}x (same decisions on every film)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
