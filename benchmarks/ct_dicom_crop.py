"""Benchmark: does the CT pipeline bring a scanner's DICOM slice to what the CT model was trained on?

Old: the shipped card's pipeline (``weights/ct_covid.json`` ``preprocessing``): file window
     (else lung preset), pad to square, resize. New: ``default_config("CT", size)``: lung preset
     even where the file has a window, ``body_crop``, pad, resize. Window only: the new config
     without ``body_crop``, to tell the two changes apart.
Files: the 16 real chest CT slices in Hounsfield units (ood_samples/chest_ct_dicom, TCGA via
TCIA) and pydicom's CT files (dicom_samples, label CT: head, abdomen, neck, an enhanced
multi-frame), both through both pipelines; training reference: every sarscov2_ct train JPEG
through the new pipeline (body_crop is close to the identity there; the old pipeline's numbers
are printed too).

Printed per file: body-area fraction of the model input (the share of the resized image that
:func:`medcnn.preprocess.body.body_mask` finds to be body, the same detector for every image)
before (old) and after (new); the grey-air fraction (display values 0.18-0.27, air in the lung
window; the training slices are black outside the body) for window only and new; the input
tensor's mean and std (old, window only, new); the ``body_crop`` note; the step's median time.
Summary: medians, and the distance of the average tensor mean from the training mean in units
of the training images' spread.

Usage:
    python benchmarks/ct_dicom_crop.py [--size 384] [--train-every 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("MEDCNN_SHARED_DATA", REPO.parent / "shared" / "data"))
HU_DIR = DATA / "ood_samples" / "chest_ct_dicom"
PYDICOM_CT = ["693_UNCR.dcm", "693_UNCI.dcm", "693_J2KR.dcm", "explicit_VR-UN.dcm", "eCT_Supplemental.dcm",
              "bad_sequence.dcm"]
CARD = REPO / "weights" / "ct_covid.json"
#: display values of air (about -1080..-950 HU) in the lung window -600/1500; training slices are black there
AIR_BAND = (0.18, 0.27)


def _stats(pipe, image) -> dict:
    """Body fraction of the model input, tensor mean / std, and the body_crop step's params."""
    from medcnn.preprocess.body import body_mask

    res = pipe(image)
    mask, _ = body_mask(res.display)
    body = next((s.params for s in res.steps if s.name == "body_crop"), {})
    t = res.tensor
    air = float(np.mean((res.display > AIR_BAND[0]) & (res.display < AIR_BAND[1])))
    return {"body": 0.0 if mask is None else float(np.count_nonzero(mask)) / mask.size, "air": air,
            "mean": float(t.mean()), "std": float(t.std()), "note": body.get("note", ""),
            "to": body.get("to")}


