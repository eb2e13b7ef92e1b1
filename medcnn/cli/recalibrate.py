"""``python -m medcnn recalibrate``: onboard a site, refitting a label's temperature and operating point
only where the site's own held-out images show it helps.

This command runs the model over a site's labelled images (``labels.csv`` with
``path,label[,split][,patient_id]``, paths relative to the CSV) and decides per component
(:func:`medcnn.evaluation.site.recalibrate`): the temperature is refitted only if grouped
cross-validation shows a lower held-out NLL (and no higher ECE), the operating point only if it
shows a higher held-out balanced accuracy without losing sensitivity beyond its CI; otherwise the
shipped value is kept. It prints the held-out figures before / after with 95 % (cluster-)bootstrap
CIs, the decision per component and why, and the images left out per class (withheld by the gate,
unreadable); it writes a new card next to a byte-identical copy of the weights (checked by SHA-256)
only when something was refitted. The network is never changed; nothing identifying (no file
names) is printed.

A softmax card's positive label is recalibrated; the CSV's labels are the card's, or any labels
with ``--positive LABEL`` (rows labelled LABEL are positives, all others negatives). A multi-label
card needs ``--finding NAME --positive LABEL``: only that finding's temperature and operating
point can change.

Examples::

    python -m medcnn recalibrate --model weights/cxr_pneumonia.json \\
        --data /data/site_a/labels.csv --group-column patient_id \\
        --out weights/cxr_pneumonia_site_a.json
    python -m medcnn recalibrate --model weights/cxr_findings.json --finding "Lung Opacity" \\
        --positive PNEUMONIA --data /data/site_a/labels.csv --out weights/cxr_findings_site_a.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medcnn.notices import collected

import numpy as np

__all__ = ["add_arguments", "run"]

#: medcnn.evaluation.site.DEFAULT_MIN_PER_CLASS, not imported here so that ``--help`` stays light
#: (tests/evaluation/test_site_cli.py checks that they agree).
DEFAULT_MIN_PER_CLASS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="NAME|PATH",
                        help="model card to recalibrate (weights/NAME.json, or a card name in weights/)")
    parser.add_argument("--data", required=True, metavar="CSV",
                        help="the site's labels.csv (path,label[,split][,patient_id]); paths relative to it")
    parser.add_argument("--out", required=True, metavar="DIR/NEWNAME.json",
                        help="new card, written only if something is refitted; NEWNAME.pt (and NEWNAME.ood.pt) "
                             "are copied next to it")
    parser.add_argument("--finding", default=None, metavar="NAME",
                        help="the label recalibrated: a finding of a multi-label card (required there); a softmax "
                             "card's positive label (the default)")
    parser.add_argument("--positive", default=None, metavar="LABEL",
                        help="rows whose label is LABEL are positives for the finding, all others negatives "
                             "(required for a multi-label card)")
    parser.add_argument("--split", default=None, help="use only the rows of this split (default: every row)")
    parser.add_argument("--group-column", default=None, metavar="COLUMN",
                        help="patient column (e.g. patient_id): CIs resample whole patients and "
                             "cross-validation folds keep them together")
    parser.add_argument("--min-per-class", type=int, default=DEFAULT_MIN_PER_CLASS,
                        help=f"fewest usable images of each class (default {DEFAULT_MIN_PER_CLASS}): fewer leave the "
                             "held-out folds too small to tell a real improvement from chance")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-validation (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the folds")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: MEDCNN_DEVICE, else auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing card at --out")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _read_site(args: argparse.Namespace, card: Any) -> tuple[Any, np.ndarray, list[str], np.ndarray | None]:
    """The site's rows, their 0/1 target for the finding, the binary class names and the patient ids."""
    from medcnn.evaluation.labels import read_labels
    from medcnn.evaluation.site import binary_names

    if card.head_rule.per_finding and not (args.finding and args.positive):  # which finding, which label
        raise ValueError(f"{card.name} is a multi-label model: say which finding the site's labels speak to and "
                         f"which label marks it, e.g. --finding {card.positive_label!r} --positive LABEL "
                         f"(its findings: {', '.join(card.labels)})")
    with collected():  # folder notes can name files: not printed
        df = read_labels(args.data, split=args.split, check_files=False)
    if len(df) == 0:
        raise ValueError(f"no rows in {Path(args.data).name}" + (f" with split {args.split!r}" if args.split else ""))
    counts = df["label"].value_counts()
    if args.positive:
        if args.positive not in counts:
            raise ValueError(f"--positive {args.positive!r} matches no row; the labels are "
                             f"{', '.join(f'{k} ({v} rows)' for k, v in sorted(counts.items()))}")
        y = (df["label"] == args.positive).to_numpy().astype(np.int64)
    else:
        unknown = {k: int(v) for k, v in counts.items() if k not in card.labels}
        if unknown:
            listed = ", ".join(f"{k} ({v} rows)" for k, v in sorted(unknown.items()))
            raise ValueError(f"labels the model does not know: {listed}; its labels are {', '.join(card.labels)}. "
                             "Relabel or remove those rows, or name the positive label with --positive")
        y = (df["label"] == (args.finding or card.positive_label)).to_numpy().astype(np.int64)
    groups = None
    if args.group_column:
        if args.group_column not in df.columns:
            raise ValueError(f"--group-column {args.group_column!r} is not a column of {Path(args.data).name} "
                             f"(columns: {', '.join(c for c in df.columns if c not in ('source', 'group'))})")
        col = df[args.group_column]
        groups = np.where(col.isna(), [f"row {i}" for i in range(len(df))], col.astype(str)).astype(str)
    return df, y, binary_names(card, args.finding, args.positive), groups


