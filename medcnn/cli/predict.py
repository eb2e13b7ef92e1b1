"""``python -m medcnn predict FILE...``: label probabilities per image.

Without ``--model`` the model is chosen as in the app (:mod:`medcnn.routing`): CT DICOM -> the CT
model, CR/DX DICOM and PNG/JPEG -> the chest X-ray model, and a PNG/JPEG that model's gate finds
outside its scope -> the CT model (when its gate accepts it); other modalities (MR, US, ...) get an
error. A named ``--model`` is never rerouted; an entry's ``routed`` says how its model was chosen
(shown after an automatically chosen model's name). Every result carries the out-of-distribution
verdict (``ood``); an image outside what the model reads is printed as NOT ANALYSED (its
probabilities stay in ``--json`` for the record, with ``"decision": "not analysed"``). A file that
cannot be read or predicted gets an error entry and the others still run; the exit status is 1 if
any file failed. Nothing identifying is printed.
Files are scored by :class:`medcnn.scoring.Scorer` (the one engine of every scoring path),
``--batch-size`` images of one model per forward pass; an entry is a row of
:data:`medcnn.scoring.ROW_KEYS`.

A FILE may be a folder: it is searched recursively and its images are recognised by content.
With ``--engine`` each SOURCE may also be a glob or a manifest CSV with a ``path`` column
(:mod:`medcnn.distributed.sources`).
``--engine local`` scores them in this process; ``--engine ray`` on a Ray cluster (a local one,
or the one at ``--address`` / ``$RAY_ADDRESS``; needs ``pip install -r requirements-scale.txt``).
With ``--out`` the results go to a Parquet file, one row per image (the columns of
:data:`medcnn.distributed.scoring.ROW_COLUMNS`), and a one-line summary is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="DICOM, PNG or JPEG images or folders of them (with --engine also globs and manifest CSVs)")
    parser.add_argument("--model", default=None, metavar="NAME|PATH",
                        help="card name in --weights-dir (e.g. ct_covid) or path of <name>.json; "
                             "default: chosen from each image's modality, a PNG/JPEG by the models' "
                             "out-of-distribution gates (chest X-ray model, else CT model)")
    parser.add_argument("--weights-dir", default=None, metavar="DIR",
                        help="folder with <name>.json + <name>.pt (default: $MEDCNN_WEIGHTS_DIR, else weights)")
    parser.add_argument("--json", action="store_true", help='print one JSON object {"results": [...]}')
    parser.add_argument("--device", default=None, help="cpu / cuda (default: MEDCNN_DEVICE, else auto)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N",
                        help="images per forward pass (default 16)")
    s = parser.add_argument_group("batch scoring")
    s.add_argument("--engine", choices=("local", "ray"), default=None,
                   help="score folders/globs/manifests in this process (local) or on a Ray cluster (ray)")
    s.add_argument("--out", type=Path, default=None, metavar="FILE.parquet",
                   help="write one Parquet row per image instead of printing per-file results")
    s.add_argument("--workers", type=int, default=None, metavar="N",
                   help="Ray actors, each with one loaded model (default: one per GPU, else one per CPU)")
    s.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to join (default: $RAY_ADDRESS, else start a local one)")


def resolve_card_path(model: str, weights_dir: str | Path) -> Path:
    """``--model`` value -> card path (:func:`medcnn.inference.resolve_card` decides).

    Raises:
        ValueError: no such card (the message lists the cards in ``weights_dir``).
    """
    from medcnn.inference import resolve_card

    return resolve_card(None, model, weights_dir)


def _line(e: dict[str, Any]) -> str:
    from medcnn.routing import NAMED

    notes = "".join(f"\n  warning: {w}" for w in e["warnings"])
    if not e["ok"]:
        return f"{e['file']}: ERROR {e['error']}{notes}"
    ood = e.get("ood") or {}
    reasons = "; ".join(ood.get("reasons") or [])
    model = e["model"] + (f" ({e['routed']})" if e.get("routed") not in (None, NAMED) else "")
    if ood.get("level") == "outside":
        return f"{e['file']}: NOT ANALYSED - outside what model {model} reads: {reasons}{notes}"
    caution = f"\n  caution: {reasons}" if ood.get("flagged") else ""
    if e.get("findings"):  # multi-label: every presented finding against its own operating point
        rows = "; ".join(f"{f['name']} {f['probability']:.3f} {'>=' if f['above'] else '<'} {f['threshold']:.3f}"
                         for f in e["findings"])
        return f"{e['file']}: {e['label']} ({rows}) model {model}, {e['seconds']:.3f} s{caution}{notes}"
    probs = ", ".join(f"{k} {v:.3f}" for k, v in e["probabilities"].items())
    side = ">=" if e["above_threshold"] else "<"
    return (f"{e['file']}: {e['label']} (p = {e['positive_prob']:.3f} {side} threshold "
            f"{e['threshold']:.3f}; {probs}) model {model}, {e['seconds']:.3f} s{caution}{notes}")


def _summary(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    """Print a scoring run's summary (JSON with ``--json``); exit 1 if any file failed."""
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"scored {summary['rows']} images ({summary['errors']} errors, {summary['not_analysed']} not "
              f"analysed) with {summary['workers']} worker(s) in {summary['seconds']:.1f} s: {summary['out']}")
    return 0 if summary["errors"] == 0 else 1


