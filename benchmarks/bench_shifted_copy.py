"""Does the model read another acquisition as well as its own? Test films vs a shifted copy of them.

For each chest X-ray card: the NORMAL vs pneumonia test films of its own sources (RSNA and NIH
pneumonia folders; OTHER dropped) as they are, and a *shifted copy*: one seeded acquisition variant of
each film (:mod:`medcnn.ood.augment`: exposure, contrast, equalisation, noise, blur, resolution,
JPEG, collimation, crops, small tilts, burned-in text; held out from nothing the model saw, as the
model was trained without them). Printed: the AUC of the positive output (``Lung Opacity`` /
``PNEUMONIA``) on each with 95% bootstrap CIs, their difference (paired bootstrap) and the share of
films the gate withholds or cautions. The style question's caution is set at the 97.5th percentile
of such variants of the validation films: this says how well the model reads the films inside it.
Also ``cxr_other_sources`` (other hospitals; OTHER_PNEUMONIA and COVID-19 vs NO_FINDING) as it is.

    python benchmarks/bench_shifted_copy.py [--cards cxr_findings cxr_pneumonia] [--boot 1000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def _films(split: str):
    import pandas as pd

    from medcnn.ood import validate as v

    images, labels = [], []
    for name in ("rsna_cxr_pneumonia", "nih_cxr_pneumonia"):
        csv = DATA / name / "labels.csv"
        table = pd.read_csv(csv)
        table = table[table["split"] == split]
        imgs = v.read_table_images(csv, split)["all"]
        keep = table["label"].isin(["NORMAL", "PNEUMONIA"]).to_numpy()
        images += [img for img, k in zip(imgs, keep) if k]
        labels += list((table["label"][keep] == "PNEUMONIA").astype(int))
    return images, np.array(labels)


def _auc_ci(y, s, boot, rng):
    from sklearn.metrics import roc_auc_score

    stats = []
    for _ in range(boot):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            stats.append(roc_auc_score(y[i], s[i]))
    return roc_auc_score(y, s), np.quantile(stats, [0.025, 0.975])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cards", nargs="+", default=["cxr_findings", "cxr_pneumonia"])
    ap.add_argument("--boot", type=int, default=1000)
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"needs {DATA}")
        return 1
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from medcnn.inference import Predictor
    from medcnn.ood import validate as v

    films, y = _films("test")
    shifted = v.acquisition_variants(films, 1, seed=2026)
    other_csv = DATA / "cxr_other_sources" / "labels.csv"
    other_table = pd.read_csv(other_csv)
    other = v.read_table_images(other_csv)["all"]
    y_other = (other_table["label"] != "NO_FINDING").astype(int).to_numpy()
    print(f"test films: {len(films)} ({y.sum()} pneumonia); other hospitals: {len(other)} ({y_other.sum()} positive)")
    for name in args.cards:
        predictor = Predictor(REPO / "weights" / f"{name}.json", device="cpu", check=False)
        positive = predictor.card.positive_label

        def run(images):
            preds = [p for s in range(0, len(images), 32) for p in predictor.predict_batch(images[s:s + 32])]
            return (np.array([p.probabilities[positive] for p in preds]),
                    np.mean([p.ood.withheld for p in preds]), np.mean([p.ood.flagged for p in preds]))

        rng = np.random.default_rng(0)
        (s0, w0, f0), (s1, w1, f1) = run(films), run(shifted)
        a0, c0 = _auc_ci(y, s0, args.boot, rng)
        a1, c1 = _auc_ci(y, s1, args.boot, rng)
        diffs = []
        for _ in range(args.boot):
            i = rng.integers(0, len(y), len(y))
            if 0 < y[i].sum() < len(i):
                diffs.append(roc_auc_score(y[i], s1[i]) - roc_auc_score(y[i], s0[i]))
        lo, hi = np.quantile(diffs, [0.025, 0.975])
        so, wo, fo = run(other)
        ao, co = _auc_ci(y_other, so, args.boot, rng)
        print(f"\n{name} ({positive})")
        print(f"  test films     AUC {a0:.3f} [{c0[0]:.3f}, {c0[1]:.3f}]  withheld {100 * w0:.1f}%  flagged {100 * f0:.1f}%")
        print(f"  shifted copy   AUC {a1:.3f} [{c1[0]:.3f}, {c1[1]:.3f}]  withheld {100 * w1:.1f}%  flagged {100 * f1:.1f}%")
        print(f"  difference     {a1 - a0:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired bootstrap)")
        print(f"  other hospitals AUC {ao:.3f} [{co[0]:.3f}, {co[1]:.3f}] (positive vs NO_FINDING, n={len(other)}, "
              f"{len(other) - y_other.sum()} negatives)  withheld {100 * wo:.1f}%  flagged {100 * fo:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
