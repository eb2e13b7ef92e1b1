"""``python -m medcnn audit``: shortcut audit of a labelled dataset, or of a model's saliency.

Dataset audit (default)::

    python -m medcnn audit --data LABELS.csv [--classes A,B] [--positive P] [--json]

trains cross-validated simple models on non-anatomical features only and warns when
they predict the label (the data is confounded). Saliency-location audit::

    python -m medcnn audit --saliency --model weights/X.json --data LABELS.csv [--split test]

measures where the model's Grad-CAM mass lies (outside the thorax, on the margins,
inside radiologists' boxes) against a random-map baseline.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m medcnn audit``."""
    parser.add_argument("--data", nargs="+", required=True, metavar="CSV",
                        help="labels.csv file(s) or class-folder root(s)")
    parser.add_argument("--classes", default=None, help="comma-separated labels to keep (e.g. NORMAL,PNEUMONIA)")
    parser.add_argument("--positive", default=None, help="positive label (default: the non-normal one)")
    parser.add_argument("--split", default=None,
                        help="split to use (dataset audit default: all; saliency default: test)")
    parser.add_argument("--meta", default=None, metavar="CSV",
                        help="extra per-image metadata CSV joined on path (e.g. view_positions.csv)")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="random subsample of N images")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed (folds, subsample, bootstrap)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--saliency", action="store_true", help="saliency-location audit of --model")
    parser.add_argument("--model", default=None, metavar="CARD", help="model card (weights/<name>.json)")
    parser.add_argument("--method", default="gradcam", help="saliency method (default gradcam)")
    parser.add_argument("--device", default=None, help="device for the saliency audit (default: auto)")


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def run(args: argparse.Namespace) -> int:
    """Run the dataset audit (or, with ``--saliency``, the saliency-location audit); print the report."""
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if args.max_images is not None and args.max_images < 2:
        print("error: --max-images must be >= 2", file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.saliency:
            if not args.model:
                print("error: --saliency needs --model weights/<name>.json", file=sys.stderr)
                return 2
            from medcnn.audit.saliency import audit_saliency, format_saliency_summary

            report = audit_saliency(args.model, args.data, split=args.split or "test", classes=classes,
                                    method=args.method, max_images=args.max_images, seed=args.seed,
                                    device=args.device, progress=not args.json)
            text = format_saliency_summary
        else:
            from medcnn.audit import audit_dataset, format_summary

            report = audit_dataset(args.data, positive=args.positive, classes=classes, folds=args.folds,
                                   seed=args.seed, max_images=args.max_images, split=args.split,
                                   meta=args.meta, progress=not args.json)
            text = format_summary
    notes = sorted({str(w.message) for w in caught})
    if args.json:
        print(json.dumps(_clean({**report, "notes": notes}), indent=2))
    else:
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        print(text(report))
    return 0
