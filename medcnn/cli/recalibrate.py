"""``python -m medcnn recalibrate``: refit a model's temperature and threshold on one site's images.

Scores shift between sites and scanner versions. This command runs the model over a site's
labelled images (``labels.csv`` with ``path,label[,split][,patient_id]``, paths relative to
the CSV), refits the temperature and the Youden operating threshold
(:func:`medcnn.evaluation.site.recalibrate`), reports sensitivity / specificity at the old and
new operating point with 95 % (cluster-)bootstrap CIs and the calibration error before and
after, and writes a new card next to a byte-identical copy of the weights (checked by SHA-256).
The network is never changed. Unreadable images are skipped and counted; nothing identifying
(no file names) is printed.

Example::

    python -m medcnn recalibrate --model weights/cxr_pneumonia.json \\
        --data /data/site_a/labels.csv --group-column patient_id \\
        --out weights/cxr_pneumonia_site_a.json
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "run"]



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="NAME|PATH",
                        help="model card to recalibrate (weights/NAME.json, or a card name in weights/)")
    parser.add_argument("--data", required=True, metavar="CSV",
                        help="the site's labels.csv (path,label[,split][,patient_id]); paths relative to it")
    parser.add_argument("--out", required=True, metavar="DIR/NEWNAME.json",
                        help="new card; NEWNAME.pt (and NEWNAME.ood.pt) are copied next to it")
    parser.add_argument("--split", default=None, help="use only the rows of this split (default: every row)")
    parser.add_argument("--group-column", default=None, metavar="COLUMN",
                        help="patient column (e.g. patient_id): CIs resample whole patients and "
                             "cross-validation folds keep them together")
    parser.add_argument("--min-per-class", type=int, default=20,
                        help="fewest usable images of each class (default 20)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-validated estimate (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the folds")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: MEDCNN_DEVICE, else auto)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing card at --out")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")


def _read_site(args: argparse.Namespace, labels: list[str]) -> tuple[Any, np.ndarray | None]:
    """The site's rows (path, label) and their patient ids; unknown labels are an error."""
    from medcnn.evaluation.labels import read_labels

    with warnings.catch_warnings():  # folder warnings can name files: not printed
        warnings.simplefilter("ignore")
        df = read_labels(args.data, split=args.split, check_files=False)
    if len(df) == 0:
        raise ValueError(f"no rows in {Path(args.data).name}" + (f" with split {args.split!r}" if args.split else ""))
    counts = df["label"].value_counts()
    unknown = {k: int(v) for k, v in counts.items() if k not in labels}
    if unknown:
        listed = ", ".join(f"{k} ({v} rows)" for k, v in sorted(unknown.items()))
        raise ValueError(f"labels the model does not know: {listed}; its labels are {', '.join(labels)}. "
                         "Relabel or remove those rows")
    groups = None
    if args.group_column:
        if args.group_column not in df.columns:
            raise ValueError(f"--group-column {args.group_column!r} is not a column of {Path(args.data).name} "
                             f"(columns: {', '.join(c for c in df.columns if c not in ('source', 'group'))})")
        col = df[args.group_column]
        groups = np.where(col.isna(), [f"row {i}" for i in range(len(df))], col.astype(str)).astype(str)
    return df, groups


def _short(path: str | Path) -> str:
    """``<folder>/<file>``: a path without the machine-specific prefix."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _command(args: argparse.Namespace, model_path: Path) -> str:
    # The site's CSV is named by a placeholder: its folder or file name can name a patient or a
    # study, and the card records the data by the SHA-256 of its images instead.
    parts = ["python -m medcnn recalibrate", "--model", _short(model_path), "--data", "SITE_LABELS.csv"]
    for flag, value in (("--split", args.split), ("--group-column", args.group_column)):
        if value:
            parts += [flag, str(value)]
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


def _print_report(report: dict[str, Any], skipped: dict[str, int], n_listed: int, out: Path,
                  sha: str, group_column: str | None) -> None:
    from medcnn.evaluation.site import summary_rows

    counts = ", ".join(f"{k}: {v}" for k, v in report["counts"].items())
    n_skip = sum(skipped.values())
    print(f"site data: {n_listed} images listed, {report['n_images']} used ({counts})"
          + (f"; {n_skip} skipped" if n_skip else ""))
    for reason, n in sorted(skipped.items()):
        print(f"  skipped {n}: {reason}")
    unit = f"patients ({group_column})" if group_column else "images"
    print(f"95% bootstrap CIs over {report['n_groups']} {unit}, {report['n_boot']} resamples")
    rows = summary_rows(report)
    cols = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(r[c].ljust(w) for c, w in zip(cols, widths)))
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"wrote {out} (weights: byte-identical copy, SHA-256 {sha[:16]}...)")


def run(args: argparse.Namespace) -> int:
    if args.min_per_class < 1:
        raise ValueError("--min-per-class must be >= 1")
    if args.n_boot < 0 or args.folds < 2 or args.batch_size < 1:
        raise ValueError("--n-boot must be >= 0, --folds >= 2 and --batch-size >= 1")
    from medcnn.evaluation.site import InsufficientSiteDataError, RecalibrationError, recalibrate
    from medcnn.evaluation.site_card import file_sha256, recalibrated_card, site_data_sha256, write_recalibrated
    from medcnn.inference import Predictor, resolve_card
    from medcnn.scoring import Scorer, analysed_logits
    from medcnn.models.card import ModelCard

    model_path = resolve_card(None, args.model)
    card = ModelCard.load(model_path)
    out = _out_path(args, model_path)
    df, groups = _read_site(args, card.labels)
    counts = df["label"].value_counts()
    if min(int(counts.get(name, 0)) for name in card.labels) < args.min_per_class:  # fail before inference
        raise InsufficientSiteDataError({k: int(counts.get(k, 0)) for k in card.labels}, args.min_per_class)
    sha = file_sha256(card.weights_path)
    scorer = Scorer(Predictor(card, device=args.device), batch_size=args.batch_size)

    def progress(done: int, total: int) -> None:
        print(f"\rscored {done}/{total} images", end="" if done < total else "\n", file=sys.stderr)

    logits, kept, skipped = analysed_logits(scorer, df["path"].tolist(), progress)
    y = np.asarray([card.labels.index(v) for v in df["label"].iloc[kept]], dtype=np.int64)
    try:
        fields, report = recalibrate(card, logits, y, None if groups is None else groups[kept],
                                     args.min_per_class, n_boot=args.n_boot, seed=args.seed, folds=args.folds)
    except InsufficientSiteDataError as e:
        if not skipped:
            raise
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        raise RecalibrationError(f"{e} Of the {len(df)} listed images, {sum(skipped.values())} were "
                                 f"skipped: {why}") from None
    extra = {"split": args.split, "group_column": args.group_column, "n_listed": int(len(df))}
    used = df.iloc[kept]
    data_sha = site_data_sha256((Path(p).read_bytes() for p in used["path"]), used["label"].tolist(),
                                None if groups is None else groups[kept].tolist())
    new = recalibrated_card(card, fields, report, out.stem, weights_sha256=sha, data_sha256=data_sha,
                            command=_command(args, model_path), skipped=skipped, extra=extra)
    written = write_recalibrated(card, new, out, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"card": str(written), "skipped": skipped, "n_listed": int(len(df)),
                          "weights_sha256": sha, "report": report}))
    else:
        _print_report(report, skipped, len(df), written, sha, args.group_column)
    return 0
