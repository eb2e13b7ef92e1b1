"""Which chest X-ray weights read other acquisitions better? Cards compared on validation films,
a shifted copy of them, and other hospitals' films, in one run.

The configuration choice for training with acquisition augmentation (``--aug acquisition``) is made
here, on data the selection may see: the card's **validation** rows (as its training run selected
them) and a **shifted validation copy** (one seeded acquisition variant of each film,
:func:`medcnn.ood.validate.acquisition_variants`: the full family, crops and tilts included, so
part of it is held out from the in-frame training changes). ``cxr_other_sources`` (adult frontal
films of many hospitals) is a *check*, never a selection criterion: printed are the positive
output's AUC against NO_FINDING, the sensitivity on its pneumonia cases at the card's operating
point, and the score shift on its no-finding films (their median positive probability against the
validation negatives'). Test films are not read.

For each card, per finding: AUC on validation and on the shifted copy; the mean over findings; and
for every card after the first, paired-bootstrap differences against the first (resampling images).

    python benchmarks/bench_acquisition_training.py --cards weights/cxr_findings.json RUN/cxr_findings.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def _val_rows(card):
    """Validation rows, finding targets (N, C; NaN unknown) and images, as the card's run selected them."""
    from medcnn.evaluation.evaluate_findings import finding_rows
    from medcnn.io import read_image

    df, targets = finding_rows(card, [REPO / p for p in card.training["data"]], split="val")
    return targets, [read_image(Path(p).read_bytes()) for p in df["path"]]


def _scores(predictor, images) -> np.ndarray:
    labels = predictor.card.labels
    preds = [p for s in range(0, len(images), 32) for p in predictor.predict_batch(images[s:s + 32])]
    return np.array([[p.probabilities[name] for name in labels] for p in preds])


def _aucs(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    from sklearn.metrics import roc_auc_score

    out = []
    for j in range(targets.shape[1]):
        ok = ~np.isnan(targets[:, j])
        y = targets[ok, j]
        out.append(roc_auc_score(y, scores[ok, j]) if 0 < y.sum() < len(y) else np.nan)
    return np.array(out)


def _paired(targets, a, b, boot, rng, reduce=np.nanmean):
    """95% interval of reduce(AUCs of b) - reduce(AUCs of a), resampling images."""
    diffs = []
    for _ in range(boot):
        i = rng.integers(0, len(targets), len(targets))
        diffs.append(reduce(_aucs(targets[i], b[i])) - reduce(_aucs(targets[i], a[i])))
    return np.nanquantile(diffs, [0.025, 0.975])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", nargs="+", type=Path, required=True, help="card JSONs; the first is the baseline")
    ap.add_argument("--boot", type=int, default=500)
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"needs {DATA}")
        return 1
    import pandas as pd

    from medcnn.inference import Predictor
    from medcnn.ood import validate as v

    predictors = [Predictor(c, device="cpu", check=False) for c in args.cards]
    first = predictors[0].card
    for p in predictors[1:]:
        if p.card.labels != first.labels or p.card.training.get("data") != first.training.get("data"):
            raise SystemExit(f"{p.card.name}: labels or training data differ from {first.name}; not comparable")
    targets, val = _val_rows(first)
    shifted = v.acquisition_variants(val, 1, seed=2027)
    other_csv = DATA / "cxr_other_sources" / "labels.csv"
    table = pd.read_csv(other_csv)
    other = v.read_table_images(other_csv)["all"]
    if len(other) != len(table):
        raise SystemExit(f"{other_csv}: {len(table) - len(other)} unreadable films")
    y_other = (table["label"] != "NO_FINDING").to_numpy().astype(float)[:, None]
    pneumonia = table["label"].isin(["OTHER_PNEUMONIA", "COVID-19"]).to_numpy()
    pos = first.positive_label or first.labels[0]
    j = list(first.labels).index(pos)
    print(f"validation films: {len(val)}; shifted copy: {len(shifted)}; other hospitals: {len(other)} "
          f"({int(y_other.sum())} positive, {int(pneumonia.sum())} pneumonia); positive output {pos!r}")
    rows, base = [], None
    for path, pr in zip(args.cards, predictors):
        s_val, s_shift, s_other = _scores(pr, val), _scores(pr, shifted), _scores(pr, other)
        a_val, a_shift = _aucs(targets, s_val), _aucs(targets, s_shift)
        a_other = _aucs(y_other, s_other[:, [j]])[0]
        thr = pr.card.head_rule.operating_point(pos)
        neg_val = s_val[targets[:, j] == 0, j]
        print(f"\n{path}")
        print("  finding           val    shifted")
        for name, a, b in zip(first.labels, a_val, a_shift):
            print(f"  {name:<16} {a:.3f}  {b:.3f}")
        print(f"  mean             {np.nanmean(a_val):.3f}  {np.nanmean(a_shift):.3f}")
        line = (f"  other hospitals: {pos} AUC {a_other:.3f}; no-finding median {np.median(s_other[~y_other[:, 0].astype(bool), j]):.3f}"
                f" vs validation negatives {np.median(neg_val):.3f}")
        if thr is not None:
            line += f"; pneumonia sensitivity at the operating point ({thr:.3f}) {np.mean(s_other[pneumonia, j] >= thr):.3f}"
        print(line)
        if base is None:
            base = (s_val, s_shift, s_other)
            continue
        rng = np.random.default_rng(0)
        for what, t, a, b in (("val mean AUC", targets, base[0], s_val), ("shifted mean AUC", targets, base[1], s_shift),
                              (f"other hospitals {pos} AUC", y_other, base[2][:, [j]], s_other[:, [j]])):
            lo, hi = _paired(t, a, b, args.boot, rng)
            d = np.nanmean(_aucs(t, b)) - np.nanmean(_aucs(t, a))
            print(f"  vs {args.cards[0].name}: {what} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
