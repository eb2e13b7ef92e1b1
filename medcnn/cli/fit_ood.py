"""``python -m medcnn fit-ood``: fit a model's out-of-distribution gate and measure it.

Fits the gate's statistics on the model's in-distribution training images, sets its two
thresholds on the validation images, measures the flag rate on the test split, on every
``--check`` set (images the model must not read), on rotated/inverted test films and on synthetic
inputs, and on every ``--also`` set (images it should read, e.g. another hospital's films). Writes
``<card>.ood.pt`` next to the card and records everything in the card's ``ood`` section.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model card (weights/NAME.json)")
    parser.add_argument("--data", required=True, nargs="+", metavar="CSV",
                        help="the model's labels.csv file(s) (in-distribution images; several are pooled)")
    parser.add_argument("--fit-split", default="train", help="split the statistics are fitted on (default: train)")
    parser.add_argument("--val-split", default="val", help="split the thresholds are set on (default: val)")
    parser.add_argument("--test-split", default="test", help="split reported as the false-flag rate (default: test)")
    parser.add_argument("--check", action="append", default=[], metavar="CSV[@SPLIT]",
                        help="images the model must NOT read, grouped by their 'category' (else 'label') column; repeatable")
    parser.add_argument("--also", action="append", default=[], metavar="CSV[@SPLIT]",
                        help="other in-distribution images (e.g. another hospital), reported as false flags; repeatable")
    parser.add_argument("--components", type=int, default=64, help="principal directions per layer (default: 64)")
    parser.add_argument("--grid", type=int, default=3, help="average-pooling layout per layer (default: 3x3)")
    parser.add_argument("--n-transformed", type=int, default=60, help="test films per transform (default: 60)")
    parser.add_argument("--n-synthetic", type=int, default=20, help="synthetic images per kind (default: 20)")
    parser.add_argument("--variants", type=int, default=2,
                        help="acquisition variants per film for the kind question (default: 2; 0: one-question gate)")
    parser.add_argument("--kind-layers", nargs="+", default=None, metavar="LAYER",
                        help="layers the kind question uses (default: all the gate's layers)")
    parser.add_argument("--orientation-layers", nargs="*", default=None, metavar="LAYER",
                        help="layers the orientation question reads (default: the last two with --variants > 0, "
                             "else none; the flag alone: none)")
    parser.add_argument("--dry-run", action="store_true", help="measure and print, do not write the card")
    parser.add_argument("--json", action="store_true", help="print the card's ood section as JSON")


def _source(spec: str) -> tuple[Path, str | None]:
    path, _, split = spec.partition("@")
    return Path(path), (split or None)


def _group_column(csv: Path) -> str:
    import pandas as pd

    cols = pd.read_csv(csv, nrows=1).columns
    return "category" if "category" in cols else "label"


def run(args: argparse.Namespace) -> int:
    import torch

    from medcnn.models import load_model
    from medcnn.ood import OODGate
    from medcnn.ood import validate as v
    from medcnn.ood.features import FeatureExtractor, default_layers
    from medcnn.preprocess import Pipeline

    model, card = load_model(args.model, device="cpu" if not torch.cuda.is_available() else None)
    pipe = Pipeline.from_config(card.preprocessing)
    # an imported (family:name) architecture has no stage table: its gate pools the Grad-CAM layer
    layers = (card.target_layer,) if ":" in card.architecture else default_layers(card.architecture)
    extract = FeatureExtractor(model, layers, grid=args.grid)

    def feats(images):
        return v.features_of(extract, pipe, images)

    datas = [Path(d) for d in args.data]
    per_csv = {d: {split: v.read_table_images(d, split)["all"] for split in (args.fit_split, args.val_split,
                                                                            args.test_split)} for d in datas}
    fit_imgs = [img for d in datas for img in per_csv[d][args.fit_split]]
    val_imgs = [img for d in datas for img in per_csv[d][args.val_split]]
    test_imgs = [img for d in datas for img in per_csv[d][args.test_split]]
    print(f"fitting on {len(fit_imgs)} {args.fit_split} images, thresholds from {len(val_imgs)} {args.val_split} images")
    orient_layers = _orientation_layers(args, layers)
    turned: list[list] = []  # training features per orientation (films, then their variants)

    def fit_feats(images):
        if not orient_layers:
            return feats(images)
        per = v.oriented_features(extract, pipe, images)
        turned.append(per)
        return per[0]

    variants = {}
    if args.variants > 0:
        print(f"kind question: + {args.variants} acquisition variants of each film")
        val_variants = feats(v.acquisition_variants(val_imgs, 1, seed=1))
        variants = {"train_variants": fit_feats(v.acquisition_variants(fit_imgs, args.variants, seed=0)),
                    "val_variants": val_variants}
    val_feats = feats(val_imgs)
    gate = OODGate.fit(fit_feats(fit_imgs), val_feats, layers, args.grid, components=args.components,
                       kind_layers=args.kind_layers, **variants)
    if orient_layers:
        import numpy as np

        from medcnn.ood.orientation import OrientationCheck

        print(f"orientation question on {', '.join(orient_layers)}")
        train_turned = [[np.concatenate([t[k][i] for t in turned]) for i in range(len(layers))]
                        for k in range(len(turned[0]))]
        upright_val = ([np.concatenate([a, b]) for a, b in zip(val_feats, variants["val_variants"])]
                       if variants else val_feats)
        gate.orientation = OrientationCheck.fit(train_turned, upright_val, [layers.index(n) for n in orient_layers])

    def rates(images) -> dict[str, Any]:
        return v.flag_rates(v.verdicts_of(gate, extract, pipe, images)) if images else {"n": 0}

    measured: dict[str, Any] = {"in_distribution": {}}
    for d in datas:
        measured["in_distribution"].update({
            f"{d.parent.name} {args.val_split} (sets the thresholds)": rates(per_csv[d][args.val_split]),
            f"{d.parent.name} {args.test_split}": rates(per_csv[d][args.test_split]),
        })
        measured["in_distribution"].update(_age_bands(d, args.test_split, per_csv[d][args.test_split], rates))
    for spec in args.also:
        csv, split = _source(spec)
        for name, images in v.read_table_images(csv, split).items():
            measured["in_distribution"][f"{csv.parent.name} {split or 'all'}"] = rates(images)
    outside: dict[str, Any] = {}
    for spec in args.check:
        csv, split = _source(spec)
        for name, images in v.read_table_images(csv, split, group=_group_column(csv)).items():
            outside[f"{csv.parent.name}/{name}"] = rates(images)
    some_test = test_imgs[: args.n_transformed]
    for name in v.TRANSFORMS:
        outside[f"{args.test_split} films {name.replace('_', ' ')}"] = rates(v.transformed(some_test, name))
    for i, name in enumerate(v.SYNTHETIC):
        outside[f"synthetic {name.replace('_', ' ')}"] = rates(v.synthetic_images(name, args.n_synthetic, seed=i))
    measured["outside"] = outside

    section = {
        "method": "probabilistic-PCA Mahalanobis distance on pooled stage features (Lee et al. 2018; "
                  "Tipping & Bishop 1999), mean over stages of distance / validation median"
                  + ("; two questions: kind (fitted with acquisition variants of the training films; "
                     "may withhold) and style (the films alone; only cautions)" if args.variants else ""),
        "layers": list(layers), "grid": args.grid, "components": args.components,
        "caution_threshold": round(gate.caution, 4), "refuse_threshold": round(gate.refuse, 4),
        "kind_layers": [layers[i] for i in gate.kind_index], "variants": args.variants,
        "style_caution_threshold": None if gate.style_caution is None else round(gate.style_caution, 4),
        "orientation": None if gate.orientation is None else {
            "layers": list(orient_layers), "upright_threshold": round(gate.orientation.threshold, 4),
            "method": "multinomial logistic regression on the gate's pooled features of the training films "
                      "(and their variants) turned by 0/90/180/270 degrees and inverted; withheld below the "
                      "1st percentile of P(upright) on the validation films and their variants"},
        "fitted_on": {"data": " ".join(map(str, datas)), "split": args.fit_split, "n": len(fit_imgs),
                      "threshold_split": args.val_split, "n_threshold": len(val_imgs),
                      "note": "only in-distribution images are used to fit; every check set is unseen"},
        "measured": measured,
        "command": "python -m medcnn fit-ood " + " ".join(_argv(args)),
    }
    _print(section)
    if not args.dry_run:
        card_path = Path(card.path)
        out = card_path.with_suffix(".ood.pt")
        section["file"] = out.name
        section["sha256"] = gate.save(out)
        write_ood_section(card_path, section)
        print(f"wrote {out} and the ood section of {card_path}")
    if args.json:
        print(json.dumps(section, indent=2))
    return 0


def write_ood_section(card_path: Path, section: dict[str, Any]) -> None:
    """Replace only the card's ``ood`` key, re-reading the file right before writing (other keys,
    which someone else may have changed since the card was loaded, are kept as they are on disk)."""
    raw = json.loads(card_path.read_text())
    raw["ood"] = section
    card_path.write_text(json.dumps(raw, indent=2, sort_keys=False) + "\n")


def _age_bands(data: Path, split: str, images: list, rates) -> dict[str, Any]:
    """Children's films of the test split (when the table has an ``age`` column)."""
    import pandas as pd

    table = pd.read_csv(data)
    table = table[table.get("split") == split] if "split" in table else table
    if "age" not in table or len(table) != len(images):
        return {}
    young = [img for img, age in zip(images, table["age"]) if pd.notna(age) and float(age) < 18]
    return {f"{data.parent.name} {split}, patients under 18": rates(young)} if young else {}