class _SiteFiles(Sequence):
    """The site's image files as scoring sources ``(path, bytes)``, each file read once, when the engine
    takes its chunk; the SHA-256 of what was read is kept for the card
    (:func:`medcnn.evaluation.site_card.site_digests_sha256`),
    so no file is read again. A file that cannot be read is handed on as its path: the engine
    records it as unreadable."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [str(p) for p in paths]
        self.sha256: list[bytes | None] = [None] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        try:
            data = Path(self.paths[i]).read_bytes()
        except OSError:
            return self.paths[i]
        self.sha256[i] = hashlib.sha256(data).digest()
        return self.paths[i], data


def _short(path: str | Path) -> str:
    """``<folder>/<file>``: a path without the machine-specific prefix."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _command(args: argparse.Namespace, model_path: Path) -> str:
    # The site's CSV is named by a placeholder: its folder or file name can name a patient or a
    # study, and the card records the data by the SHA-256 of its images instead.
    parts = ["python -m medcnn recalibrate", "--model", _short(model_path), "--data", "SITE_LABELS.csv"]
    for flag, value in (("--finding", args.finding), ("--positive", args.positive), ("--split", args.split),
                        ("--group-column", args.group_column)):
        if value:
            parts += [flag, repr(value) if " " in str(value) else str(value)]
    parts += ["--min-per-class", str(args.min_per_class)]
    for flag, value, default in (("--folds", args.folds, 5), ("--seed", args.seed, 0)):
        if value != default:
            parts += [flag, str(value)]
    parts += ["--out", Path(args.out).name]
    return " ".join(parts)


def _out_path(args: argparse.Namespace, original: Path) -> Path:
    from medcnn.models.card import card_file

    out = card_file(args.out)
    if out.resolve() == original.resolve():
        raise ValueError(f"--out {out} is the original card: choose a new name (e.g. {original.stem}_site.json)")
    if out.exists() and not args.overwrite:
        raise ValueError(f"{out} already exists: choose another --out or add --overwrite")
    return out


