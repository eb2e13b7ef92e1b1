"""``python -m medcnn predict FILE...``: label probabilities per image.

Without ``--model`` the model is chosen from each image's modality: CT DICOM -> the CT
model, CR/DX DICOM and PNG/JPEG -> the chest X-ray model; other modalities (MR, US, ...)
get an error. Every result carries the out-of-distribution verdict (``ood``); an image outside
what the model reads is printed as NOT ANALYSED (its probabilities stay in ``--json`` for the
record, with ``"decision": "not analysed"``). A file that cannot be read or predicted gets an
error entry and the others still run; the exit status is 1 if any file failed. Nothing identifying is printed.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="DICOM, PNG or JPEG images")
    parser.add_argument("--model", default=None, metavar="NAME|PATH",
                        help="card name in --weights-dir (e.g. ct_covid) or path of <name>.json; "
                             "default: chosen from each image's modality (PNG/JPEG CT slices "
                             "need --model ct_covid)")
    parser.add_argument("--weights-dir", default=None, metavar="DIR",
                        help="folder with <name>.json + <name>.pt (default: $MEDCNN_WEIGHTS_DIR, else weights)")
    parser.add_argument("--json", action="store_true", help='print one JSON object {"results": [...]}')
    parser.add_argument("--device", default=None, help="cpu / cuda (default: MEDCNN_DEVICE, else auto)")


def resolve_card_path(model: str, weights_dir: str | Path) -> Path:
    """``--model`` value -> card path (:func:`medcnn.inference.resolve_card` decides).

    Raises:
        ValueError: no such card (the message lists the cards in ``weights_dir``).
    """
    from medcnn.inference import resolve_card

    return resolve_card(None, model, weights_dir)


def _predict_one(path: str, args: argparse.Namespace, predictors: dict[Path, Any],
                 fixed: Path | None) -> dict[str, Any]:
    from medcnn.inference import Predictor, resolve_card
    from medcnn.io import read_image

    entry: dict[str, Any] = {"file": path, "ok": False, "error": None, "model": None,
                             "probabilities": None, "label": None, "positive_prob": None,
                             "above_threshold": None, "threshold": None, "seconds": None,
                             "decision": None, "ood": None, "warnings": []}
    caught: list[Any] = []
    try:
        with warnings.catch_warnings(record=True) as caught:  # reported per file, not as tracebacks
            warnings.simplefilter("always")
            img = read_image(path)
            card_path = fixed or resolve_card(img.meta, None, args.weights_dir)
            if card_path not in predictors:
                predictors[card_path] = Predictor(card_path, device=args.device)
            pred = predictors[card_path].predict(img, keep_steps=False)
    except (ValueError, OSError) as e:  # UnsupportedImageError / CardError are ValueErrors
        entry["error"] = f"{type(e).__name__}: {e}"
        return entry
    finally:
        entry["warnings"] = list(dict.fromkeys(str(w.message) for w in caught))
    d = pred.to_dict()
    d.pop("logits")
    entry.update(d, ok=True)
    return entry


def _line(e: dict[str, Any]) -> str:
    notes = "".join(f"\n  warning: {w}" for w in e["warnings"])
    if not e["ok"]:
        return f"{e['file']}: ERROR {e['error']}{notes}"
    ood = e.get("ood") or {}
    reasons = "; ".join(ood.get("reasons") or [])
    if ood.get("level") == "outside":
        return (f"{e['file']}: NOT ANALYSED - outside what model {e['model']} reads: {reasons}{notes}")
    probs = ", ".join(f"{k} {v:.3f}" for k, v in e["probabilities"].items())
    side = ">=" if e["above_threshold"] else "<"
    caution = f"\n  caution: {reasons}" if ood.get("flagged") else ""
    return (f"{e['file']}: {e['label']} (p = {e['positive_prob']:.3f} {side} threshold "
            f"{e['threshold']:.3f}; {probs}) model {e['model']}, {e['seconds']:.3f} s{caution}{notes}")


def run(args: argparse.Namespace) -> int:
    fixed = resolve_card_path(args.model, args.weights_dir) if args.model else None
    predictors: dict[Path, Any] = {}
    if fixed is not None:  # a broken --model is one error (exit 2), not one per file
        from medcnn.inference import Predictor

        predictors[fixed] = Predictor(fixed, device=args.device)
    results = []
    for path in args.files:
        entry = _predict_one(path, args, predictors, fixed)
        results.append(entry)
        if not args.json:
            print(_line(entry), file=sys.stdout if entry["ok"] else sys.stderr)
    if args.json:
        print(json.dumps({"results": results}))
    return 0 if all(e["ok"] for e in results) else 1
