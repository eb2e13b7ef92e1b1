"""Empty Grad-CAM maps on called films, what would remove them, and the pneumonia question per model.

For every chest X-ray card given, on one split of the RSNA folder (films with radiologists' boxes):

* the pneumonia question: AUC of the card's positive output for NORMAL vs PNEUMONIA, and with the
  OTHER films as negatives too;
* for a global-pool + linear head: the positive output's bias ``b`` and its operating point's logit
  ``t`` (an empty map on a called film needs ``t <= z <= b``), how many called films have an empty
  Grad-CAM map, the operating point at which no called film would have one (and its sensitivity /
  specificity against the card's), and the "margin map" (``b - t`` spread evenly over the map, so its
  mean is ``z - t``): its positive area and box mass on the called films against Grad-CAM's.

Validation films only unless you ask for another split: the numbers are for choosing, not reporting.

    python benchmarks/bench_called_maps.py --model weights/cxr_findings.json weights/cxr_pneumonia.json \\
        --labels ../shared/data/rsna_cxr_pneumonia/labels.csv --split val
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medcnn.inference import Predictor  # noqa: E402
from medcnn.io import read_image  # noqa: E402
from medcnn.training.boxsup import box_masks  # noqa: E402


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def _sens_spec(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    called = p >= t
    return float(called[y].mean()), float((~called[~y]).mean())


def measure(card_path: str, df: pd.DataFrame, box_column: str) -> None:
    pred = Predictor(card_path, check=False)
    model, card = pred.model.eval(), pred.card
    pos = card.positive_index
    # the displayed map of a 2-logit softmax head is that of the logit difference; of a sigmoid head, the logit
    other = 1 - pos if card.head_rule.objective == "difference" and len(card.labels) == 2 else None
    fc = model.get_submodule("fc") if hasattr(model, "fc") else None
    layer = model.get_submodule(card.target_layer)
    masks = box_masks(df, box_column, pred.pipeline)
    feats: dict[str, torch.Tensor] = {}
    hook = layer.register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))
    rows = []
    try:
        for path, mask in zip(df["path"], masks):
            res = pred.predict(read_image(path), keep_steps=False)
            with torch.no_grad():  # the prediction's own input tensor, once more for the layer's features
                model(res.pipeline_result.tensor.to(pred.device))
            row = {"p": res.positive_prob, "called": res.above_threshold, "mask": mask}
            if isinstance(fc, torch.nn.Linear):
                w = fc.weight[pos] - (fc.weight[other] if other is not None else 0)
                cam = torch.einsum("nkhw,k->nhw", feats["a"].float(), w.detach().float())[0]
                row["cam"] = F.interpolate(cam[None, None], size=mask.shape, mode="bilinear",
                                           align_corners=False)[0, 0].cpu().numpy()
            rows.append(row)
    finally:
        hook.remove()
    labels = df["label"].to_numpy()
    y = labels == "PNEUMONIA"
    p = np.array([r["p"] for r in rows])
    nv = np.isin(labels, ["NORMAL", "PNEUMONIA"])
    print(f"\n{card.name}: {len(rows)} films; NORMAL vs PNEUMONIA AUC {_auc(y[nv], p[nv]):.3f} ({nv.sum()} films), "
          f"with OTHER as negatives {_auc(y, p):.3f}")
    if "cam" not in rows[0]:
        print("  (no global-pool + linear head: the bias analysis does not apply)")
        return
    temp, thr = card.head_rule.temperatures[pos], card.head_rule.thresholds[pos]  # the positive label's
    bias = fc.bias.detach()
    b = float(bias[pos] - (bias[other] if other is not None else 0))
    t = temp * math.log(thr / (1 - thr))
    called = np.array([r["called"] for r in rows])
    empty = np.array([r["cam"].max() <= 0 for r in rows])
    print(f"  bias b {b:.2f}, operating point {thr:.3f} = logit {t:.2f} (temperature {temp:.2f}); "
          f"called {called.sum()}, of them with an empty Grad-CAM map {int((called & empty).sum())}")
    if (called & empty).any():
        t_free = float(np.nextafter(p[called & empty].max(), 1.0))
        s0, sp0 = _sens_spec(y, p, thr)
        s1, sp1 = _sens_spec(y, p, t_free)
        print(f"  operating point with no empty map among called films: {t_free:.3f}; sensitivity "
              f"{s0:.2f} -> {s1:.2f}, specificity {sp0:.2f} -> {sp1:.2f}")
    area, area_m, mass, mass_m = [], [], [], []
    for r in (r for r, c in zip(rows, called) if c):
        cam, margin = np.clip(r["cam"], 0, None), np.clip(r["cam"] + (b - t), 0, None)
        area.append((cam > 0).mean())
        area_m.append((margin > 0).mean())
        if r["mask"].any():
            if cam.sum() > 0:
                mass.append(cam[r["mask"] > 0].sum() / cam.sum())
            mass_m.append(margin[r["mask"] > 0].sum() / margin.sum())
    print(f"  called films: positive map area {np.mean(area):.2f} (Grad-CAM) vs {np.mean(area_m):.2f} (margin map); "
          f"box mass {np.mean(mass):.2f} vs {np.mean(mass_m):.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", nargs="+", required=True, help="chest X-ray model cards")
    ap.add_argument("--labels", required=True, help="RSNA labels.csv (with the box column)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--box-column", default="rsna_boxes_1024")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.labels).parent
    df = pd.read_csv(args.labels)
    df = df[df["split"] == args.split].copy()
    df["path"] = [str(root / p) for p in df["path"]]
    for card in args.model:
        measure(card, df, args.box_column)
    return 0


if __name__ == "__main__":
    sys.exit(main())