def _table(rows: list[dict[str, str]]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for r in rows:
        print("  ".join(r[c].ljust(w) for c, w in zip(cols, widths)).rstrip())


def _print_report(report: dict[str, Any], n_listed: int, group_column: str | None) -> None:
    from medcnn.evaluation.site import component_rows, left_out_rows, summary_rows

    counts = ", ".join(f"{k}: {v}" for k, v in report["counts"].items())
    print(f"{report['model']}, {report['finding']!r}: {n_listed} images listed, {report['n_images']} used ({counts})")
    _table(left_out_rows(report))
    held = report["held_out"]
    unit = f"patients ({group_column})" if group_column else "images"
    if held:
        print(f"\nheld-out ({held['folds']}-fold grouped cross-validation; before = shipped card, after = what is "
              f"written), 95% bootstrap CIs over {report['n_groups']} {unit}, {report['n_boot']} resamples:")
        _table(summary_rows(report))
    print()
    _table(component_rows(report))
    for note in report["notes"]:
        print(f"note: {note}")
    ins = report["in_sample"]["after"]
    print(f"(in-sample, on the images it was fitted on, optimistic: sensitivity {ins['recall']:.3f}, "
          f"specificity {ins['specificity']:.3f}, ECE {ins['ece']:.3f})")


def run(args: argparse.Namespace) -> int:
    if args.min_per_class < 1:
        raise ValueError("--min-per-class must be >= 1")
    if args.n_boot < 0 or args.folds < 2 or args.batch_size < 1:
        raise ValueError("--n-boot must be >= 0, --folds >= 2 and --batch-size >= 1")
    from medcnn.evaluation.site import InsufficientSiteDataError, recalibrate
    from medcnn.evaluation.site_card import file_sha256, recalibrated_card, site_digests_sha256, write_recalibrated
    from medcnn.evaluation.site_task import SiteTask
    from medcnn.inference import Predictor, resolve_card
    from medcnn.models.card import ModelCard
    from medcnn.scoring import Scorer, left_out_by_class

    model_path = resolve_card(None, args.model)
    card = ModelCard.load(model_path)
    SiteTask(card, args.finding)  # a label without an operating point of its own: refused before anything runs
    out = _out_path(args, model_path)
    df, y, names, groups = _read_site(args, card)
    before = {names[0]: int((y == 0).sum()), names[1]: int((y == 1).sum())}
    if min(before.values()) < args.min_per_class:  # fail before inference
        raise InsufficientSiteDataError(before, args.min_per_class)
    sha = file_sha256(card.weights_path)
    scorer = Scorer(Predictor(card, device=args.device), batch_size=args.batch_size)

    def progress(done: int, total: int) -> None:
        print(f"\rscored {done}/{total} images", end="" if done < total else "\n", file=sys.stderr)

    files = _SiteFiles(df["path"].tolist())
    logits, kept, left_out = left_out_by_class(scorer, files, [names[v] for v in y], progress)
    fields, report = recalibrate(card, logits, y[kept], None if groups is None else groups[kept],
                                 args.min_per_class, finding=args.finding, names=names, left_out=left_out,
                                 n_boot=args.n_boot, seed=args.seed, folds=args.folds)
    skipped: dict[str, int] = {}
    for reasons in left_out.values():
        for reason, n in reasons.items():
            skipped[reason] = skipped.get(reason, 0) + n
    written = None
    if fields["changed"]:
        extra = {"split": args.split, "group_column": args.group_column, "n_listed": int(len(df))}
        data_sha = site_digests_sha256((files.sha256[i] for i in kept), df["label"].iloc[kept].tolist(),
                                       None if groups is None else groups[kept].tolist())
        new = recalibrated_card(card, fields, report, out.stem, weights_sha256=sha, data_sha256=data_sha,
                                command=_command(args, model_path), skipped=skipped, extra=extra)
        written = write_recalibrated(card, new, out, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"card": None if written is None else str(written), "skipped": skipped,
                          "n_listed": int(len(df)), "weights_sha256": sha, "report": report}))
        return 0
    _print_report(report, len(df), args.group_column)
    if written is None:
        print(f"no card written: nothing was refitted, so {card.name} stays as it is")
    else:
        print(f"wrote {written} (weights: byte-identical copy, SHA-256 {sha[:16]}...)")
    return 0