def _run_ray(args: argparse.Namespace, files: list[str], fixed: Path | None) -> int:
    from medcnn.distributed.ray_engine import RayUnavailableError, connect, score_with_ray

    if args.out is None:
        raise ValueError("--engine ray writes its results with --out FILE.parquet")
    try:
        # a local cluster gets this machine's CPUs (more when more workers are asked for)
        with connect(args.address, num_cpus=max(os.cpu_count() or 1, args.workers or 1)):
            summary = score_with_ray(files, args.out, model=fixed, weights_dir=args.weights_dir,
                                     device=args.device, workers=args.workers)
    except RayUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _summary(args, summary.to_dict())


def _expand_folders(files: list[str]) -> list[str]:
    """Folders replaced by the images found in them (recursively, by content); other names kept as given."""
    from medcnn.distributed.sources import expand_sources

    out: list[str] = []
    for f in files:
        out.extend(expand_sources([f]) if Path(f).is_dir() else [f])
    return out


def run(args: argparse.Namespace) -> int:
    engine = getattr(args, "engine", None)
    if engine != "ray" and (getattr(args, "workers", None) or getattr(args, "address", None)):
        raise ValueError("--workers and --address are options of --engine ray")
    files = list(args.files)
    if engine is not None or any(Path(f).is_dir() for f in files):
        from medcnn.distributed.sources import expand_sources

        files = expand_sources(files) if engine is not None else _expand_folders(files)
        if not files:
            raise ValueError("no image files in the given sources (folders are searched recursively; "
                             "images are recognised by content: DICOM, PNG, JPEG)")
    fixed = resolve_card_path(args.model, args.weights_dir) if args.model else None
    if engine == "ray":
        return _run_ray(args, files, fixed)
    from medcnn.models.head import NOT_ANALYSED
    from medcnn.scoring import Scorer

    t0 = time.perf_counter()
    # a broken --model is one error (exit 2), not one per file: load it before any file
    scorer = Scorer(fixed, weights_dir=args.weights_dir, device=args.device, batch_size=args.batch_size)
    if fixed is not None:
        scorer.predictor(fixed)
    results = []
    out = getattr(args, "out", None)
    t_first = t0
    for scored in scorer.iter_score(files):
        entry = scored.row
        results.append(entry)
        if len(results) == 1:
            t_first = time.perf_counter()
        if not args.json and out is None:
            print(_line(entry), file=sys.stdout if entry["ok"] else sys.stderr)
    if out is not None:
        from medcnn.distributed.scoring import entry_to_row, write_parquet

        write_parquet([entry_to_row(e) for e in results], out)
        t_end = time.perf_counter()
        rate = (len(results) - 1) / (t_end - t_first) if len(results) > 1 and t_end > t_first else None
        return _summary(args, {"out": str(out), "rows": len(results),
                               "errors": sum(not e["ok"] for e in results),
                               "not_analysed": sum(e["decision"] == NOT_ANALYSED for e in results),
                               "workers": 1, "seconds": round(t_end - t0, 3),
                               "images_per_s": None if rate is None else round(rate, 2)})
    if args.json:
        print(json.dumps({"results": results}))
    return 0 if all(e["ok"] for e in results) else 1