def _argv(args: argparse.Namespace) -> list[str]:
    out = ["--model", str(args.model), "--data", *map(str, args.data)]
    for spec in args.check:
        out += ["--check", spec]
    for spec in args.also:
        out += ["--also", spec]
    out += ["--kind-layers", *args.kind_layers] if args.kind_layers else []
    if args.orientation_layers is not None:
        out += ["--orientation-layers", *args.orientation_layers]
    return out + ["--components", str(args.components), "--grid", str(args.grid), "--variants", str(args.variants)]


def _orientation_layers(args: argparse.Namespace, layers: tuple[str, ...]) -> list[str]:
    """The layers of the orientation question.

    Default: the last two layers for a gate fitted with acquisition variants (whose kind question
    tolerates turned films), none for a one-question gate (on the CT gate it withheld 1-6% more
    real slices: measured, not shipped, see BENCHMARKS.md); ``--orientation-layers`` with no names: none.

    Raises:
        ValueError: a named layer is not one of the gate's.
    """
    if args.orientation_layers is None:
        return list(layers[-2:]) if args.variants > 0 else []
    names = list(args.orientation_layers)
    unknown = [n for n in names if n not in layers]
    if unknown:
        raise ValueError(f"orientation layers {unknown} are not among the gate's layers {list(layers)}")
    return names


def _print(section: dict[str, Any]) -> None:
    print(f"thresholds: caution > {section['caution_threshold']:.2f}, not read > {section['refuse_threshold']:.2f}")
    for kind, rows in section["measured"].items():
        print(f"\n{'set':<56} {'n':>4} {'flagged':>8} {'not read':>9} {'kind':>7} {'style':>7}  ({kind.replace('_', ' ')})")
        for name, r in rows.items():
            if r.get("n"):
                parts = "".join(f" {100 * r[k]:>6.1f}%" if k in r else "       -" for k in ("kind_flagged", "style_flagged"))
                print(f"{name:<56} {r['n']:>4} {100 * r['flagged']:>7.1f}% {100 * r['outside']:>8.1f}%{parts}")