def _step_ms(pipe, image, repeats: int = 50) -> float:
    """Median milliseconds of the body_crop step alone on this image's windowed input."""
    res = pipe(image)
    names = [s.name for s in res.steps]
    if "body_crop" not in names:
        return float("nan")
    i = names.index("body_crop")
    x, step = res.steps[i - 1].image, pipe.steps[i]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step.apply(x, image.meta)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="model input size (the shipped CT card: 384)")
    parser.add_argument("--train-every", type=int, default=1, help="use every n-th training JPEG")
    args = parser.parse_args(argv)
    if not HU_DIR.is_dir():
        print(f"error: {HU_DIR} not found (../shared/data is needed)", file=sys.stderr)
        return 2
    import cv2
    import pandas as pd
    import torch

    from medcnn.io import read_image
    from medcnn.preprocess import Pipeline, default_config

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    old = Pipeline.from_config(json.loads(CARD.read_text())["preprocessing"])
    new = Pipeline.from_config(default_config("CT", args.size))
    cfg = default_config("CT", args.size)
    win = Pipeline.from_config({"steps": [s for s in cfg["steps"] if s["name"] != "body_crop"]})
    labels = pd.read_csv(DATA / "sarscov2_ct" / "labels.csv")
    train = [DATA / "sarscov2_ct" / p for p in labels.loc[labels["split"] == "train", "path"]][::args.train_every]
    ref = {name: [_stats(pipe, read_image(p)) for p in train] for name, pipe in (("old", old), ("new", new))}
    tr_mean = np.array([r["mean"] for r in ref["new"]])
    tr_std = np.array([r["std"] for r in ref["new"]])
    print(f"CT body crop: model input {args.size} x {args.size}, 1 torch/OpenCV thread, "
          f"os.getloadavg()={tuple(round(v, 1) for v in os.getloadavg())}")
    for name in ("old", "new"):
        m, s = np.array([r["mean"] for r in ref[name]]), np.array([r["std"] for r in ref[name]])
        b = np.array([r["body"] for r in ref[name]])
        air = np.median([r["air"] for r in ref[name]])
        print(f"training reference ({name} pipeline, {len(train)} sarscov2_ct train JPEGs): body fraction "
              f"median {np.median(b):.3f}, grey air median {air:.3f}; tensor mean {m.mean():+.3f} "
              f"(sd {m.std():.3f} over images, p5 {np.percentile(m, 5):+.3f}, p95 {np.percentile(m, 95):+.3f}), "
              f"std {s.mean():.3f} (sd {s.std():.3f})")
    crops = [r["to"][0] * r["to"][1] for r in ref["new"]]
    areas = [read_image(p).pixels.size for p in train]
    frac = np.array(crops) / np.array(areas)
    print(f"body_crop on training JPEGs: crop area / image area median {np.median(frac):.3f}, "
          f"min {frac.min():.3f}; notes: {sum(bool(r['note']) for r in ref['new'])}")
    files = [(p.name, p) for p in sorted(HU_DIR.glob("*.dcm"))]
    files += [(n, DATA / "dicom_samples" / n) for n in PYDICOM_CT]
    print(f"\n{'file':34s} {'body old':>8s} {'new':>6s} {'air win':>7s} {'new':>6s} {'mean old':>9s} "
          f"{'win':>7s} {'new':>7s} {'std old':>8s} {'win':>6s} {'new':>6s} {'ms':>5s}  note")
    rows = []
    for name, path in files:
        try:
            image = read_image(path)
        except Exception as e:  # a file the installed decoders cannot read: say so, go on
            print(f"{name:34s} not decoded: {type(e).__name__}: {str(e)[:60]}")
            continue
        a, w, b = _stats(old, image), _stats(win, image), _stats(new, image)
        ms = _step_ms(new, image)
        rows.append((name, a, w, b))
        print(f"{name:34s} {a['body']:8.3f} {b['body']:6.3f} {w['air']:7.3f} {b['air']:6.3f} "
              f"{a['mean']:+9.3f} {w['mean']:+7.3f} "
              f"{b['mean']:+7.3f} {a['std']:8.3f} {w['std']:6.3f} {b['std']:6.3f} {ms:5.2f}  {b['note']}")
    for group, keep in (("16 HU chest slices", lambda n: n.startswith("ID_")),
                        ("pydicom CT files", lambda n: not n.startswith("ID_"))):
        sel = [r[1:] for r in rows if keep(r[0])]
        if not sel:
            continue
        med = {k: [statistics.median(r[i][k] for r in sel) for i in range(3)]
               for k in ("body", "air", "mean", "std")}
        dist = [abs(statistics.mean(r[i]["mean"] for r in sel) - tr_mean.mean()) / tr_mean.std() for i in range(3)]
        print(f"\n{group} (n={len(sel)}), medians old / window only / new: body fraction "
              f"{med['body'][0]:.3f} / {med['body'][1]:.3f} / {med['body'][2]:.3f} (new / old "
              f"{med['body'][2] / med['body'][0]:.2f}; training {np.median([r['body'] for r in ref['new']]):.3f})")
        print(f"  grey air (window only / new): {med['air'][1]:.3f} / {med['air'][2]:.3f} "
              f"(training {np.median([r['air'] for r in ref['new']]):.3f})")
        print(f"  tensor mean {med['mean'][0]:+.3f} / {med['mean'][1]:+.3f} / {med['mean'][2]:+.3f} "
              f"(training {tr_mean.mean():+.3f}); std {med['std'][0]:.3f} / {med['std'][1]:.3f} / "
              f"{med['std'][2]:.3f} (training {tr_std.mean():.3f}, new / training "
              f"{med['std'][2] / tr_std.mean():.2f})")
        print(f"  |average tensor mean - training mean| / training sd: {dist[0]:.2f} / {dist[1]:.2f} / "
              f"{dist[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
