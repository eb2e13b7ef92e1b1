"""``python -m medcnn train``: train a model (or cross-validate) from labels.csv files."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medcnn.training.config import TrainConfig

# lightweight at import time: torch and the training code load in run()
_OPTIMIZERS = ("adamw", "adam", "sgd")
_SCHEDULES = ("fixed", "exponential", "inverse_time", "cosine", "onecycle", "warm_restarts")
_IMBALANCE = ("none", "class_weight", "focal", "oversample")
_AUG = ("rotate", "scale", "translate", "brightness", "contrast", "gamma", "noise", "blur", "acquisition")
_AUG_PRESETS = {
    "none": {},
    "light": {"rotate": 5, "scale": 0.05, "translate": 0.03, "brightness": 0.05, "contrast": 0.05, "gamma": 0.05},
    "medium": {"rotate": 10, "scale": 0.1, "translate": 0.05, "brightness": 0.1, "contrast": 0.1,
               "gamma": 0.1, "noise": 0.01, "blur": 0.5},
    # medium plus another hospital's look on half the films (the gate's in-frame acquisition changes)
    "acquisition": {"rotate": 10, "scale": 0.1, "translate": 0.05, "brightness": 0.1, "contrast": 0.1,
                    "gamma": 0.1, "noise": 0.01, "blur": 0.5, "acquisition": 0.5},
}


def _csv_list(s: str) -> list[str]:
    items = [x.strip() for x in s.split(",") if x.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _relabel(s: str) -> tuple[str, str]:
    old, sep, new = s.partition("=")
    if not sep or not old or not new:
        raise argparse.ArgumentTypeError(f"expected OLD=NEW, got {s!r}")
    return old, new


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``python -m medcnn train``, in groups (data, model and optimisation, augmentation, output)."""
    d = p.add_argument_group("data")
    d.add_argument("--data", nargs="+", required=True, metavar="CSV",
                   help="labels.csv file(s) (path,label,split[,patient_id|group_id]) or class-folder roots")
    d.add_argument("--classes", type=_csv_list, help="labels to train on, in logit order, e.g. NORMAL,PNEUMONIA")
    d.add_argument("--positive", help="positive label (AUC, threshold); default: last class")
    d.add_argument("--train-relabel", type=_relabel, action="append", default=[], metavar="OLD=NEW",
                   help="in TRAIN rows only, relabel OLD as NEW (e.g. OTHER=NORMAL to use OTHER as negatives)")
    d.add_argument("--findings", type=_csv_list, metavar="NAME[=COLUMN],...",
                   help="train a multi-label model (one sigmoid output per finding) instead of --classes: NAME "
                        "is present when listed in --findings-column, NAME=COLUMN reads a 0/1 column; empty "
                        "labels are unknown and left out of the loss")
    d.add_argument("--findings-column", default="finding_labels_v2020",
                   help="'|'-separated findings list column (default finding_labels_v2020)")
    d.add_argument("--dedupe-by", type=_csv_list, default=[], metavar="COLUMN,...",
                   help="drop rows showing an image already listed, keyed by the file name in the first "
                        "non-empty COLUMN (list the CSVs in order of preference)")
    d.add_argument("--exclude", action="append", default=[], metavar="COL=VALUE[&COL=VALUE]",
                   help="drop rows matching (every split), e.g. 'source=nih_cxr_pneumonia&label=NORMAL'")
    d.add_argument("--task", choices=("CXR", "CT"), default="CXR", help="modality family (default CXR)")
    d.add_argument("--size", type=int, default=256, help="input size in pixels (square; default 256)")
    d.add_argument("--preprocess-json", type=Path, help="custom pipeline config JSON (overrides --task/--size)")
    d.add_argument("--max-train", type=int, help="use at most N training images (debugging)")
    d.add_argument("--val-fraction", type=float, default=0.2,
                   help="grouped val fraction held out of train when the CSV has no val split")

    m = p.add_argument_group("model and optimisation")
    m.add_argument("--arch", default="smallresnet", help="architecture (see medcnn.models.MODELS; default smallresnet)")
    m.add_argument("--init", type=Path, metavar="WEIGHTS.pt",
                   help="start from another checkpoint's weights (tensors of matching name and shape; a head "
                        "of another size starts fresh)")
    m.add_argument("--head-bias", type=float, metavar="VALUE",
                   help="fix the final layer's bias at VALUE (e.g. -6) and do not train it: every output above "
                        "its operating point then rests on positive evidence, so its Grad-CAM map is never empty")
    m.add_argument("--nonneg-head", action="store_true",
                   help="keep the final layer's weights >= 0 (projected after every step): a score can only be "
                        "raised by image features, so a film's Grad-CAM map is empty only when its score is at "
                        "its floor, and never on a film above an operating point set above that floor")
    m.add_argument("--epochs", type=int, default=30)
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--optimizer", choices=_OPTIMIZERS, default="adamw")
    m.add_argument("--lr", type=float, default=1e-3)
    m.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (Nesterov)")
    m.add_argument("--weight-decay", type=float, default=1e-4, help="L2 regularisation")
    m.add_argument("--schedule", choices=_SCHEDULES, default="cosine")
    m.add_argument("--lr-decay", type=float,
                   help="exponential: factor per epoch (default 0.9); inverse_time: k in 1/(1+k*epoch) (default 0.1)")
    m.add_argument("--restart-epochs", type=float, default=5.0, help="warm_restarts period in epochs")
    m.add_argument("--warmup-epochs", type=float, default=0.0, help="linear LR warm-up")
    m.add_argument("--imbalance", choices=_IMBALANCE, default="none")
    m.add_argument("--focal-gamma", type=float, default=2.0)
    m.add_argument("--balance-by", metavar="COLUMN",
                   help="weighted sampling: every (label, COLUMN value) cell equally likely (e.g. view_position)")
    m.add_argument("--box-column", metavar="COLUMN",
                   help="supervise WHERE the finding is with radiologists' boxes in COLUMN ('x y w h;...' in "
                        "--box-ref-size pixel coordinates, e.g. rsna_boxes_1024): an auxiliary mask loss on the "
                        "Grad-CAM layer during training only (see medcnn.training.boxsup)")
    m.add_argument("--box-weight", type=float, default=1.0, help="weight of the box loss (default 1.0)")
    m.add_argument("--box-mode", choices=("mask", "cam", "cam_positive", "cam_difference"), default="mask",
                   help="mask: auxiliary mask head on the layer's features; cam: train the positive class "
                        "activation map to match the boxes (directly shapes Grad-CAM); cam_positive: the same, "
                        "with the map required to be positive inside the boxes (so Grad-CAM is not empty on "
                        "them); cam_difference: the same "
                        "for the map of the positive minus the other logit (what the app explains)")
    m.add_argument("--box-ref-size", type=float, default=1024, help="side of the box coordinate grid (default 1024)")
    m.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs (0: off)")
    m.add_argument("--monitor", choices=("auc", "loss", "min_group_auc", "last"), default="auc",
                   help="early-stopping criterion on val; min_group_auc = worst AUC over --val-by groups; last = "
                        "keep the final epoch (an epoch count chosen by cross-validation; use with --patience 0)")
    m.add_argument("--seed", type=int, default=0)

    a = p.add_argument_group("augmentation (in [0,1] display space; all off by default)")
    a.add_argument("--aug", choices=tuple(_AUG_PRESETS), default="none",
                   help="preset; individual --aug-* flags override it")
    a.add_argument("--aug-rotate", type=float, help="max rotation, degrees")
    a.add_argument("--aug-scale", type=float, help="max relative zoom")
    a.add_argument("--aug-translate", type=float, help="max shift, fraction of the side")
    a.add_argument("--aug-hflip", action="store_true", help="random left-right flips (off: chest anatomy is lateralised)")
    a.add_argument("--aug-brightness", type=float)
    a.add_argument("--aug-contrast", type=float)
    a.add_argument("--aug-gamma", type=float, help="max |log gamma|")
    a.add_argument("--aug-noise", type=float, help="max Gaussian noise sd")
    a.add_argument("--aug-blur", type=float, help="max Gaussian blur sigma, pixels")
    a.add_argument("--aug-acquisition", type=float,
                   help="share of images (0..1) given another scanner's look: exposure, equalisation, "
                        "noise, blur, resolution, JPEG, collimation borders, burned-in text")

    o = p.add_argument_group("output and run")
    o.add_argument("--out", type=Path, help="checkpoint path weights/NAME.pt (writes NAME.pt + NAME.json)")
    o.add_argument("--save-state", action="store_true", help="also write NAME.state.pt every epoch (resumable)")
    o.add_argument("--resume", type=Path, help="resume from NAME.state.pt (or initialise from a weights .pt)")
    o.add_argument("--folds", type=int, default=0, help="K-fold cross-validation over train+val (no checkpoint)")
    o.add_argument("--json-out", type=Path, help="write the cross-validation summary (or training result) JSON")
    o.add_argument("--val-by", metavar="COLUMN", help="also report val AUC per value of COLUMN (e.g. view_position)")
    o.add_argument("--no-calibrate", action="store_true", help="keep temperature 1 and threshold 0.5")
    o.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for val CIs in the card")
    o.add_argument("--threads", type=int, help="torch CPU threads")
    o.add_argument("--device", help="cpu | cuda (default: MEDCNN_DEVICE or auto)")
    o.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="memory format (auto: on for CUDA and, on CPU, for smallresnet/tinyresnet/simplecnn)")
    o.add_argument("--quiet", action="store_true", help="no progress bars")


