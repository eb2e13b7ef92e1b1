"""``python -m medcnn evaluate``: metrics with 95% bootstrap CIs of a model on labelled data.

Examples::

    python -m medcnn evaluate --model weights/cxr_pneumonia.json \\
        --data ../shared/data/rsna_cxr_pneumonia/labels.csv --split test \\
        --classes NORMAL,PNEUMONIA --by view_position --json
    # finalise a card: temperature + Youden threshold fitted on val, val/test metrics stored
    python -m medcnn evaluate --model weights/ct_covid.json \\
        --data ../shared/data/sarscov2_ct/labels.csv --calibrate --write-card
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_TABLE_METRICS = ("auc", "pr_auc", "accuracy", "balanced_accuracy", "precision", "recall",
                  "specificity", "f1", "kappa", "ece", "brier")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m medcnn evaluate``."""
    parser.add_argument("--model", required=True, help="model card: weights/<name>.json")
    parser.add_argument("--data", required=True, nargs="+", metavar="CSV",
                        help="labels.csv file(s) (path,label,split[,patient_id|group_id]) or class folders")
    parser.add_argument("--split", default=None,
                        help="evaluate only this split (train/val/test); default: every row")
    parser.add_argument("--classes", default=None,
                        help="comma-separated labels to keep (e.g. NORMAL,PNEUMONIA); other rows "
                             "are dropped. Labels the model does not know are otherwise an error")
    parser.add_argument("--relabel", action="append", default=[], metavar="OLD=NEW",
                        help="count rows labelled OLD as NEW (repeatable; e.g. CAP=NonCOVID); the original "
                             "label stays in the column label_original")
    parser.add_argument("--by", default=None, metavar="COLUMN",
                        help="also report every metric per value of this column (e.g. view_position)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--plots", default=None, metavar="DIR",
                        help="write roc.png, pr.png, reliability.png, confusion.png to DIR")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: MEDCNN_DEVICE, else auto)")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit temperature and Youden threshold on the data's val split (never "
                             "test), then report val and test metrics")
    parser.add_argument("--write-card", action="store_true",
                        help="save into the card: with --calibrate the calibration and val/test "
                             "metrics; otherwise the metrics under --card-key")
    parser.add_argument("--card-key", default=None,
                        help="metrics key for --write-card without --calibrate (e.g. external_covid_ct_test)")


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _table(m: dict[str, Any], indent: str = "") -> str:
    ci = m.get("ci", {})
    lines = [f"{indent}n = {m['n']} ({m['labels'][1]}: {m['n_pos']}, {m['labels'][0]}: {m['n_neg']}), "
             f"threshold {m['threshold']:.3f}, bootstrap over {m['n_groups']} {m['bootstrap']}"]
    for k in _TABLE_METRICS:
        c = ci.get(k)
        rng = f"  [{c[0]:.3f}, {c[1]:.3f}]" if c else ""
        lines.append(f"{indent}  {k:<18} {_fmt(m.get(k)):>6}{rng}")
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    neg, pos = m["labels"]
    lines.append(f"{indent}  confusion (rows true, cols predicted {neg}/{pos}): "
                 f"{neg}: {tn} {fp} | {pos}: {fn} {tp}")
    lines += [f"{indent}  note: {n}" for n in m.get("notes", [])]
    ood = m.get("ood")
    if ood:
        lines.append(f"{indent}  out-of-distribution gate: {100 * ood['flagged']:.1f}% flagged, "
                     f"{100 * ood['outside']:.1f}% not analysed (of {ood['n']}; metrics include them)")
    return "\n".join(lines)


def _report(m: dict[str, Any], title: str) -> str:
    parts = [title, _table(m)]
    by = m.get("by")
    if by:
        for value, gm in by["groups"].items():
            parts += [f"  {by['column']} = {value}", _table(gm, "    ")]
    return "\n".join(parts)


def _classes(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _relabel(specs: list[str]) -> dict[str, str]:
    out = {}
    for spec in specs:
        old, sep, new = (part.strip() for part in spec.partition("="))
        if not (sep and old and new):
            raise ValueError(f"--relabel takes OLD=NEW (e.g. CAP=NonCOVID), got {spec!r}")
        out[old] = new
    return out


def _run_calibrate(args: argparse.Namespace) -> int:
    from medcnn.evaluation.evaluate import calibrate_card

    card = calibrate_card(args.model, args.data, by=args.by, classes=_classes(args.classes),
                          n_boot=args.n_boot, write=args.write_card, device=args.device,
                          batch_size=args.batch_size)
    out = {"model": card.name, "temperature": card.temperature, "threshold": card.threshold,
           "written": bool(args.write_card), **{k: v for k, v in card.metrics.items()
                                               if k in ("calibration", "val", "test")
                                               or k.startswith(("val_by_", "test_by_"))}}
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{card.name}: temperature {card.temperature:.3f}, threshold {card.threshold:.3f} "
          f"(fitted on val)" + ("; card saved" if args.write_card else "; card NOT saved (add --write-card)"))
    for name in ("val", "test"):
        if name in card.metrics:
            m = dict(card.metrics[name])
            if args.by and f"{name}_by_{args.by}" in card.metrics:
                m["by"] = card.metrics[f"{name}_by_{args.by}"]
            print(_report(m, f"[{name}]"))
    return 0


