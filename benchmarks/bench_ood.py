"""Cost and reach of the out-of-distribution gate, measured against the same model without it.

1. Cost: the Analyze page's work per upload (``read_image`` of a 2048 x 2048 PNG upscaled from a
   real RSNA film + ``Predictor.predict`` + Grad-CAM + overlay), with the shipped card (gate on)
   and with the same weights under a card whose ``ood`` section is removed (gate off), in one
   run, interleaved. Prints the median of each and the ratio (target: gate adds <= 10%).
   Also the extra time of a *flagged* image (the orientation diagnosis runs only then).
2. Reach on kinds of image the gate never saw and no check set contains: every file of
   ``../shared/data/dicom_samples`` (CR extremity, MR, NM, US, CT, secondary captures), with the
   image gate alone (score, level) and with the header checks (the verdict the app shows).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_ood.py [--runs 8]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("MEDCNN_SHARED_DATA", REPO.parent / "shared" / "data"))


def upload_work(predictor, data: bytes) -> float:
    """Seconds for what the Analyze page computes for one new upload."""
    from medcnn.explain import explain
    from medcnn.io import read_image
    from medcnn.visualize import overlay

    t0 = time.perf_counter()
    img = read_image(data)
    pred = predictor.predict(img)
    if not pred.ood.withheld:
        head = predictor.card.head_rule
        target = head.default_target(pred)
        expl = explain(predictor.model, pred.pipeline_result.tensor, target, "gradcam", head=head,
                       layer=predictor.card.target_layer, pipeline=predictor.pipeline)
        overlay(pred.pipeline_result.display, expl.heatmap)
    return time.perf_counter() - t0


def ungated_copy(card_path: Path, folder: Path) -> Path:
    """The same weights under a card without the gate."""
    card = json.loads(card_path.read_text())
    card["ood"] = {}
    shutil.copy(card_path.with_suffix(".pt"), folder / card_path.with_suffix(".pt").name)
    out = folder / card_path.name
    out.write_text(json.dumps(card))
    return out


def cost(runs: int) -> None:
    import torch

    from medcnn.inference import Predictor

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    card = REPO / "weights" / "cxr_pneumonia.json"
    sources = sorted((DATA / "rsna_cxr_pneumonia" / "test").rglob("*.jpg"))[: runs + 1]
    uploads = [cv2.imencode(".png", cv2.resize(cv2.imread(str(s), cv2.IMREAD_GRAYSCALE), (2048, 2048),
                                               interpolation=cv2.INTER_CUBIC))[1].tobytes() for s in sources]
    with tempfile.TemporaryDirectory() as tmp:
        gated, plain = Predictor(card, device="cpu"), Predictor(ungated_copy(card, Path(tmp)), device="cpu")
        assert gated.gate is not None and plain.gate is None
        upload_work(gated, uploads[0]), upload_work(plain, uploads[0])  # warm-up (graph build, caches)
        t_gated, t_plain = [], []
        for data in uploads[1:]:
            t_plain.append(upload_work(plain, data))
            t_gated.append(upload_work(gated, data))
        noise = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (2048, 2048), dtype=np.uint8))[1].tobytes()
        t_flag = [upload_work(gated, noise) for _ in range(3)]
    g, p = statistics.median(t_gated), statistics.median(t_plain)
    print(f"upload work, 2048x2048 PNG, median of {len(t_gated)} (interleaved):")
    print(f"  without gate {p * 1000:7.1f} ms   with gate {g * 1000:7.1f} ms   ratio {g / p:.3f} "
          f"(target <= 1.10)")
    print(f"  a flagged image (noise; gate + orientation diagnosis, no explanation): "
          f"{statistics.median(t_flag) * 1000:.1f} ms")


def reach() -> None:
    from medcnn.inference import Predictor, resolve_card
    from medcnn.io import UnsupportedImageError, read_image

    folder = DATA / "dicom_samples"
    if not folder.is_dir():
        print(f"{folder} not found: reach on unseen kinds skipped")
        return
    predictors: dict[Path, Predictor] = {}
    print("\nunseen kinds (dicom_samples): model, image-gate level (score), verdict with header checks")
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".md", ".csv"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img = read_image(path)
                card = resolve_card(img.meta, None, REPO / "weights")
        except (UnsupportedImageError, ValueError) as e:
            print(f"  {path.name[:34]:<34} refused before any model: {str(e)[:70]}")
            continue
        if card not in predictors:
            predictors[card] = Predictor(card, device="cpu", check=False)
        pred = predictors[card].predict(img, keep_steps=False)
        image_only = predictors[card].gate.assess(pred.ood.score)
        m = img.meta
        print(f"  {path.name[:34]:<34} {m.modality:<3} {str(m.body_part or '-')[:10]:<10} {card.stem:<14} "
              f"image {image_only.level:<8} ({pred.ood.score:6.1f})  shown: {pred.ood.level}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    if not (DATA / "rsna_cxr_pneumonia").is_dir():
        raise SystemExit(f"real data not found at {DATA}")
    cost(args.runs)
    reach()


if __name__ == "__main__":
    main()