def _config(args: argparse.Namespace) -> TrainConfig:
    """The run's :class:`TrainConfig` from the parsed options (augmentation preset + overrides).

    Raises:
        ValueError: an unreadable ``--preprocess-json``, or neither ``--out`` nor ``--folds``.
    """
    from medcnn.training.config import TrainConfig

    aug = dict(_AUG_PRESETS[args.aug])
    for k in _AUG:
        v = getattr(args, f"aug_{k}")
        if v is not None:
            aug[k] = v
    if args.aug_hflip:
        aug["hflip"] = True
    preprocess = None
    if args.preprocess_json:
        try:
            preprocess = json.loads(args.preprocess_json.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read --preprocess-json {args.preprocess_json}: {e}") from None
        preprocess = preprocess.get("preprocessing", preprocess)  # a model card is accepted too
    if args.folds == 0 and args.out is None:
        raise ValueError("--out weights/NAME.pt is required (or use --folds K for cross-validation)")
    return TrainConfig(
        data=[str(x) for x in args.data], classes=args.classes, positive=args.positive, arch=args.arch,
        task=args.task, size=args.size, preprocess=preprocess, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        schedule=args.schedule, lr_decay=args.lr_decay, restart_epochs=args.restart_epochs,
        warmup_epochs=args.warmup_epochs, imbalance=args.imbalance, focal_gamma=args.focal_gamma,
        balance_by=args.balance_by, box_column=args.box_column, box_weight=args.box_weight, box_mode=args.box_mode,
        box_ref_size=args.box_ref_size, augment=aug, train_relabel=dict(args.train_relabel),
        patience=args.patience, monitor=args.monitor, seed=args.seed,
        out=str(args.out) if args.out else None, resume=str(args.resume) if args.resume else None,
        save_state=args.save_state, folds=args.folds, val_by=args.val_by, val_fraction=args.val_fraction,
        threads=args.threads, max_train=args.max_train, device=args.device,
        channels_last=args.channels_last,
        calibrate=not args.no_calibrate, progress=not args.quiet, n_boot=args.n_boot,
        command=_command_line(args), findings=args.findings, findings_column=args.findings_column,
        dedupe_by=list(args.dedupe_by), exclude=list(args.exclude), init=str(args.init) if args.init else None,
        head_bias=args.head_bias, nonneg_head=args.nonneg_head,
    )


def _command_line(args: argparse.Namespace) -> str:
    """Reproducible ``python -m medcnn train ...`` line from the parsed options (defaults omitted)."""
    import shlex

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    parts = ["python", "-m", "medcnn", "train"]
    for act in parser._actions:  # argparse has no public accessor for the declared options
        if not act.option_strings:
            continue
        v = getattr(args, act.dest, None)
        if v is None or v is False or act.dest in ("quiet",):
            continue
        if act.dest == "findings_column" and not args.findings:  # only read for multi-label runs
            continue
        opt = act.option_strings[-1]
        if isinstance(act, argparse._StoreTrueAction):
            parts.append(opt)
        elif act.dest == "train_relabel":
            for old, new in v:
                parts += [opt, f"{old}={new}"]
        elif act.dest in ("classes", "findings", "dedupe_by"):
            if v:
                parts += [opt, ",".join(v)]
        elif act.dest == "exclude":
            for rule in v:
                parts += [opt, rule]
        elif isinstance(v, list):
            parts += [opt, *map(str, v)]
        else:
            parts += [opt, str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _print_folds(result: dict[str, Any]) -> None:
    rows = result["folds"]
    keys = [k for k in rows[0] if k not in ("fold", "n_train", "n_val") and
            isinstance(rows[0][k], (int, float, type(None)))]
    keys = [k for k in keys if k in result["summary"]]
    print("fold  " + "  ".join(f"{k:>14s}" for k in keys))
    for r in rows:
        print(f"{r['fold']:>4d}  " + "  ".join(f"{_fmt(r.get(k)):>14s}" for k in keys))
    s = result["summary"]
    print("mean  " + "  ".join(f"{_fmt(s[k]['mean']):>14s}" for k in keys))
    print("sd    " + "  ".join(f"{_fmt(s[k]['sd']):>14s}" for k in keys))


def run(args: argparse.Namespace) -> int:
    """Train one model (or cross-validate with ``--folds``) and print the validation summary.

    Under ``torchrun`` every process trains; rank 0 alone prints the summary and writes ``--json-out``.
    """
    cfg = _config(args)
    from medcnn.distributed.ddp import launched_world
    from medcnn.training import loop as tr

    if cfg.folds:
        result = tr.cross_validate(cfg)
        if not launched_world().is_main:  # under torchrun rank 0 alone reports the run
            return 0
        _print_folds(result)
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            args.json_out.write_text(json.dumps(result, indent=2, default=str) + "\n")
            print(f"wrote {args.json_out}", file=sys.stderr)
        return 0
    res = tr.train(cfg)
    if not launched_world().is_main:  # every rank holds the same model; rank 0 alone reports it
        return 0
    val = res.card.metrics.get("val", {})
    if res.card.head_rule.per_finding:
        print(f"best epoch {res.best_epoch}: mean val AUC over findings {_fmt(val.get('mean_auc'))}")
        for name, r in val.get("findings", {}).items():
            ci = r.get("auc_ci") or [None, None]
            print(f"  {name:24s} AUC {_fmt(r['auc'])} (95% CI {_fmt(ci[0])}-{_fmt(ci[1])}), "
                  f"{r['n_pos']} positives, threshold {_fmt(r['threshold'])}")
    else:
        _print_binary(res, val, cfg)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({"card": str(res.card_path), "best_epoch": res.best_epoch,
                                             "val": val, "history": res.history}, indent=2, default=str) + "\n")
    return 0


def _print_binary(res: Any, val: dict[str, Any], cfg: TrainConfig) -> None:
    line = f"best epoch {res.best_epoch}: val AUC {_fmt(val.get('auc'))}"
    if val.get("auc_ci"):
        line += f" (95% CI {_fmt(val['auc_ci'][0])}-{_fmt(val['auc_ci'][1])})"
    if cfg.val_by and f"by_{cfg.val_by}" in val:
        line += " | " + ", ".join(f"{k} {_fmt(v.get('auc'))}" for k, v in val[f"by_{cfg.val_by}"].items())
    line += f" | T {res.card.temperature:.3f}, threshold {res.card.threshold:.3f}"
    print(line)
