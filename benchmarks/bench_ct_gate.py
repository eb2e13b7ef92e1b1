"""What the CT model does with each kind of input, through the serving path (header checks, the
orientation step and the image gate), for one or two cards in the same run.

For each set the share *analysed* (no message), *cautioned* and *withheld* (not analysed), and where
labels allow, the AUC of the COVID output and the share *right or flagged* (analysed and called as
labelled, or cautioned or withheld). Sets it should read: the held-out slices of ``sarscov2_ct`` and
of ``ct_hu`` per source (patients never trained on), the 16 TCGA patients of
``ood_samples/chest_ct_dicom``, the six full-size JPEG-lossless originals, ``covid_ct`` validation
and test (figure crops from papers: right or flagged is enough), the ``ct_hu`` test slices
without their header (the image alone), and the held-out scanner slices with another scanner's
dose (noise) or kernel (sharper, softer). Sets it must refuse: the real head, neck and abdomen CT of
``dicom_samples``, coronal and sagittal reformats built from the ``ct_hu`` test patients (with and
without their header, and exported as lung-windowed 8-bit pictures), held-out slices whose pixels
were turned by 180 degrees while their axial header was kept, held-out slices rotated by 90/180/270
degrees or with inverted grey levels (as pixels, header removed), radiographs, knee X-ray, brain
MRI, breast ultrasound. Only measurement: nothing here fits anything.

    python benchmarks/bench_ct_gate.py [--model weights/ct_covid.json] [--before PATH.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def _read(paths):
    from medcnn.io import UnsupportedImageError, read_image

    out = []
    for p in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append(read_image(p))
        except (UnsupportedImageError, OSError, RuntimeError) as e:
            print(f"  (unreadable, left out: {Path(p).name}: {type(e).__name__})")
    return out


def _table(csv: Path, **where):
    import pandas as pd

    t = pd.read_csv(csv)
    for k, v in where.items():
        t = t[t[k].isin(v if isinstance(v, list) else [v])]
    return t


def _reformats(test):
    import pydicom

    from medcnn.ood.ct_sets import reformat

    out = {"coronal": [], "sagittal": []}
    for _, rows in test[test.source == "COVID-CT-MD"].groupby("patient_id"):
        paths = [DATA / "ct_hu" / p for p in rows.path]
        z = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in paths]
        slices = _read(paths)
        for at in (0.4, 0.5, 0.6):
            out["coronal"].append(reformat(slices, z, "coronal", at))
        for at in (0.3, 0.5, 0.7):
            out["sagittal"].append(reformat(slices, z, "sagittal", at))
    return out


def _picture(image):
    """A HU slice or reformat as a lung-windowed 8-bit PNG export would carry it (no header)."""
    from medcnn.io import ImageMeta, MedImage
    from medcnn.preprocess import CT_PRESETS, apply_window

    x = np.round(apply_window(image.pixels, *CT_PRESETS["lung"]) * 255.0).astype(np.float32)
    return MedImage(x, ImageMeta(source_format="png", rows=x.shape[0], columns=x.shape[1]))


def _scanner_variations() -> dict:
    """Another scanner's dose and reconstruction kernel, in HU: name -> pixels -> pixels."""
    import cv2

    rng = np.random.default_rng(0)

    def noise(sd):
        return lambda x: (x + rng.normal(0.0, sd, x.shape)).astype(np.float32)

    def sharper(amount):
        return lambda x: (x + amount * (x - cv2.GaussianBlur(x, (0, 0), 1.0))).astype(np.float32)

    def softer(sigma):
        return lambda x: cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma)

    return {"noise 20 HU": noise(20), "noise 40 HU": noise(40), "noise 80 HU": noise(80),
            "sharper kernel x1": sharper(1.0), "sharper kernel x2": sharper(2.0),
            "softer kernel 1 px": softer(1.0), "softer kernel 2 px": softer(2.0)}