def _findings_report(m: dict[str, Any], title: str) -> str:
    lines = [f"{title}: mean AUC over findings {_fmt(m.get('mean_auc'))}"]
    for name, r in m["findings"].items():
        ci = r.get("auc_ci") or [None, None]
        lines.append(f"  {name:<20} AUC {_fmt(r['auc'])} [{_fmt(ci[0])}, {_fmt(ci[1])}]  "
                     f"sens {_fmt(r['sensitivity'])} spec {_fmt(r['specificity'])} at {_fmt(r['threshold'])}  "
                     f"ECE {_fmt(r['ece'])}  ({r['n_pos']} positives / {r['n_neg']} negatives)")
    return "\n".join(lines)


def _run_findings(args: argparse.Namespace) -> int:
    """A multi-label card: per-finding metrics; ``--write-card`` stores test metrics and which findings show."""
    from medcnn.evaluation.evaluate_findings import (evaluate_findings_card, finding_scores_metrics, score_findings,
                                                     stored_finding_scores)
    from medcnn.models.card import ModelCard

    if args.calibrate:
        raise ValueError("a multi-label model is calibrated per finding on val when it is trained; "
                         "--calibrate applies to single-label models")
    by = [args.by] if args.by else ["view_position", "source"]
    if args.write_card and not args.card_key:
        if args.split not in (None, "test"):
            raise ValueError("--write-card without --card-key writes the test metrics: use --split test or omit it")
        card = evaluate_findings_card(args.model, args.data, by=by, n_boot=args.n_boot, device=args.device,
                                      batch_size=args.batch_size)
        m = card.metrics["test"]
        print("test metrics and presented findings saved in the card", file=sys.stderr)
    else:
        scores = score_findings(args.model, args.data, args.split, args.device, args.batch_size, progress=True)
        m = finding_scores_metrics(scores, by=by, n_boot=args.n_boot, seed=args.seed)
        m["split"] = args.split
        m["data"] = [f"{Path(p).parent.name}/{Path(p).name}" for p in args.data]
        if args.write_card:
            card = ModelCard.load(args.model)
            card.metrics[args.card_key] = {**m, "scores": stored_finding_scores(scores)}
            card.save(card.path)
            print(f"metrics saved in the card under {args.card_key!r}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in m.items() if k != "scores"}))
    else:
        print(_findings_report(m, f"{m['model']} on {m['n']} images"))
    return 0


def run(args: argparse.Namespace) -> int:
    """Score the card on the data (or calibrate it on val with ``--calibrate``) and print the metrics."""
    if args.n_boot < 0:
        raise ValueError("--n-boot must be >= 0")
    from medcnn.inference import load_card, resolve_card

    if load_card(resolve_card(model=args.model)).head_rule.per_finding:
        return _run_findings(args)
    if args.calibrate:
        if args.split:
            raise ValueError("--calibrate uses the val split itself (and reports test): drop --split")
        return _run_calibrate(args)
    if args.write_card and not args.card_key:
        raise ValueError("--write-card without --calibrate needs --card-key NAME")

    from medcnn.evaluation.evaluate import metrics_from_scores, score_dataset, store_metrics, stored_scores

    scores = score_dataset(args.model, args.data, args.split, _classes(args.classes),
                           args.device, args.batch_size, progress=True, relabel=_relabel(args.relabel))
    m = metrics_from_scores(scores, by=args.by, n_boot=args.n_boot, seed=args.seed)
    m["split"] = args.split
    m["data"] = [f"{Path(p).parent.name}/{Path(p).name}" for p in args.data]  # no machine paths
    if args.plots:
        from medcnn.visualize.plots import save_plots

        paths = save_plots(scores.y_pos, scores.prob(), m["threshold"], m["labels"], args.plots,
                           title=scores.card.name)
        m["plots"] = {k: str(v) for k, v in paths.items()}
        print(f"plots written to {args.plots}", file=sys.stderr)
    if args.write_card:
        store_metrics(args.model, args.card_key, {**{k: v for k, v in m.items() if k != "plots"},
                                                  "scores": stored_scores(scores)})
        print(f"metrics saved in the card under {args.card_key!r}", file=sys.stderr)
    if args.json:
        print(json.dumps(m))
    else:
        print(_report(m, f"{scores.card.name} on {len(scores.y)} images"
                         + (f" (split {args.split})" if args.split else "")))
    return 0
