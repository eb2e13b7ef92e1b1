"""``python -m medcnn audit``: shortcut audit of a labelled dataset, or of a model's saliency.

Dataset audit (default)::

    python -m medcnn audit --data LABELS.csv [--classes A,B] [--positive P] [--json]

trains cross-validated simple models on non-anatomical features only and warns when
they predict the label (the data is confounded). Saliency-location audit::

    python -m medcnn audit --saliency --model weights/X.json --data LABELS.csv [--split test]
        [--method gradcam] [--objective auto|difference|logit] [--write-card [--card-key KEY]]

measures where the model's saliency mass lies (outside the thorax, on the margins,
inside radiologists' boxes) against a random-map baseline, and how many maps are empty
(per label, above and below the operating point). The map explains ``--objective``
(default: the logit difference that sets the displayed probability). ``--write-card``
stores the summary (no per-image rows) in the card's ``audit`` section under
``--card-key`` (default ``saliency_<split>``, ``saliency_<split>_single_logit`` with
``--objective logit``), with the command that produced it.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from typing import Any

from medcnn.notices import collected


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
    parser.add_argument("--model", default=None, metavar="CARD",
                        help="model card (weights/<name>.json): with --saliency, the model whose maps are audited; "
                             "a multi-label card without --saliency: shortcut audit of each finding on its rows")
    parser.add_argument("--method", default="gradcam", help="saliency method (default gradcam)")
    parser.add_argument("--objective", default="auto", choices=("auto", "difference", "logit"),
                        help="what the saliency map explains (default auto: the logit difference of a "
                             "softmax head; logit: the single logit)")
    parser.add_argument("--write-card", action="store_true",
                        help="store the saliency audit summary in the card's audit section")
    parser.add_argument("--card-key", default=None, metavar="KEY",
                        help="audit key for --write-card (default saliency_<split>[_single_logit])")
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


def _command(args: argparse.Namespace, split: str) -> str:
    """The saliency-audit command line that reproduces ``args`` (stored with the card entry)."""
    parts = ["python", "-m", "medcnn", "audit", "--saliency", "--model", args.model, "--data", *args.data]
    if args.classes:
        parts += ["--classes", args.classes]
    parts += ["--split", split, "--method", args.method, "--objective", args.objective]
    if args.max_images is not None:
        parts += ["--max-images", str(args.max_images)]
    if args.seed:
        parts += ["--seed", str(args.seed)]
    return shlex.join(parts) + " --write-card" + (f" --card-key {args.card_key}" if args.card_key else "")


def _write_card(args: argparse.Namespace, report: dict[str, Any], notes: list[str]) -> str:
    """Store the report's summary under the card's ``audit[key]``; returns the key."""
    from medcnn.models.card import ModelCard

    split = report["split"] or "all"
    key = args.card_key or f"saliency_{split}" + ("_single_logit" if args.objective == "logit" else "")
    card = ModelCard.load(args.model)  # read just before writing: only audit[key] changes
    keep = ("method", "objective", "split", "n", "labels", "positive", "threshold", "metrics", "by_label",
            "empty_maps", "thorax_method", "flags")
    card.audit[key] = _clean({"command": _command(args, split), **{k: report[k] for k in keep if k in report},
                              "notes": notes})
    card.save(card.path)
    return key


def _per_finding(model: str) -> bool:
    """Whether the card's head decides per finding (its dataset audit is one per finding)."""
    from medcnn.models.card import ModelCard

    return ModelCard.load(model).head_rule.per_finding


def _run_findings(args: argparse.Namespace) -> int:
    """Dataset audit of every finding of a multi-label card, on the rows its training used."""
    from medcnn.audit.findings import audit_findings, format_findings_audit
    from medcnn.models.card import ModelCard

    with collected():  # per-fold notes; the report carries its own
        report = audit_findings(args.model, args.data, split=args.split, folds=args.folds, seed=args.seed,
                                progress=not args.json)
    if args.write_card:
        key = args.card_key or "shortcut_findings"
        card = ModelCard.load(args.model)
        parts = ["python", "-m", "medcnn", "audit", "--model", args.model, "--data", *args.data]
        if args.split:
            parts += ["--split", args.split]
        card.audit[key] = _clean({"command": shlex.join(parts) + " --write-card", **report})
        if key == "shortcut_findings" and "per_finding" in card.metrics.get("test", {}):
            from medcnn.evaluation.findings import finding_visibility

            for name, v in finding_visibility(card.metrics["test"]["per_finding"],
                                              shortcut=report["findings"]).items():
                card.findings[name].update(v)
        card.save(card.path)
        report["card_key"] = key
    if args.json:
        print(json.dumps(_clean(report), indent=2))
    else:
        print(format_findings_audit(report))
        if report.get("card_key"):
            print(f"card {args.model}: audit.{report['card_key']} written")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the dataset audit (or, with ``--saliency``, the saliency-location audit); print the report."""
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if args.max_images is not None and args.max_images < 2:
        print("error: --max-images must be >= 2", file=sys.stderr)
        return 2
    findings = bool(args.model) and not args.saliency and _per_finding(args.model)
    if args.write_card and not (args.saliency or findings):
        print("error: --write-card stores a saliency audit (add --saliency) or the per-finding audit of a "
              "multi-label --model", file=sys.stderr)
        return 2
    if findings:
        return _run_findings(args)
    with collected() as caught:
        if args.saliency:
            if not args.model:
                print("error: --saliency needs --model weights/<name>.json", file=sys.stderr)
                return 2
            from medcnn.audit.saliency import audit_saliency, format_saliency_summary

            report = audit_saliency(args.model, args.data, split=args.split or "test", classes=classes,
                                    method=args.method, objective=args.objective,
                                    max_images=args.max_images, seed=args.seed,
                                    device=args.device, progress=not args.json)
            text = format_saliency_summary
        else:
            from medcnn.audit import audit_dataset, format_summary

            report = audit_dataset(args.data, positive=args.positive, classes=classes, folds=args.folds,
                                   seed=args.seed, max_images=args.max_images, split=args.split,
                                   meta=args.meta, progress=not args.json)
            text = format_summary
    notes = sorted(caught)
    if args.write_card:
        report["card_key"] = _write_card(args, report, notes)
    if args.json:
        print(json.dumps(_clean({**report, "notes": notes}), indent=2))
    else:
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        print(text(report))
        if report.get("card_key"):
            print(f"card {args.model}: audit.{report['card_key']} written")
    return 0