def sets() -> tuple[dict[str, tuple[list, list | None]], dict[str, list]]:
    """``(read, refuse)``: name -> (images, COVID labels or None), and name -> images."""
    from medcnn.io import MedImage
    from medcnn.ood import validate as v
    from medcnn.ood.ct_sets import without_header

    ct = DATA / "ct_hu" / "labels.csv"
    read: dict[str, tuple[list, list | None]] = {}
    sv = _table(DATA / "sarscov2_ct" / "labels.csv", split="test")
    read["sarscov2_ct test"] = (_read(DATA / "sarscov2_ct" / p for p in sv.path), list(sv.label == "COVID"))
    md = _table(ct, split="test", source="COVID-CT-MD")
    read["COVID-CT-MD test patients"] = (_read(DATA / "ct_hu" / p for p in md.path), list(md.label == "COVID"))
    tc = _table(ct, split=["val", "test"], source="TCGA")
    read["TCGA val+test patients"] = (_read(DATA / "ct_hu" / p for p in tc.path), None)
    read["TCGA ood_samples (16 other patients)"] = (_read(sorted((DATA / "ood_samples" / "chest_ct_dicom").glob("*.dcm"))), None)
    demo = _table(ct, split="demo")
    read["full-size originals (JPEG lossless)"] = (_read(DATA / "ct_hu" / p for p in demo.path), list(demo.label == "COVID"))
    for split in ("val", "test"):
        cc = _table(DATA / "covid_ct" / "labels.csv", split=split)
        read[f"covid_ct {split} (other source)"] = (_read(DATA / "covid_ct" / p for p in cc.path), list(cc.label == "COVID"))
    test_hu = read["COVID-CT-MD test patients"][0] + read["TCGA val+test patients"][0]
    read["ct_hu held-out slices, header removed"] = ([without_header(i) for i in test_hu], None)
    scanner = test_hu + read["TCGA ood_samples (16 other patients)"][0]
    for name, change in _scanner_variations().items():
        read[f"held-out scanner slices, {name}"] = ([MedImage(change(i.pixels), i.meta) for i in scanner], None)

    refuse: dict[str, list] = {}
    samples = DATA / "dicom_samples"
    refuse["CT head (dicom_samples)"] = _read([samples / "693_UNCR.dcm", samples / "693_J2KR.dcm"])
    refuse["CT abdomen (dicom_samples)"] = _read([samples / "explicit_VR-UN.dcm"])
    refuse["CT neck (dicom_samples)"] = _read([samples / "bad_sequence.dcm"])
    forms = _reformats(_table(ct, split="test"))
    for plane, images in forms.items():
        refuse[f"{plane} reformats"] = images
        refuse[f"{plane} reformats, header removed"] = [without_header(i) for i in images]
        refuse[f"{plane} reformats as 8-bit pictures"] = [_picture(i) for i in images]
    bare = [without_header(i) for i in test_hu]
    for name in ("rotated_90", "rotated_180", "inverted"):
        refuse[f"held-out slices {name.replace('_', ' ')}"] = v.transformed(bare, name)
    refuse["held-out slices rotated 270"] = [MedImage(np.ascontiguousarray(np.rot90(i.pixels, 3)), i.meta) for i in bare]
    refuse["held-out slices rotated 180, header kept"] = v.transformed(test_hu, "rotated_180")
    rsna = _table(DATA / "rsna_cxr_pneumonia" / "labels.csv", split="test").head(40)
    refuse["chest radiographs"] = _read(DATA / "rsna_cxr_pneumonia" / p for p in rsna.path)
    ood = _table(DATA / "ood_samples" / "labels.csv")
    for cat in ("knee_xray", "brain_mri", "breast_ultrasound"):
        refuse[cat] = _read(DATA / "ood_samples" / p for p in ood[ood.category == cat].path.head(40))
    return read, refuse


def judge(predictor, images: list) -> list[tuple[str, float, bool]]:
    """Each image's outcome (``ok`` / ``unusual`` / ``outside`` / ``refused: <error>``) with its
    COVID probability and whether the model calls it COVID."""
    out = []
    for img in images:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = predictor.predict(img, keep_steps=False)
            out.append((p.ood.level, float(p.positive_prob), bool(p.above_threshold)))
        except ValueError as e:  # the modality check refuses outright
            out.append((f"refused: {type(e).__name__}", float("nan"), False))
    return out


def _shares(outcomes) -> dict[str, float]:
    n = max(len(outcomes), 1)
    levels = [o[0] for o in outcomes]
    return {"n": len(outcomes), "analysed": round(levels.count("ok") / n, 3),
            "cautioned": round(levels.count("unusual") / n, 3),
            "withheld": round(sum(lv not in ("ok", "unusual") for lv in levels) / n, 3)}


def measure(card: str, read, refuse) -> dict[str, dict]:
    from sklearn.metrics import roc_auc_score

    from medcnn.inference import Predictor

    predictor = Predictor(card)  # one model load per card
    result = {"read": {}, "refuse": {}}
    for name, (images, labels) in read.items():
        outcomes = judge(predictor, images)
        row = _shares(outcomes)
        if labels is not None and 0 < sum(labels) < len(labels):
            row["auc_covid"] = round(float(roc_auc_score(labels, [o[1] for o in outcomes])), 3)
            kept = [(y, o[1]) for y, o in zip(labels, outcomes) if o[0] != "outside"]
            if kept and 0 < sum(y for y, _ in kept) < len(kept):
                row["auc_covid_analysed"] = round(float(roc_auc_score(*zip(*kept))), 3)
            # the other-source target: each image either right (analysed, called as labelled) or flagged
            row["right_or_flagged"] = round(float(np.mean([o[0] != "ok" or o[2] == y for y, o in zip(labels, outcomes)])), 3)
        result["read"][name] = row
    for name, images in refuse.items():
        result["refuse"][name] = _shares(judge(predictor, images))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "weights" / "ct_covid.json"))
    ap.add_argument("--before", default=None, help="another card to measure in the same run")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"{DATA} not found: this benchmark reads the shared data")
        return 2
    read, refuse = sets()
    cards = {"after": args.model, **({"before": args.before} if args.before else {})}
    results = {k: measure(c, read, refuse) for k, c in cards.items()}
    for part in ("read", "refuse"):
        print(f"\n{'should be read' if part == 'read' else 'must be refused'}:")
        for name in results["after"][part]:
            line = " | ".join(f"{k}: " + ", ".join(f"{m} {v}" for m, v in r[part][name].items() if m != "n")
                              for k, r in results.items())
            print(f"  {name} (n={results['after'][part][name]['n']}): {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
